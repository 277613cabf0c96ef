// Masquerade (NAPT) of `nat` networks' egress to the uplink address: the external port
// allocator, the in-place packet translations with incremental checksums, and the binding a
// connection entry keeps. Pure code: no DPDK, no allocation after construction, no
// exceptions on the data path, no clock (nothing here depends on time).
//
// References: RFC 4787 (UDP), RFC 5382 (TCP), RFC 5508 (ICMP), RFC 7857 (updates to all
// three), RFC 6056 (port randomisation), RFC 1624 (incremental checksum update).
//
// ## Mapping behaviour (what the far side sees)
//
// Address-and-port-dependent mapping ("NAT44-ED", as Linux MASQUERADE and VPP nat44-ed):
// every new connection of a `nat` instance gets its own external port, and an external
// port is unique per (protocol, remote address, remote port) only, so the same external
// port serves different remote endpoints at once (RFC 7857's "port overlapping"). It is
// never given twice towards the same remote endpoint, so replies are always unambiguous
// (RFC 4787 REQ-3 forbids "port overloading", which is exactly that failure). The
// instance's own source port is kept when it is free towards that remote (port
// preservation, RFC 4787 section 4.2.1), otherwise a port is chosen by randomised probing
// (RFC 6056 algorithm 1: keyed random start, then the next free one).
//
// RFC 4787 REQ-1 and RFC 5382 REQ-1 ask for endpoint-independent mapping (one external port
// per internal endpoint, whatever the remote). calyx does not do that, deliberately:
//   - capacity: one uplink address gives 40 000 ports per protocol in total with EIM; with
//     per-remote uniqueness it gives 40 000 per remote endpoint, which is what a compute
//     host masquerading many instances behind one address needs;
//   - lifetime: the mapping is the connection. It lives and dies with the connection's
//     tracking entry (no separate mapping table, reference counts or mapping timers), so
//     exhaustion, expiry and reload cut-offs have exactly one place to happen;
//   - filtering is address-and-port-dependent anyway (nothing unsolicited may ever reach a
//     `nat` instance: issue 4), which removes EIM's main benefit, inbound reachability of
//     a mapping from third parties;
//   - with port preservation an application that reuses one socket towards several remotes
//     (STUN, P2P) usually still sees the same external port: the internal port is kept
//     whenever it is inside the range and free towards that remote.
// What it costs: peer-to-peer traversal that relies on EIM (a STUN-learnt port reused
// towards another peer) fails when the preferred port is taken or outside the range. There
// is no hairpinning (an instance reaching the uplink address from inside): calyx treats the
// uplink address as local.
// Source ports below 1024 are mapped into the configured range (RFC 4787 REQ-3 recommends
// keeping them below 1024): the operator chose the range.
//
// Only TCP, UDP and ICMP echo (the identifier plays the port) are translated; ICMP errors
// are translated back to the connection they quote. Other protocols have no port to
// multiplex on and are not masqueraded (the caller drops them).
//
// ## NatPortAllocator: who owns a port
//
// One allocator per external address (the uplink has one), shared by every worker and the
// control plane; it outlives snapshots, like the connection table. For each of TCP, UDP and
// ICMP it holds `partitions` bitmaps of the port range (5 kB each for 40 000 ports). A remote
// endpoint (address, port; address only for ICMP, whose key carries the identifier on both
// sides) is hashed with a secret to one partition, and a port is allocated in that
// partition's bitmap with an atomic test-and-set, released with an atomic clear. So:
//   - lock-free: allocate and release are fetch_or / fetch_and on 64-bit words, from any
//     thread; no worker ever waits for another;
//   - exact: a port taken in a partition is taken for every remote endpoint hashed there,
//     so per-remote uniqueness holds without any table lookup (it is conservative: two
//     remotes sharing a partition share its 40 000 ports). 64 partitions give each remote
//     endpoint a pool shared with 1/64 of the others; `partitions = 1` makes ports
//     globally unique per protocol;
//   - no allocation after create(): 3 x partitions x 5 kB (about 1 MB for 64).
// The partition hash is keyed (dp/keyed_hash.hpp): without the secret nobody can pick remote
// endpoints that share a pool, to drain one that others need.
//
// ## Fairness: per-instance quotas (issue 13)
//
// All `nat` instances share the host address, so one instance could take every port of a
// remote endpoint's pool and cut every other instance off from that remote (and from the
// remotes hashed with it). Each allocation is therefore charged to the instance's account
// (dp/limits.hpp): the allocator counts, per account, protocol and partition, the ports held,
// and refuses a port beyond the instance's `limits.nat_ports` (over_quota, dropped as
// limit_nat_ports). An instance thus holds at most `nat_ports` ports towards any one remote
// endpoint (counting per partition is stricter: its connections to all remotes of that pool
// count together, which matters only for an instance with thousands of connections to
// different remotes in one pool, 1/64 of all remotes). Any other instance still finds a free
// port towards that remote as long as the pool has room for its share: the pool has the
// whole range (40 000 ports by default), and with the default 4096 per instance it takes ten
// instances at their limit towards the same remote pool to fill it. The counters are 16-bit
// atomics (an account never holds more ports of a pool than the range has), 2 bytes x 3
// protocols x partitions x accounts: 384 kB for 64 partitions and 1024 accounts.
//
// The other design, per-instance port blocks as carrier-grade NATs allocate them (RFC 7422:
// each subscriber gets a fixed block of the range), gives every instance a guaranteed share
// and makes logs deterministic, but divides the range: 40 000 ports over 1000 instances are
// 40 each, whatever the remote, and unused blocks are wasted. Quotas on this allocator keep
// port overlapping (the whole range per remote endpoint) and port preservation, cost one
// atomic add per allocation, and give the same guarantee while the pool is not
// oversubscribed; an operator who wants a hard guarantee sets `nat_ports` so that the
// instances' sum fits the range.
//
// Ownership rule: a set bit is a port bound to exactly one live connection. The thread that
// set it (allocate returned the port) owns it until it stores it in a connection entry; if
// it cannot create the connection it releases it at once. From then on the connection owns
// it, and whoever removes that connection from the table (the expiry sweep on the main
// lcore, a reload cut-off, an eviction) releases it, exactly once, after the connection's
// binding is cleared and its key deleted from the hash (so no new packet finds the old
// mapping). A port is therefore reused only after the connection's entry is gone, which for
// TCP includes TIME_WAIT (what RFC 7857 asks of port reuse).
//
// ## The binding in the connection table, and the way back in
//
// A NAT'd connection must be found from both sides, with the tuple each side's packets carry,
// and the inside and outside tuples differ. Linux conntrack (original and reply tuple) and
// VPP (in2out and out2in) hash both. calyx hashes only the inside one:
//   the connection key  the connection as the instance sees it, exactly what the policy stage
//                builds for any connection: make_ct_key(proto, {nat zone, instance ip, port},
//                {outside zone (0), remote, remote port}). Its entry holds the protocol state
//                as for any connection, and NatBinding{role primary, external address,
//                external port} in reserved64.
//   the way back  the allocator's connection map: for every (protocol, pool, port) the
//                position of the entry that holds the port (bind()). A port of a pool belongs
//                to exactly one live connection (the ownership rule above), so the outside
//                tuple (protocol, remote address and port, external port) names at most one
//                connection: its pool is partition_of(remote), its slot the external port. No
//                second key, no second entry: 4 bytes per port of every pool (31 MB for the
//                default 64 pools of 40 000 ports and three protocols, about 30 bytes per
//                connection of a million-connection table) instead of a hashed outside key
//                and its entry (about 110 bytes each).
// A pool is shared by the remote endpoints hashed to it, so a slot's connection must be
// checked against the packet: its remote address (and port, but for ICMP echo, whose key
// carries the instance's identifier) from the connection's key record, its external address
// and port from its binding (ConnTable::outside_connection()).
// Why the state lives under the inside key: security groups, the state machines, the reload
// re-check and ICMP-error association then work unchanged on translated connections (once
// an inbound packet is translated back it is an ordinary reply to an ordinary connection).
//
// Packet paths:
//   outbound (instance -> Internet): policy as today (one lookup, the connection key). First
//     packet, destination outside and source network `nat`: allocate(proto, remote,
//     remote port, preferred = instance port, seed), insert the key, store the binding and
//     bind() the port to the entry; on exhaustion drop (nat_exhausted), on a full table
//     release the port. The packet is rewritten with snat_outbound(binding) AFTER forward's
//     TTL/MTU checks (a `nat_out` step on packets with verdict forward), so an ICMP error
//     calyx makes for the instance quotes the packet the instance sent.
//   inbound (Internet -> uplink address): a `nat_in` step before route: the connection map's
//     slot of the outside tuple, checked as above; hit: dnat_inbound(instance endpoint from
//     the key), so route, policy (the connection key, state update in the reply direction)
//     and forward see a reply to the instance; miss: not translated (the local stage or a
//     drop handles it).
//   ICMP error from outside: the outside tuple from icmp_error_quoted_flow() (the quoted
//     datagram left through the NAT: its source is the external endpoint), then
//     translate_icmp_error_inbound(instance endpoint); policy's check_icmp_error then finds
//     the connection as for any error.
//   ICMP error from the instance about a reply it received (e.g. port unreachable after its
//     socket closed): translate_icmp_error_outbound(binding of the quoted connection).
// Entry life cycle: start() on a fresh (dead) slot must store the binding, NatBinding{} for
// connections that are not translated (slots are reused). When existing() reuses a live entry
// (reopen: TCP SYN on TIME_WAIT; expired) it keeps the binding, so the new incarnation keeps
// its external port; a `nat` instance's entry may only be reopened from the inside. Removing a
// translated connection clears its binding (a reader holding its position then misses), deletes
// its key, and releases the port, which clears the port's slot of the connection map. A NAT'd
// connection takes one slot of the table's capacity, like any other.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "calyx/headers.hpp"
#include "calyx/net.hpp"
#include "dp/batch.hpp"
#include "dp/conntrack.hpp"
#include "dp/frame.hpp"
#include "dp/keyed_hash.hpp"
#include "dp/limits.hpp"
#include "dp/table_memory.hpp"

namespace calyx::dp {

// Zone of the external endpoint in inbound fragments' keys; snapshot builders give networks
// small zones.
inline constexpr uint16_t kNatZone = 0xffff;

// An address and a port in host byte order. For ICMP echo the port is the identifier.
struct NatEndpoint {
    Ipv4Addr addr;
    uint16_t port = 0;
    friend constexpr bool operator==(const NatEndpoint&, const NatEndpoint&) = default;
};

// Inclusive range of external ports, e.g. the default "20000-59999".
struct NatPortRange {
    uint16_t first = 20000;
    uint16_t last = 59999;
    constexpr uint32_t size() const { return uint32_t{last} - first + 1; }
    constexpr bool contains(uint16_t p) const { return p >= first && p <= last; }
};

// Why allocate() gave no port.
enum class NatRefusal : uint8_t {
    exhausted,    // the remote endpoint's partition is full (nat_exhausted)
    over_quota,   // the account holds its `nat_ports` in that partition (limit_nat_ports)
    unsupported,  // not TCP, UDP or ICMP
};

// Whose port it is and how many of a partition it may hold. No account: not counted.
struct NatQuota {
    uint16_t account = kNoAccount;
    uint32_t ports = UINT32_MAX;
};

class NatPortAllocator {
public:
    static constexpr uint32_t kDefaultPartitions = 64;
    static constexpr uint32_t kMaxPartitions = 4096;

    // `partitions`: a power of two in [1, kMaxPartitions]. `secret` keys the partition hash
    // and the probe start (take it from a random source at start-up). The range must not
    // contain port 0. Control plane: allocates all memory here.
    static std::expected<NatPortAllocator, std::string> create(
        NatPortRange range = {}, uint32_t partitions = kDefaultPartitions, uint64_t secret = 0);

    NatPortAllocator(NatPortAllocator&&) noexcept = default;
    NatPortAllocator& operator=(NatPortAllocator&&) noexcept = default;

    // An external port for a new connection of IP protocol `proto` (TCP, UDP or ICMP) towards
    // (remote, remote_port), unique among the ports allocated and not released towards that
    // remote endpoint. `preferred` (the instance's own source port or echo identifier) is
    // returned if it is in the range and free; otherwise the search starts at a point derived
    // from `seed` (vary it per connection: e.g. the TSC mixed with the inside tuple) and takes
    // the next free port. The port is charged to `quota.account`, which may hold at most
    // `quota.ports` of the partition. On refusal nothing changes (existing allocations are
    // untouched); the caller counts the drop. For ICMP `remote_port` is ignored. Lock-free,
    // any thread.
    std::expected<uint16_t, NatRefusal> allocate(uint8_t proto, Ipv4Addr remote, uint16_t remote_port,
                                                 uint16_t preferred, uint64_t seed,
                                                 NatQuota quota = {}) noexcept;
    // Gives the port back (and the account's charge, if it was charged to one), and clears its
    // slot of the connection map. False if it was not allocated (or is out of range): a double
    // release is harmless but reported. Lock-free, any thread.
    bool release(uint8_t proto, Ipv4Addr remote, uint16_t remote_port, uint16_t port,
                 uint16_t account = kNoAccount) noexcept;
    // Marks `port` taken towards (remote, remote_port), charged to `account` without a quota:
    // a connection restored from a previous process keeps its port (dp/state_file.hpp). False
    // if it is outside the range or already taken. Control plane, before workers run.
    bool claim(uint8_t proto, Ipv4Addr remote, uint16_t remote_port, uint16_t port,
               uint16_t account = kNoAccount) noexcept;
    // The connection map (see "The binding in the connection table" above): the owner of an
    // allocated or claimed port records which connection-table position holds it, before the
    // connection can see a reply. Lock-free, any thread.
    void bind(uint8_t proto, Ipv4Addr remote, uint16_t remote_port, uint16_t port, int32_t position) noexcept;
    // The position bound to `port` towards (remote, remote_port), or -1. The position's entry
    // must still be checked against the tuple: the pool is shared (ConnTable::outside_connection).
    int32_t bound(uint8_t proto, Ipv4Addr remote, uint16_t remote_port, uint16_t port) const noexcept;
    // bound() in two steps, so that a burst can start loading every map slot (a cache miss
    // with many connections) before it reads the first: the slot, prefetched (kNoSlot: the
    // protocol or port has none), then what is bound there. A new connection about to bind()
    // its port prefetches the slot to write it.
    static constexpr size_t kNoSlot = SIZE_MAX;
    enum class Intent : uint8_t { read, write };
    size_t prefetch_slot(uint8_t proto, Ipv4Addr remote, uint16_t remote_port, uint16_t port,
                         Intent intent = Intent::read) const noexcept;
    int32_t bound_at(size_t slot) const noexcept {
        return slot == kNoSlot ? -1 : static_cast<int32_t>(connections_[slot].load(std::memory_order_acquire)) - 1;
    }
    uint64_t secret() const { return secret_; }
    // Ports charged to `account`, all protocols and partitions (a scan: control plane).
    uint32_t held(uint16_t account) const noexcept;

    bool allocated(uint8_t proto, Ipv4Addr remote, uint16_t remote_port,
                   uint16_t port) const noexcept;
    // Ports allocated for `proto`, all partitions (a scan: control plane, metrics).
    uint32_t in_use(uint8_t proto) const noexcept;
    // Which partition (pool) serves a remote endpoint.
    uint32_t partition_of(uint8_t proto, Ipv4Addr remote, uint16_t remote_port) const noexcept;

    NatPortRange range() const { return range_; }
    uint32_t partitions() const { return partitions_; }
    // Bitmaps, quota counters and the connection map.
    size_t memory_bytes() const {
        return size_t{lines_total_} * sizeof(Line) + quota_cells() * sizeof(std::atomic<uint16_t>) +
               map_cells() * sizeof(std::atomic<uint32_t>);
    }

private:
    struct alignas(64) Line {
        std::atomic<uint64_t> word[8];
    };
    NatPortAllocator() = default;
    std::atomic<uint64_t>& word(int proto_index, uint32_t partition, uint32_t w) const noexcept;
    std::atomic<uint16_t>& held_cell(uint16_t account, int proto_index, uint32_t partition) const noexcept;
    // A free port of one partition's bitmap, taken (allocate() without the accounting).
    std::optional<uint16_t> take_port(int proto_index, uint32_t partition, uint16_t preferred,
                                      uint64_t seed) noexcept;
    size_t quota_cells() const { return size_t{kMaxAccounts} * 3 * partitions_; }
    size_t map_cells() const { return size_t{3} * partitions_ * range_.size(); }
    // Index of a port's slot in the connection map; `port` in the range.
    size_t map_index(int proto_index, uint32_t partition, uint16_t port) const noexcept {
        return (size_t{static_cast<uint32_t>(proto_index)} * partitions_ + partition) * range_.size() +
               (port - range_.first);
    }

    // Each in memory of its own (dp/table_memory.hpp): read at random, a page walk per access
    // with 4 KB pages.
    TableArray<Line> lines_;
    // The connection map: per (protocol, partition, port) the bound position + 1, 0: none.
    TableArray<std::atomic<uint32_t>> connections_;
    // Ports held per (account, protocol, partition); see "Fairness" above.
    TableArray<std::atomic<uint16_t>> held_;
    MultilinearHash<2> partition_hash_;
    NatPortRange range_{};
    uint32_t partitions_ = 0;
    uint32_t words_ = 0;              // 64-bit words per bitmap
    uint32_t lines_per_bitmap_ = 0;   // cache lines per bitmap
    uint32_t lines_total_ = 0;
    uint64_t secret_ = 0;
};

// What a translation did. `ok`: rewritten. Otherwise the packet is untouched.
enum class NatResult : uint8_t {
    ok,
    unsupported,  // not TCP, UDP, ICMP echo (or, for the error functions, not an ICMP error
                  // quoting one of those); a non-first fragment of an ICMP error
    malformed,    // not IPv4, bad header length, or the L4 header (or the quote) is truncated
};

// Rewrites the source of an IPv4 packet (`ip` points at its header, `len` bytes readable) to
// `external`: the address, and the TCP/UDP source port or the ICMP echo identifier. Updates
// the IPv4 header checksum and the TCP/UDP checksum (pseudo-header and port) or the ICMP
// checksum incrementally; a UDP checksum of 0 ("none") stays 0, and one that becomes 0 is
// written 0xffff. A non-first fragment has no L4 header: only its address is rewritten (the
// first fragment carries the datagram's L4 checksum, which the incremental update keeps
// right for the whole datagram).
NatResult snat_outbound(uint8_t* ip, size_t len, NatEndpoint external) noexcept;
// The reverse for packets of the connection coming back: the destination address and the
// TCP/UDP destination port or the ICMP echo identifier become `internal`.
NatResult dnat_inbound(uint8_t* ip, size_t len, NatEndpoint internal) noexcept;

// An ICMP error (destination unreachable, time exceeded, parameter problem) from outside,
// quoting a datagram that left through the NAT (quoted source = the external endpoint):
// the outer destination and the quoted source address and port (or echo identifier) become
// `internal`. Fixes the outer IPv4 checksum, the quoted IPv4 header checksum, the quoted L4
// checksum when the quote contains it (UDP and ICMP always, since 8 bytes are quoted; TCP
// only if 18 bytes are: otherwise it is left as it is, RFC 5508), and the ICMP checksum.
// The instance then sees its own datagram quoted, byte for byte.
NatResult translate_icmp_error_inbound(uint8_t* ip, size_t len, NatEndpoint internal) noexcept;
// The mirror image: an ICMP error sent by the instance about a datagram it received through
// the NAT (quoted destination = the instance): the outer source and the quoted destination
// address and port become `external`.
NatResult translate_icmp_error_outbound(uint8_t* ip, size_t len, NatEndpoint external) noexcept;

// The datagram an ICMP error quotes, as tuples for a connection-table lookup (ICMP echo: the
// identifier as both ports, like every ICMP key). nullopt if `ip` is not an ICMP error or
// the quote is shorter than its IPv4 header plus 8 bytes.
struct NatFlow {
    uint8_t proto = 0;
    NatEndpoint src;
    NatEndpoint dst;
};
std::optional<NatFlow> icmp_error_quoted_flow(const uint8_t* ip, size_t len) noexcept;

// The same on a frame of a batch (classify set l3_offset).
inline NatResult snat_outbound(Frame& f, const PacketMeta& m, NatEndpoint external) noexcept {
    return snat_outbound(f.data() + m.l3_offset, f.len - m.l3_offset, external);
}
inline NatResult dnat_inbound(Frame& f, const PacketMeta& m, NatEndpoint internal) noexcept {
    return dnat_inbound(f.data() + m.l3_offset, f.len - m.l3_offset, internal);
}
inline NatResult translate_icmp_error_inbound(Frame& f, const PacketMeta& m,
                                              NatEndpoint internal) noexcept {
    return translate_icmp_error_inbound(f.data() + m.l3_offset, f.len - m.l3_offset, internal);
}
inline NatResult translate_icmp_error_outbound(Frame& f, const PacketMeta& m,
                                               NatEndpoint external) noexcept {
    return translate_icmp_error_outbound(f.data() + m.l3_offset, f.len - m.l3_offset, external);
}

// What a connection entry remembers of its translation, in CtEntry::reserved64 (see the top
// of this file). Zero is "not translated", so zeroed entries need no initialisation.
enum class NatRole : uint8_t {
    none = 0,
    primary = 1,  // a translated connection: `endpoint` is the external address and port
};

struct NatBinding {
    Ipv4Addr addr;  // host order
    uint16_t port = 0;
    NatRole role = NatRole::none;
    uint8_t flags = 0;  // reserved, 0

    NatEndpoint endpoint() const { return {addr, port}; }
    bool translated() const { return role != NatRole::none; }
    friend constexpr bool operator==(const NatBinding&, const NatBinding&) = default;
};
static_assert(sizeof(NatBinding) == sizeof(CtEntry::reserved64));
static_assert(std::is_trivially_copyable_v<NatBinding>);

// Read and written as one 64-bit atomic, so the nat_in step may read a connection's binding
// without its lock while another worker stores or clears it.
inline NatBinding load_nat_binding(const CtEntry& e) noexcept {
    return std::bit_cast<NatBinding>(__atomic_load_n(&e.reserved64, __ATOMIC_ACQUIRE));
}
inline void store_nat_binding(CtEntry& e, NatBinding b) noexcept {
    __atomic_store_n(&e.reserved64, std::bit_cast<uint64_t>(b), __ATOMIC_RELEASE);
}

}  // namespace calyx::dp
