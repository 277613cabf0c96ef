#include "dp/nat.hpp"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

namespace calyx::dp {
namespace {

// ---- port allocator helpers ----

int proto_index(uint8_t proto) {
    switch (proto) {
        case ipproto::kTcp: return 0;
        case ipproto::kUdp: return 1;
        case ipproto::kIcmp: return 2;
        default: return -1;
    }
}
constexpr int kProtoCount = 3;

// splitmix64's finaliser: a cheap, well-mixing bijection of 64-bit values.
uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

// ---- packet helpers ----

// 16-bit words as stored (network order), read and written at any alignment.
uint16_t load16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}
void store16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// Where the fields NAT touches sit in an L4 header, and how much of it a translation needs.
struct L4Layout {
    uint8_t src_port;     // offset of the source port (ICMP echo: the identifier)
    uint8_t dst_port;     // offset of the destination port (ICMP echo: the identifier)
    uint8_t checksum;     // offset of the checksum
    uint8_t min_len;      // bytes of header a non-quoted packet must carry
    bool pseudo_header;   // the checksum covers the IPv4 addresses
    bool zero_means_none; // UDP: checksum 0 is "no checksum"
};
constexpr L4Layout kTcpLayout{0, 2, 16, sizeof(TcpHdr), true, false};
constexpr L4Layout kUdpLayout{0, 2, 6, sizeof(UdpHdr), true, true};
constexpr L4Layout kIcmpEchoLayout{4, 4, 2, sizeof(IcmpHdr), false, false};

bool is_echo(uint8_t type) { return type == icmp::kEchoRequest || type == icmp::kEchoReply; }
bool is_error(uint8_t type) {
    return type == icmp::kDestUnreachable || type == icmp::kTimeExceeded ||
           type == icmp::kParameterProblem;
}

// The layout for a translatable L4 header (`l4` has at least 1 byte for ICMP), or null.
const L4Layout* layout_of(uint8_t proto, const uint8_t* l4, size_t l4_len) {
    switch (proto) {
        case ipproto::kTcp: return &kTcpLayout;
        case ipproto::kUdp: return &kUdpLayout;
        case ipproto::kIcmp: return l4_len >= 1 && is_echo(l4[0]) ? &kIcmpEchoLayout : nullptr;
        default: return nullptr;
    }
}

// An IPv4 header at `p` with `len` bytes readable. `avail` is what belongs to the datagram
// (bounded by the total length, so Ethernet padding is never taken for payload).
NatResult ipv4_view(uint8_t* p, size_t len, Ipv4Hdr*& ip, size_t& ihl, size_t& avail) {
    ip = header_at<Ipv4Hdr>(p, len, 0);
    if (!ip || ip->version() != 4) return NatResult::malformed;
    ihl = ip->header_length();
    const size_t total = ip->total_length.host();
    if (ihl < sizeof(Ipv4Hdr) || total < ihl || len < ihl) return NatResult::malformed;
    avail = std::min(len, total);
    return NatResult::ok;
}

// Folds the change of an address into a checksum.
uint16_t adjust(uint16_t checksum, Be32 from, Be32 to) {
    return checksum_update32(checksum, from.raw, to.raw);
}

// The new value of an L4 checksum after the address `from` -> `to` (if it is in the
// pseudo-header) and the 16-bit word `old_word` -> `new_word` changed.
uint16_t l4_checksum_after(const L4Layout& l, uint16_t checksum, Be32 from, Be32 to,
                           uint16_t old_word, uint16_t new_word) {
    if (l.zero_means_none && checksum == 0) return 0;
    ChecksumDelta d;
    if (l.pseudo_header) d.change32(from.raw, to.raw);
    d.change16(old_word, new_word);
    checksum = d.apply(checksum);
    if (l.zero_means_none && checksum == 0) return 0xffff;  // RFC 768: computed zero is sent as ones
    return checksum;
}

// snat_outbound (kSource) and dnat_inbound (!kSource).
template <bool kSource>
NatResult rewrite_query(uint8_t* p, size_t len, NatEndpoint to) noexcept {
    Ipv4Hdr* ip;
    size_t ihl, avail;
    if (const NatResult r = ipv4_view(p, len, ip, ihl, avail); r != NatResult::ok) return r;
    const uint8_t proto = ip->protocol;
    if (proto != ipproto::kTcp && proto != ipproto::kUdp && proto != ipproto::kIcmp)
        return NatResult::unsupported;
    uint8_t* l4 = p + ihl;
    const size_t l4_len = avail - ihl;
    const bool has_l4 = ip->is_first_fragment();
    const L4Layout* l = nullptr;
    if (has_l4) {
        if (proto == ipproto::kIcmp && l4_len < 1) return NatResult::malformed;
        l = layout_of(proto, l4, l4_len);
        if (!l) return NatResult::unsupported;  // ICMP other than echo
        if (l4_len < l->min_len) return NatResult::malformed;
    }
    // Everything checked: from here on the packet is rewritten.
    Be32* addr = kSource ? &ip->src : &ip->dst;
    const Be32 old_addr = *addr;
    const Be32 new_addr = to.addr.to_be();
    if (l) {
        uint8_t* port = l4 + (kSource ? l->src_port : l->dst_port);
        const uint16_t old_port = load16(port);
        const uint16_t new_port = Be16::from_host(to.port).raw;
        uint8_t* sum = l4 + l->checksum;
        store16(sum, l4_checksum_after(*l, load16(sum), old_addr, new_addr, old_port, new_port));
        store16(port, new_port);
    }
    ip->checksum = adjust(ip->checksum, old_addr, new_addr);
    *addr = new_addr;
    return NatResult::ok;
}

// An ICMP error and the datagram it quotes, checked.
struct ErrorView {
    Ipv4Hdr* ip;          // outer header
    IcmpHdr* icmp;
    Ipv4Hdr* inner;       // the quoted IPv4 header
    uint8_t* inner_l4;    // the quoted L4 header
    size_t inner_l4_len;  // bytes of it in the quote (at least 8)
    const L4Layout* layout;
};

NatResult error_view(uint8_t* p, size_t len, ErrorView& v) {
    size_t ihl, avail;
    if (const NatResult r = ipv4_view(p, len, v.ip, ihl, avail); r != NatResult::ok) return r;
    if (v.ip->protocol != ipproto::kIcmp) return NatResult::unsupported;
    if (!v.ip->is_first_fragment()) return NatResult::unsupported;
    v.icmp = header_at<IcmpHdr>(p, avail, ihl);
    if (!v.icmp) return NatResult::malformed;
    if (!is_error(v.icmp->type)) return NatResult::unsupported;
    const size_t inner_at = ihl + sizeof(IcmpHdr);
    v.inner = header_at<Ipv4Hdr>(p, avail, inner_at);
    if (!v.inner || v.inner->version() != 4) return NatResult::malformed;
    const size_t inner_ihl = v.inner->header_length();
    // RFC 792: the quote holds the IPv4 header and at least the first 8 bytes after it.
    if (inner_ihl < sizeof(Ipv4Hdr) || avail - inner_at < inner_ihl + 8) return NatResult::malformed;
    v.inner_l4 = p + inner_at + inner_ihl;
    v.inner_l4_len = avail - inner_at - inner_ihl;
    // A quoted non-first fragment has no ports to translate back.
    if (!v.inner->is_first_fragment()) return NatResult::unsupported;
    v.layout = layout_of(v.inner->protocol, v.inner_l4, v.inner_l4_len);
    return v.layout ? NatResult::ok : NatResult::unsupported;
}

// translate_icmp_error_inbound (kInbound: outer destination, quoted source) and
// translate_icmp_error_outbound (!kInbound: outer source, quoted destination).
template <bool kInbound>
NatResult rewrite_error(uint8_t* p, size_t len, NatEndpoint to) noexcept {
    ErrorView v;
    if (const NatResult r = error_view(p, len, v); r != NatResult::ok) return r;
    const L4Layout& l = *v.layout;
    const Be32 new_addr = to.addr.to_be();
    const uint16_t new_port = Be16::from_host(to.port).raw;
    uint16_t icmp_sum = v.icmp->checksum;  // covers the whole quote: every change below

    // The quoted IPv4 header: address and header checksum.
    Be32* inner_addr = kInbound ? &v.inner->src : &v.inner->dst;
    const Be32 old_addr = *inner_addr;
    const uint16_t old_inner_sum = v.inner->checksum;
    const uint16_t new_inner_sum = adjust(old_inner_sum, old_addr, new_addr);
    icmp_sum = adjust(icmp_sum, old_addr, new_addr);
    icmp_sum = checksum_update16(icmp_sum, old_inner_sum, new_inner_sum);
    v.inner->checksum = new_inner_sum;
    *inner_addr = new_addr;

    // The quoted L4 header: port (or identifier), and its checksum if the quote has it.
    uint8_t* port = v.inner_l4 + (kInbound ? l.src_port : l.dst_port);
    const uint16_t old_port = load16(port);
    if (v.inner_l4_len >= size_t{l.checksum} + 2) {
        uint8_t* sum = v.inner_l4 + l.checksum;
        const uint16_t old_sum = load16(sum);
        const uint16_t new_sum = l4_checksum_after(l, old_sum, old_addr, new_addr, old_port, new_port);
        icmp_sum = checksum_update16(icmp_sum, old_sum, new_sum);
        store16(sum, new_sum);
    }
    icmp_sum = checksum_update16(icmp_sum, old_port, new_port);
    store16(port, new_port);
    v.icmp->checksum = icmp_sum;

    // The outer header (not covered by the ICMP checksum).
    Be32* outer_addr = kInbound ? &v.ip->dst : &v.ip->src;
    v.ip->checksum = adjust(v.ip->checksum, *outer_addr, new_addr);
    *outer_addr = new_addr;
    return NatResult::ok;
}

}  // namespace

// ---- NatPortAllocator ----

std::expected<NatPortAllocator, std::string> NatPortAllocator::create(NatPortRange range,
                                                                      uint32_t partitions,
                                                                      uint64_t secret) {
    if (range.first == 0 || range.first > range.last)
        return std::unexpected(fmt::format("NAT port range {}-{}: must be non-empty and not contain port 0",
                                           range.first, range.last));
    if (partitions == 0 || partitions > kMaxPartitions || !std::has_single_bit(partitions))
        return std::unexpected(fmt::format("NAT port partitions {}: must be a power of two in [1, {}]",
                                           partitions, kMaxPartitions));
    NatPortAllocator a;
    a.range_ = range;
    a.partitions_ = partitions;
    a.secret_ = secret;
    a.words_ = (range.size() + 63) / 64;
    a.lines_per_bitmap_ = (a.words_ + 7) / 8;
    a.lines_total_ = kProtoCount * partitions * a.lines_per_bitmap_;
    a.lines_ = make_table_array<Line>(a.lines_total_);  // zeroed: every port free
    a.held_ = make_table_array<std::atomic<uint16_t>>(a.quota_cells());  // zeroed: nothing held
    a.connections_ = make_table_array<std::atomic<uint32_t>>(a.map_cells());  // zeroed: nothing bound
    a.partition_hash_ = MultilinearHash<2>(secret);
    // Bits past the end of the range are marked taken once, so the search never returns them.
    const uint32_t tail = a.words_ * 64 - range.size();
    if (tail != 0) {
        const uint64_t past_end = ~uint64_t{0} << (64 - tail);
        for (int p = 0; p < kProtoCount; ++p)
            for (uint32_t part = 0; part < partitions; ++part)
                a.word(p, part, a.words_ - 1).store(past_end, std::memory_order_relaxed);
    }
    return a;
}

std::atomic<uint64_t>& NatPortAllocator::word(int proto_index, uint32_t partition,
                                              uint32_t w) const noexcept {
    const size_t line = (size_t{static_cast<uint32_t>(proto_index)} * partitions_ + partition) *
                            lines_per_bitmap_ +
                        w / 8;
    return lines_[line].word[w % 8];
}

std::atomic<uint16_t>& NatPortAllocator::held_cell(uint16_t account, int proto_index,
                                                   uint32_t partition) const noexcept {
    return held_[(size_t{account} * kProtoCount + static_cast<size_t>(proto_index)) * partitions_ + partition];
}

uint32_t NatPortAllocator::partition_of(uint8_t proto, Ipv4Addr remote,
                                        uint16_t remote_port) const noexcept {
    if (proto == ipproto::kIcmp) remote_port = 0;
    const uint32_t h = partition_hash_({remote.value, remote_port});
    return static_cast<uint32_t>((uint64_t{h} * partitions_) >> 32);
}

std::expected<uint16_t, NatRefusal> NatPortAllocator::allocate(uint8_t proto, Ipv4Addr remote,
                                                               uint16_t remote_port, uint16_t preferred,
                                                               uint64_t seed, NatQuota quota) noexcept {
    const int pi = proto_index(proto);
    if (pi < 0) return std::unexpected(NatRefusal::unsupported);
    const uint32_t part = partition_of(proto, remote, remote_port);
    std::atomic<uint16_t>* held = quota.account == kNoAccount ? nullptr : &held_cell(quota.account, pi, part);
    // Charged first and given back on refusal, like the connection count (dp/limits.cpp).
    if (held && held->fetch_add(1, std::memory_order_relaxed) >= quota.ports) {
        held->fetch_sub(1, std::memory_order_relaxed);
        return std::unexpected(NatRefusal::over_quota);
    }
    if (const auto port = take_port(pi, part, preferred, seed)) return *port;
    if (held) held->fetch_sub(1, std::memory_order_relaxed);
    return std::unexpected(NatRefusal::exhausted);
}

std::optional<uint16_t> NatPortAllocator::take_port(int pi, uint32_t part, uint16_t preferred,
                                                    uint64_t seed) noexcept {
    // Port preservation.
    if (range_.contains(preferred)) {
        const uint32_t i = preferred - range_.first;
        const uint64_t bit = uint64_t{1} << (i % 64);
        if ((word(pi, part, i / 64).fetch_or(bit, std::memory_order_acq_rel) & bit) == 0)
            return preferred;
    }

    // RFC 6056 algorithm 1: a keyed pseudo-random start, then the next free port, wrapping
    // around once. Word by word: one load finds a free bit among 64 ports.
    const uint64_t h = mix64(seed ^ mix64(secret_ ^ part));
    const auto start = static_cast<uint32_t>(((h >> 32) * range_.size()) >> 32);
    const uint32_t first_word = start / 64;
    const unsigned first_bit = start % 64;
    for (uint32_t step = 0; step <= words_; ++step) {
        // The start word is visited twice: its bits from `first_bit` up first, the bits
        // below `first_bit` last.
        uint64_t window = ~uint64_t{0};
        if (step == 0) window = ~uint64_t{0} << first_bit;
        if (step == words_) window = ~(~uint64_t{0} << first_bit);
        const uint32_t w = (first_word + step) % words_;
        std::atomic<uint64_t>& cell = word(pi, part, w);
        uint64_t seen = cell.load(std::memory_order_relaxed);
        for (uint64_t free = ~seen & window; free != 0; free = ~seen & window) {
            const uint64_t bit = free & (~free + 1);  // lowest free bit
            const uint64_t before = cell.fetch_or(bit, std::memory_order_acq_rel);
            if ((before & bit) == 0)
                return static_cast<uint16_t>(range_.first + w * 64 + std::countr_zero(bit));
            seen = before | bit;  // another thread took it first: look again
        }
    }
    return std::nullopt;
}

bool NatPortAllocator::release(uint8_t proto, Ipv4Addr remote, uint16_t remote_port,
                               uint16_t port, uint16_t account) noexcept {
    const int pi = proto_index(proto);
    if (pi < 0 || !range_.contains(port)) return false;
    const uint32_t i = port - range_.first;
    const uint64_t bit = uint64_t{1} << (i % 64);
    const uint32_t part = partition_of(proto, remote, remote_port);
    // The map slot first: whoever takes the port next binds it afresh (the bit's release
    // orders the two).
    connections_[map_index(pi, part, port)].store(0, std::memory_order_relaxed);
    if ((word(pi, part, i / 64).fetch_and(~bit, std::memory_order_acq_rel) & bit) == 0) return false;
    if (account != kNoAccount) held_cell(account, pi, part).fetch_sub(1, std::memory_order_relaxed);
    return true;
}

void NatPortAllocator::bind(uint8_t proto, Ipv4Addr remote, uint16_t remote_port, uint16_t port,
                            int32_t position) noexcept {
    const int pi = proto_index(proto);
    if (pi < 0 || !range_.contains(port) || position < 0) return;
    // Release: a reader that finds the position also finds the entry's key record and binding,
    // written before.
    connections_[map_index(pi, partition_of(proto, remote, remote_port), port)].store(
        static_cast<uint32_t>(position) + 1, std::memory_order_release);
}

int32_t NatPortAllocator::bound(uint8_t proto, Ipv4Addr remote, uint16_t remote_port, uint16_t port) const noexcept {
    const int pi = proto_index(proto);
    if (pi < 0 || !range_.contains(port)) return -1;
    return bound_at(map_index(pi, partition_of(proto, remote, remote_port), port));
}

size_t NatPortAllocator::prefetch_slot(uint8_t proto, Ipv4Addr remote, uint16_t remote_port,
                                       uint16_t port, Intent intent) const noexcept {
    const int pi = proto_index(proto);
    if (pi < 0 || !range_.contains(port)) return kNoSlot;
    const size_t slot = map_index(pi, partition_of(proto, remote, remote_port), port);
    if (intent == Intent::write)
        __builtin_prefetch(&connections_[slot], 1, 3);
    else
        __builtin_prefetch(&connections_[slot], 0, 3);
    return slot;
}

bool NatPortAllocator::claim(uint8_t proto, Ipv4Addr remote, uint16_t remote_port, uint16_t port,
                             uint16_t account) noexcept {
    const int pi = proto_index(proto);
    if (pi < 0 || !range_.contains(port)) return false;
    const uint32_t i = port - range_.first;
    const uint64_t bit = uint64_t{1} << (i % 64);
    const uint32_t part = partition_of(proto, remote, remote_port);
    if ((word(pi, part, i / 64).fetch_or(bit, std::memory_order_acq_rel) & bit) != 0) return false;
    if (account < kMaxAccounts) held_cell(account, pi, part).fetch_add(1, std::memory_order_relaxed);
    return true;
}

uint32_t NatPortAllocator::held(uint16_t account) const noexcept {
    if (account >= kMaxAccounts) return 0;
    uint32_t n = 0;
    for (int pi = 0; pi < kProtoCount; ++pi)
        for (uint32_t part = 0; part < partitions_; ++part)
            n += held_cell(account, pi, part).load(std::memory_order_relaxed);
    return n;
}

bool NatPortAllocator::allocated(uint8_t proto, Ipv4Addr remote, uint16_t remote_port,
                                 uint16_t port) const noexcept {
    const int pi = proto_index(proto);
    if (pi < 0 || !range_.contains(port)) return false;
    const uint32_t i = port - range_.first;
    return (word(pi, partition_of(proto, remote, remote_port), i / 64)
                .load(std::memory_order_acquire) >>
            (i % 64)) &
           1;
}

uint32_t NatPortAllocator::in_use(uint8_t proto) const noexcept {
    const int pi = proto_index(proto);
    if (pi < 0) return 0;
    const uint32_t tail = words_ * 64 - range_.size();
    const uint64_t last_mask = tail ? ~uint64_t{0} >> tail : ~uint64_t{0};
    uint32_t n = 0;
    for (uint32_t part = 0; part < partitions_; ++part)
        for (uint32_t w = 0; w < words_; ++w) {
            const uint64_t v = word(pi, part, w).load(std::memory_order_relaxed);
            n += static_cast<uint32_t>(std::popcount(w + 1 == words_ ? v & last_mask : v));
        }
    return n;
}

// ---- translations ----

NatResult snat_outbound(uint8_t* ip, size_t len, NatEndpoint external) noexcept {
    return rewrite_query<true>(ip, len, external);
}

NatResult dnat_inbound(uint8_t* ip, size_t len, NatEndpoint internal) noexcept {
    return rewrite_query<false>(ip, len, internal);
}

NatResult translate_icmp_error_inbound(uint8_t* ip, size_t len, NatEndpoint internal) noexcept {
    return rewrite_error<true>(ip, len, internal);
}

NatResult translate_icmp_error_outbound(uint8_t* ip, size_t len, NatEndpoint external) noexcept {
    return rewrite_error<false>(ip, len, external);
}

std::optional<NatFlow> icmp_error_quoted_flow(const uint8_t* ip, size_t len) noexcept {
    ErrorView v;
    // error_view only reads.
    if (error_view(const_cast<uint8_t*>(ip), len, v) != NatResult::ok) return std::nullopt;
    const L4Layout& l = *v.layout;
    NatFlow f;
    f.proto = v.inner->protocol;
    f.src = {Ipv4Addr::from_be(v.inner->src), Be16{load16(v.inner_l4 + l.src_port)}.host()};
    f.dst = {Ipv4Addr::from_be(v.inner->dst), Be16{load16(v.inner_l4 + l.dst_port)}.host()};
    return f;
}

}  // namespace calyx::dp
