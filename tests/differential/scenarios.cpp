#include "scenarios.hpp"

#include <algorithm>
#include <array>
#include <optional>

#include <fmt/format.h>

#include "calyx/headers.hpp"

namespace calyx::difftest {
namespace {

// ------------------------------------------------------------------------------------------
// Randomness: splitmix64, so that a seed means the same packets with any standard library.

class Rng {
public:
    explicit Rng(uint64_t seed) : s_(seed) {}
    uint64_t next() {
        uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    uint32_t below(uint32_t n) { return n == 0 ? 0 : static_cast<uint32_t>(next() % n); }
    uint32_t between(uint32_t lo, uint32_t hi) { return lo + below(hi - lo + 1); }  // inclusive
    bool chance(unsigned percent) { return below(100) < percent; }
    uint32_t u32() { return static_cast<uint32_t>(next()); }
    template <typename T, size_t N>
    T pick(const std::array<T, N>& a) {
        return a[below(N)];
    }

private:
    uint64_t s_;
};

// ------------------------------------------------------------------------------------------
// Wire formats

void put16(Bytes& b, uint16_t v) {
    b.push_back(static_cast<uint8_t>(v >> 8));
    b.push_back(static_cast<uint8_t>(v));
}
void put32(Bytes& b, uint32_t v) {
    put16(b, static_cast<uint16_t>(v >> 16));
    put16(b, static_cast<uint16_t>(v));
}
uint16_t get16(const Bytes& b, size_t at) { return static_cast<uint16_t>(b[at] << 8 | b[at + 1]); }
uint32_t get32(const Bytes& b, size_t at) { return uint32_t{get16(b, at)} << 16 | get16(b, at + 2); }
void set16(Bytes& b, size_t at, uint16_t v) {
    b[at] = static_cast<uint8_t>(v >> 8);
    b[at + 1] = static_cast<uint8_t>(v);
}

// Checksum over `len` bytes at `at`, written big-endian into `b` at `field`.
void fill_checksum(Bytes& b, size_t at, size_t len, size_t field, uint32_t pseudo = 0) {
    set16(b, field, 0);
    const uint16_t c = checksum_fold(checksum_partial(b.data() + at, len, pseudo));
    std::memcpy(b.data() + field, &c, 2);  // computed on the stored bytes: already network order
}

uint32_t pseudo_header(Ipv4Addr src, Ipv4Addr dst, uint8_t proto, size_t len) {
    Bytes p;
    put32(p, src.value);
    put32(p, dst.value);
    p.push_back(0);
    p.push_back(proto);
    put16(p, static_cast<uint16_t>(len));
    return checksum_partial(p.data(), p.size());
}

// An IPv4 datagram from `from` to the other host; DF set, TTL 64, ID 0 (the runner sets it).
Bytes ipv4(Side from, uint8_t proto, const Bytes& l4) {
    Bytes b;
    b.push_back(0x45);
    b.push_back(0);
    put16(b, static_cast<uint16_t>(20 + l4.size()));
    put16(b, 0);
    put16(b, Ipv4Hdr::kDontFragment);
    b.push_back(64);
    b.push_back(proto);
    put16(b, 0);
    put32(b, address_of(from).value);
    put32(b, address_of(other(from)).value);
    fill_checksum(b, 0, 20, 10);
    b.insert(b.end(), l4.begin(), l4.end());
    return b;
}

constexpr uint8_t kFin = TcpHdr::kFin, kSyn = TcpHdr::kSyn, kRst = TcpHdr::kRst,
                  kPsh = TcpHdr::kPsh, kAck = TcpHdr::kAck, kUrg = TcpHdr::kUrg, kEce = 0x40,
                  kCwr = 0x80;
constexpr uint8_t kNoScale = 0xff;

struct TcpOptions {
    bool mss = false;
    uint8_t wscale = kNoScale;
    bool sack_perm = false;
    bool timestamps = false;
    std::vector<std::pair<uint32_t, uint32_t>> sack;  // blocks (left, right)
};

Bytes tcp_options(const TcpOptions& o) {
    Bytes b;
    if (o.mss) {
        b.insert(b.end(), {2, 4});
        put16(b, 1400);
    }
    if (o.sack_perm) b.insert(b.end(), {1, 1, 4, 2});
    if (o.timestamps) {
        b.insert(b.end(), {1, 1, 8, 10});
        put32(b, 0x01020304);
        put32(b, 0);
    }
    if (o.wscale != kNoScale) b.insert(b.end(), {1, 3, 3, o.wscale});
    if (!o.sack.empty()) {
        b.insert(b.end(), {1, 1, 5, static_cast<uint8_t>(2 + 8 * o.sack.size())});
        for (auto [l, r] : o.sack) {
            put32(b, l);
            put32(b, r);
        }
    }
    while (b.size() % 4) b.push_back(0);  // end of option list
    return b;
}

struct Segment {
    uint16_t sport = 0, dport = 0;  // filled in by TcpScript::emit
    uint32_t seq = 0, ack = 0;
    uint8_t flags = 0;
    uint16_t window = 0;  // 0: the sender's current window
    TcpOptions options{};
    uint16_t payload = 0;
};

Bytes tcp_datagram(Side from, const Segment& s) {
    const Bytes opts = tcp_options(s.options);
    Bytes l4;
    put16(l4, s.sport);
    put16(l4, s.dport);
    put32(l4, s.seq);
    put32(l4, s.ack);
    l4.push_back(static_cast<uint8_t>((20 + opts.size()) / 4 << 4));
    l4.push_back(s.flags);
    put16(l4, s.window);
    put16(l4, 0);
    put16(l4, 0);
    l4.insert(l4.end(), opts.begin(), opts.end());
    for (uint16_t i = 0; i < s.payload; ++i) l4.push_back(static_cast<uint8_t>('a' + i % 26));
    Bytes b = ipv4(from, ipproto::kTcp, l4);
    fill_checksum(b, 20, l4.size(), 36,
                  pseudo_header(address_of(from), address_of(other(from)), ipproto::kTcp, l4.size()));
    return b;
}

Bytes udp_datagram(Side from, uint16_t sport, uint16_t dport, uint16_t payload) {
    Bytes l4;
    put16(l4, sport);
    put16(l4, dport);
    put16(l4, static_cast<uint16_t>(8 + payload));
    put16(l4, 0);
    for (uint16_t i = 0; i < payload; ++i) l4.push_back(static_cast<uint8_t>(i));
    Bytes b = ipv4(from, ipproto::kUdp, l4);
    fill_checksum(b, 20, l4.size(), 26,
                  pseudo_header(address_of(from), address_of(other(from)), ipproto::kUdp, l4.size()));
    return b;
}

// ICMP message: type, code, the 4 bytes after the checksum, then `body`.
Bytes icmp_datagram(Side from, uint8_t type, uint8_t code, uint32_t rest, const Bytes& body) {
    Bytes l4{type, code, 0, 0};
    put32(l4, rest);
    l4.insert(l4.end(), body.begin(), body.end());
    Bytes b = ipv4(from, ipproto::kIcmp, l4);
    fill_checksum(b, 20, l4.size(), 22);
    return b;
}

Bytes echo_datagram(Side from, uint8_t type, uint8_t code, uint16_t id, uint16_t seq) {
    return icmp_datagram(from, type, code, uint32_t{id} << 16 | seq, Bytes(24, 0x5a));
}

// ------------------------------------------------------------------------------------------
// The flow of a scenario: who opens it, the ports.

struct Flow {
    Side initiator;
    uint16_t iport;  // the initiator's port
    uint16_t rport;  // the responder's (service) port
    uint16_t echo_id;
    uint16_t stray;  // a port or identifier of no flow
};

Flow choose_flow(Rng& rng, uint32_t index, unsigned reverse_percent) {
    Flow f;
    f.initiator = rng.chance(reverse_percent) ? Side::server : Side::client;
    f.iport = static_cast<uint16_t>(kFirstInitiatorPort + index % kDistinctFlows);
    f.echo_id = static_cast<uint16_t>(index % kDistinctFlows);
    f.stray = static_cast<uint16_t>(kStrayFirst + index % (65536 - kStrayFirst));
    // Mostly ports the policy opens; some it keeps closed, at both ends of the range.
    static constexpr std::array<uint16_t, 6> kServerOpen{80, 443, 1000, 5201, 8080, 59999};
    static constexpr std::array<uint16_t, 4> kServerClosed{22, 999, 60000, 65535};
    static constexpr std::array<uint16_t, 3> kClientOpen{7000, 7443, 7999};
    static constexpr std::array<uint16_t, 3> kClientClosed{22, 6999, 8000};
    const bool closed = rng.chance(6);
    if (f.initiator == Side::client)
        f.rport = closed ? rng.pick(kServerClosed) : rng.pick(kServerOpen);
    else
        f.rport = closed ? rng.pick(kClientClosed) : rng.pick(kClientOpen);
    return f;
}

// ------------------------------------------------------------------------------------------
// TCP: a model of both endpoints that produces plausible segments, and deliberate deviations.

struct TcpHost {
    uint16_t port = 0;
    uint32_t isn = 0;
    uint32_t nxt = 0;  // next sequence number it sends
    uint32_t rcv = 0;  // what it acknowledges
    uint16_t win = 0;  // its window field
    uint8_t wscale = kNoScale;
    bool sack_perm = false;
    bool syn_sent = false;
    bool fin_sent = false;
    uint32_t last_seq = 0;  // its last data segment, for retransmissions
    uint16_t last_len = 0;
};

class TcpScript {
public:
    TcpScript(Rng& rng, Scenario& sc, const Flow& f) : rng_(rng), sc_(sc), flow_(f) {
        host(f.initiator).port = f.iport;
        host(other(f.initiator)).port = f.rport;
        for (auto& h : hosts_) {
            h.isn = rng_.u32();
            h.nxt = h.isn;
            h.win = rng_.pick(kWindows);
            if (rng_.chance(60)) h.wscale = static_cast<uint8_t>(rng_.chance(10) ? rng_.between(15, 20) : rng_.below(10));
            h.sack_perm = rng_.chance(60);
        }
    }

    Side I() const { return flow_.initiator; }
    Side R() const { return other(flow_.initiator); }
    TcpHost& host(Side s) { return hosts_[static_cast<int>(s)]; }
    size_t size() const { return sc_.packets.size(); }

    // --- the handshake ----------------------------------------------------------------------
    void syn(Side a, const char* what = "SYN") {
        TcpHost& h = host(a);
        h.nxt = h.isn + 1;
        h.syn_sent = true;
        emit(a, {.seq = h.isn, .ack = 0, .flags = kSyn, .options = syn_options(h)}, what);
        delivered(a);
    }
    void syn_new_isn(Side a) {
        TcpHost& h = host(a);
        const bool higher = rng_.chance(70);
        h.isn = higher ? h.isn + rng_.between(1, 100000) : h.isn - rng_.between(1, 100000);
        syn(a, higher ? "SYN with a higher ISN" : "SYN with a lower ISN");
    }
    void synack(Side a, const char* what = "SYN-ACK") {
        TcpHost& h = host(a);
        TcpHost& p = host(other(a));
        h.nxt = h.isn + 1;
        h.syn_sent = true;
        if (p.syn_sent) h.rcv = p.isn + 1;
        emit(a, {.seq = h.isn, .ack = h.rcv, .flags = kSyn | kAck, .options = syn_options(h)}, what);
        delivered(a);
    }
    void synack_wrong_ack(Side a) {
        TcpHost& h = host(a);
        emit(a, {.seq = h.isn, .ack = h.rcv + rng_.between(1, 70000), .flags = kSyn | kAck, .options = syn_options(h)},
             "SYN-ACK acking the wrong ISN");
    }
    void handshake() {
        syn(I());
        if (rng_.chance(10)) syn(I(), "SYN retransmitted");
        synack(R());
        if (rng_.chance(8)) synack(R(), "SYN-ACK retransmitted");
        ack(I(), "ACK completing the handshake");
    }
    void simultaneous_open() {
        syn(I());
        switch (rng_.below(3)) {
            case 0:  // both send SYN, both answer with SYN-ACK
                syn(R(), "SYN from the other side (simultaneous open)");
                if (rng_.chance(50)) {
                    synack(I(), "SYN-ACK from the initiator");
                    synack(R());
                } else {
                    synack(R());
                    synack(I(), "SYN-ACK from the initiator");
                }
                break;
            case 1:  // the client answers a SYN-ACK with its own SYN-ACK
                synack(R());
                synack(I(), "SYN-ACK from the initiator answering a SYN-ACK");
                break;
            default:  // SYN crossing, one SYN-ACK, ACKs
                syn(R(), "SYN from the other side (simultaneous open)");
                synack(rng_.chance(50) ? I() : R());
                break;
        }
        ack(R(), "ACK of the SYN-ACK");
        ack(I(), "ACK of the SYN-ACK");
    }

    // --- data and acknowledgments -------------------------------------------------------------
    void ack(Side a, const char* what = "ACK", std::optional<uint16_t> window = {}) {
        TcpHost& h = host(a);
        if (window) h.win = *window;
        emit(a, {.seq = h.nxt, .ack = h.rcv, .flags = kAck}, what);
    }
    void data(Side a, const char* what = "data in order") {
        TcpHost& h = host(a);
        const uint16_t len = payload_len();
        h.last_seq = h.nxt;
        h.last_len = len;
        emit(a, {.seq = h.nxt, .ack = h.rcv, .flags = ack_flags(), .payload = len}, what);
        h.nxt += len;
        delivered(a);
    }
    // Data whose end is `d` bytes past the receiver's right edge.
    void data_at_edge(Side a) {
        TcpHost& h = host(a);
        const uint16_t len = payload_len();
        const int d = static_cast<int>(rng_.pick(std::array<int, 7>{-1, 0, 0, 1, 1, 2, 0})) +
                      (rng_.chance(20) ? static_cast<int>(len) : 0);  // or starting at the edge
        const uint32_t seq = right_edge(other(a)) - len + static_cast<uint32_t>(d);
        emit(a, {.seq = seq, .ack = h.rcv, .flags = ack_flags(), .payload = len},
             fmt::format("data ending {:+} from the right edge", d).c_str());
        if (d <= 0 && seq == h.nxt) {
            h.nxt += len;
            delivered(a);
        }
    }
    void data_beyond_window(Side a) {
        TcpHost& h = host(a);
        emit(a, {.seq = right_edge(other(a)) + rng_.between(1, 200000), .ack = h.rcv, .flags = ack_flags(), .payload = payload_len()},
             "data beyond the window");
    }
    void data_gap(Side a) {  // in window, not the next byte
        TcpHost& h = host(a);
        const uint32_t room = right_edge(other(a)) - h.nxt;
        const uint16_t len = payload_len();
        emit(a, {.seq = h.nxt + rng_.between(1, std::max<uint32_t>(room, 2) - 1), .ack = h.rcv, .flags = ack_flags(), .payload = len},
             "data after a gap, in window");
    }
    void retransmit(Side a) {
        TcpHost& h = host(a);
        if (h.last_len == 0) return data(a);
        emit(a, {.seq = h.last_seq, .ack = h.rcv, .flags = ack_flags(), .payload = h.last_len}, "retransmission");
    }
    void data_below_window(Side a) {
        TcpHost& h = host(a);
        const uint32_t back = rng_.chance(50) ? scaled_window(other(a)) + rng_.between(1, 5000) : rng_.between(1u << 20, 1u << 30);
        emit(a, {.seq = h.nxt - back, .ack = h.rcv, .flags = ack_flags(), .payload = payload_len()}, "old data below the window");
    }
    void data_random_seq(Side a) {
        emit(a, {.seq = rng_.u32(), .ack = host(a).rcv, .flags = ack_flags(), .payload = payload_len()}, "data with a random sequence number");
    }
    void ack_unsent(Side a) {
        TcpHost& h = host(a);
        emit(a, {.seq = h.nxt, .ack = host(other(a)).nxt + rng_.between(1, 5000), .flags = kAck}, "ACK of data never sent");
    }
    void ack_ancient(Side a) {
        TcpHost& h = host(a);
        emit(a, {.seq = h.nxt, .ack = h.rcv - rng_.between(66001, 1u << 24), .flags = kAck}, "ACK far below the window");
    }
    void ack_random(Side a) {
        emit(a, {.seq = rng_.u32(), .ack = rng_.u32(), .flags = kAck}, "ACK with random numbers");
    }
    void zero_window(Side a) { ack(a, "ACK announcing a zero window", 0); }
    void window_update(Side a) { ack(a, "window update", rng_.pick(kWindows)); }
    void keepalive(Side a) {
        TcpHost& h = host(a);
        emit(a, {.seq = h.nxt - 1, .ack = h.rcv, .flags = kAck, .payload = static_cast<uint16_t>(rng_.below(2))}, "keepalive");
    }
    void window_probe(Side a) {
        TcpHost& h = host(a);
        emit(a, {.seq = h.nxt, .ack = h.rcv, .flags = kAck, .payload = 1}, "window probe");
    }
    // ACK with SACK blocks; their right edge in window, exactly at what was sent, or beyond.
    void sack(Side a) {
        TcpHost& h = host(a);
        const uint32_t sent = host(other(a)).nxt;  // what the other side has sent
        uint32_t right = sent;
        const char* what = "SACK up to what was sent";
        switch (rng_.below(5)) {
            case 0: right = sent - rng_.between(1, 500); what = "SACK inside what was sent"; break;
            case 1: right = sent + rng_.between(1, 1000); what = "SACK beyond what was sent"; break;
            case 2: right = sent + rng_.between(1u << 20, 1u << 30); what = "SACK far outside the window"; break;
            case 3: right = sent - rng_.between(70000, 1u << 24); what = "SACK far below the window"; break;
            default: break;
        }
        TcpOptions o;
        o.sack.push_back({right - rng_.between(1, 400), right});
        if (rng_.chance(30)) o.sack.push_back({h.rcv + 1, h.rcv + 2});
        emit(a, {.seq = h.nxt, .ack = h.rcv, .flags = kAck, .options = o}, what);
    }

    // --- closing ------------------------------------------------------------------------------
    void fin(Side a, const char* what = "FIN") {
        TcpHost& h = host(a);
        const uint16_t len = rng_.chance(25) ? payload_len() : 0;
        emit(a, {.seq = h.nxt, .ack = h.rcv, .flags = kFin | kAck, .payload = len}, what);
        h.nxt += len + 1;
        h.fin_sent = true;
        delivered(a);
    }
    void fin_at_edge(Side a) {
        TcpHost& h = host(a);
        const uint32_t seq = right_edge(other(a)) - rng_.below(2);
        emit(a, {.seq = seq, .ack = h.rcv, .flags = kFin | kAck}, "FIN at the right edge");
    }
    void fin_retransmit(Side a) {
        TcpHost& h = host(a);
        if (!h.fin_sent) return fin(a);
        emit(a, {.seq = h.nxt - 1, .ack = h.rcv, .flags = kFin | kAck}, "FIN retransmitted");
    }
    void close(Side first) {
        fin(first);
        if (rng_.chance(20)) {  // simultaneous close
            fin(other(first), "FIN crossing the other FIN");
            ack(first, "last ACK");
            ack(other(first), "last ACK");
            return;
        }
        ack(other(first), "ACK of the FIN");
        if (rng_.chance(40)) data(other(first), "data after the other side's FIN");
        fin(other(first), "second FIN");
        ack(first, "last ACK");
    }

    // --- resets -------------------------------------------------------------------------------
    void rst(Side a) {
        TcpHost& h = host(a);
        const uint32_t edge = right_edge(other(a));
        switch (rng_.below(8)) {
            case 0: emit(a, {.seq = h.nxt, .ack = 0, .flags = kRst}, "RST at the exact sequence"); break;
            case 1: emit(a, {.seq = h.nxt, .ack = h.rcv, .flags = kRst | kAck}, "RST+ACK at the exact sequence"); break;
            case 2: emit(a, {.seq = h.nxt + rng_.between(1, std::max<uint32_t>(edge - h.nxt, 2) - 1), .ack = 0, .flags = kRst}, "RST in window, not exact"); break;
            case 3: emit(a, {.seq = edge + rng_.between(1, 100000), .ack = 0, .flags = kRst}, "RST beyond the window"); break;
            case 4: emit(a, {.seq = h.nxt - rng_.between(1, 100000), .ack = 0, .flags = kRst}, "RST below what was acknowledged"); break;
            case 5: emit(a, {.seq = h.nxt, .ack = 0, .flags = kRst | kAck}, "RST+ACK with ack 0"); break;
            case 6: emit(a, {.seq = 0, .ack = host(other(a)).nxt, .flags = kRst | kAck}, "RST+ACK with seq 0"); break;
            default: emit(a, {.seq = rng_.u32(), .ack = rng_.u32(), .flags = kRst | kAck}, "RST with random numbers"); break;
        }
    }
    // The responder refuses the SYN.
    void refuse() {
        TcpHost& r = host(R());
        const uint32_t seq = rng_.chance(70) ? 0 : r.isn;
        emit(R(), {.seq = seq, .ack = host(I()).nxt, .flags = kRst | kAck}, "RST+ACK refusing the SYN");
    }
    // An endpoint holding a stale connection answers the SYN with an ACK (RFC 5961 4); the
    // initiator resets the stale connection with seq = that ACK number.
    void challenge_ack() {
        const uint32_t stale_ack = rng_.u32();
        emit(R(), {.seq = rng_.u32(), .ack = stale_ack, .flags = kAck}, "challenge ACK answering the SYN");
        if (rng_.chance(80))
            emit(I(), {.seq = rng_.chance(85) ? stale_ack : rng_.u32(), .ack = 0, .flags = kRst}, "RST answering the challenge ACK");
    }

    void bad_flags(Side a) {
        static constexpr std::array<uint8_t, 10> kBad{kSyn | kFin, kSyn | kRst, kFin, 0, kUrg, kPsh, kSyn | kFin | kAck,
                                                      kRst | kFin, kFin | kSyn | kRst | kPsh | kAck | kUrg, kFin | kPsh | kUrg};
        TcpHost& h = host(a);
        emit(a, {.seq = h.nxt, .ack = h.rcv, .flags = rng_.pick(kBad)}, "flags no stack sends");
    }

    // One random step of either side, weighted towards what happens on real connections.
    void random_step() {
        const Side a = rng_.chance(50) ? I() : R();
        switch (rng_.below(30)) {
            case 0: case 1: case 2: case 3: return data(a);
            case 4: case 5: return ack(a);
            case 6: case 7: return data_at_edge(a);
            case 8: return data_beyond_window(a);
            case 9: return data_gap(a);
            case 10: case 11: return retransmit(a);
            case 12: return data_below_window(a);
            case 13: return data_random_seq(a);
            case 14: return ack_unsent(a);
            case 15: return ack_ancient(a);
            case 16: return ack_random(a);
            case 17: return zero_window(a);
            case 18: return window_update(a);
            case 19: return keepalive(a);
            case 20: return window_probe(a);
            case 21: case 22: return sack(a);
            case 23: case 24: return fin(a);
            case 25: return fin_at_edge(a);
            case 26: return rst(a);
            case 27: return bad_flags(a);
            case 28: return syn(I(), "SYN again");
            default: return synack(R(), "SYN-ACK again");
        }
    }

    void emit(Side a, Segment s, const std::string& what) {
        TcpHost& h = host(a);
        s.sport = h.port;
        s.dport = host(other(a)).port;
        if (s.window == 0 && !(s.flags & kRst)) s.window = h.win;
        if (rng_.chance(5) && !(s.flags & (kRst | kSyn))) s.flags |= rng_.pick(std::array<uint8_t, 3>{kEce, kCwr, kUrg});
        sc_.packets.push_back({a, tcp_datagram(a, s), what});
    }

private:
    static constexpr std::array<uint16_t, 8> kWindows{512, 1024, 2000, 4096, 8192, 29200, 64240, 65535};

    uint16_t payload_len() { return static_cast<uint16_t>(rng_.chance(15) ? rng_.between(500, 1200) : rng_.between(1, 300)); }
    uint8_t ack_flags() { return rng_.chance(50) ? kAck | kPsh : kAck; }
    TcpOptions syn_options(const TcpHost& h) {
        TcpOptions o;
        o.mss = true;
        o.wscale = h.wscale;
        o.sack_perm = h.sack_perm;
        o.timestamps = rng_.chance(30);
        return o;
    }
    bool scaling() const { return hosts_[0].wscale != kNoScale && hosts_[1].wscale != kNoScale; }
    uint32_t scaled_window(Side s) {
        const TcpHost& h = host(s);
        return scaling() ? uint32_t{h.win} << std::min<uint8_t>(h.wscale, 14) : h.win;
    }
    // The highest sequence number `receiver` allows the other side to send.
    uint32_t right_edge(Side receiver) { return host(receiver).rcv + scaled_window(receiver); }
    // The other side received everything `a` sent.
    void delivered(Side a) { host(other(a)).rcv = host(a).nxt; }

    Rng& rng_;
    Scenario& sc_;
    Flow flow_;
    std::array<TcpHost, 2> hosts_{};
};

void tcp_scenario(Rng& rng, Scenario& sc, const Flow& f, size_t length) {
    TcpScript t(rng, sc, f);
    switch (rng.below(20)) {
        case 0: case 1: case 2: case 3: case 4: case 5:
            sc.kind = "tcp/established";
            t.handshake();
            break;
        case 6: case 7:
            sc.kind = "tcp/simultaneous-open";
            t.simultaneous_open();
            break;
        case 8:
            sc.kind = "tcp/refused";
            t.syn(t.I());
            if (rng.chance(30)) t.syn(t.I(), "SYN retransmitted");
            t.refuse();
            break;
        case 9:
            sc.kind = "tcp/challenge-ack";
            t.syn(t.I());
            t.challenge_ack();
            break;
        case 10: {
            sc.kind = "tcp/handshake-variants";
            t.syn(t.I());
            switch (rng.below(6)) {
                case 0: t.syn_new_isn(t.I()); t.synack(t.R()); break;
                case 1: t.synack_wrong_ack(t.R()); t.synack(t.R()); break;
                case 2: t.synack(t.R()); t.data_at_edge(t.I()); break;
                case 3: t.synack(t.R()); t.fin_at_edge(t.I()); break;
                case 4: t.synack(t.R()); t.syn_new_isn(t.R()); break;
                default: t.synack(t.R()); t.synack(t.R(), "SYN-ACK retransmitted"); t.ack(t.I()); break;
            }
            break;
        }
        case 11: case 12: case 13:
            sc.kind = "tcp/close";
            t.handshake();
            if (rng.chance(60)) t.data(rng.chance(50) ? t.I() : t.R());
            t.close(rng.chance(70) ? t.I() : t.R());
            if (rng.chance(50)) t.syn_new_isn(rng.chance(80) ? t.I() : t.R());
            break;
        case 14: case 15:
            sc.kind = "tcp/reset";
            t.handshake();
            if (rng.chance(50)) t.data(rng.chance(50) ? t.I() : t.R());
            t.rst(rng.chance(50) ? t.I() : t.R());
            break;
        case 16:
            sc.kind = "tcp/half-closed";
            t.handshake();
            t.fin(rng.chance(50) ? t.I() : t.R());
            if (rng.chance(50)) t.syn_new_isn(t.I()); else t.syn(t.I(), "SYN on a half-closed connection");
            break;
        case 17:
            sc.kind = "tcp/midstream";
            switch (rng.below(4)) {
                case 0: t.ack(t.I(), "ACK without a connection"); break;
                case 1: t.data(t.I(), "data without a connection"); break;
                case 2: t.synack(t.R(), "SYN-ACK without a SYN"); break;
                default: t.fin(t.I(), "FIN without a connection"); break;
            }
            break;
        case 18:
            sc.kind = "tcp/bad-flags";
            if (rng.chance(60)) t.handshake();
            t.bad_flags(rng.chance(50) ? t.I() : t.R());
            break;
        default:
            sc.kind = "tcp/window";
            t.handshake();
            t.data_at_edge(t.I());
            t.data_at_edge(t.R());
            break;
    }
    while (t.size() < length) t.random_step();
}

// ------------------------------------------------------------------------------------------
// UDP and ICMP echo

void udp_scenario(Rng& rng, Scenario& sc, const Flow& f, size_t length) {
    sc.kind = "udp";
    const Side i = f.initiator, r = other(f.initiator);
    auto payload = [&] { return static_cast<uint16_t>(rng.between(0, 400)); };
    if (rng.chance(85)) sc.packets.push_back({i, udp_datagram(i, f.iport, f.rport, payload()), "request"});
    while (sc.packets.size() < length) {
        switch (rng.below(8)) {
            case 0: case 1: case 2:
                sc.packets.push_back({i, udp_datagram(i, f.iport, f.rport, payload()), "request"});
                break;
            case 3: case 4: case 5:
                sc.packets.push_back({r, udp_datagram(r, f.rport, f.iport, payload()), "reply"});
                break;
            case 6:
                sc.packets.push_back({r, udp_datagram(r, f.rport, f.stray, payload()), "reply to another port"});
                break;
            default:
                sc.packets.push_back({r, udp_datagram(r, static_cast<uint16_t>(f.rport ^ 1), f.iport, payload()), "reply from another port"});
                break;
        }
    }
}

void echo_scenario(Rng& rng, Scenario& sc, const Flow& f, size_t length) {
    sc.kind = "icmp/echo";
    const Side i = f.initiator, r = other(f.initiator);
    const uint8_t code = rng.chance(25) ? static_cast<uint8_t>(rng.between(1, 255)) : 0;
    uint16_t seq = 1;
    if (rng.chance(85)) sc.packets.push_back({i, echo_datagram(i, icmp::kEchoRequest, code, f.echo_id, seq), fmt::format("echo request code {}", code)});
    while (sc.packets.size() < length) {
        switch (rng.below(10)) {
            case 0: case 1: case 2:
                sc.packets.push_back({i, echo_datagram(i, icmp::kEchoRequest, code, f.echo_id, ++seq), "echo request"});
                break;
            case 3: case 4: case 5:
                sc.packets.push_back({r, echo_datagram(r, icmp::kEchoReply, code, f.echo_id, seq), "echo reply"});
                break;
            case 6: {
                const auto c = static_cast<uint8_t>(rng.between(1, 255));
                sc.packets.push_back({r, echo_datagram(r, icmp::kEchoReply, c, f.echo_id, seq), fmt::format("echo reply with code {}", c)});
                break;
            }
            case 7:
                sc.packets.push_back({r, echo_datagram(r, icmp::kEchoReply, code, f.stray, seq), "echo reply with another identifier"});
                break;
            case 8:
                sc.packets.push_back({r, echo_datagram(r, icmp::kEchoRequest, code, f.echo_id, seq), "echo request from the other side, same identifier"});
                break;
            default: {
                const auto c = static_cast<uint8_t>(rng.between(1, 255));
                sc.packets.push_back({i, echo_datagram(i, icmp::kEchoRequest, c, f.echo_id, ++seq), fmt::format("echo request with code {}", c)});
                break;
            }
        }
    }
}

// ICMP messages that are neither echo nor errors: timestamps, information and address mask
// requests and replies, router discovery, reserved and unassigned types.
void other_icmp_scenario(Rng& rng, Scenario& sc, const Flow& f, size_t length) {
    sc.kind = "icmp/other";
    static constexpr std::array<uint8_t, 14> kTypes{13, 14, 15, 16, 17, 18, 9, 10, 1, 2, 7, 19, 40, 253};
    while (sc.packets.size() < length) {
        const Side from = rng.chance(70) ? f.initiator : other(f.initiator);
        const uint8_t type = rng.pick(kTypes);
        sc.packets.push_back({from, echo_datagram(from, type, static_cast<uint8_t>(rng.chance(70) ? 0 : rng.below(256)), f.echo_id, 1),
                              fmt::format("icmp type {}", type)});
    }
}

// ------------------------------------------------------------------------------------------
// ICMP errors about a flow

// Quotes `quoted` (a datagram of the scenario) as an ICMP error would: its IP header and the
// first `l4_bytes` of what follows.
Bytes quote(const Bytes& quoted, size_t l4_bytes) {
    const size_t ihl = size_t{quoted[0] & 0x0fu} * 4;
    return Bytes(quoted.begin(), quoted.begin() + static_cast<ptrdiff_t>(std::min(quoted.size(), ihl + l4_bytes)));
}

void error_scenario(Rng& rng, Scenario& sc, const Flow& f, size_t length) {
    // The flow the errors are about, opened first.
    const uint32_t flow_kind = rng.below(3);
    if (flow_kind == 0) {
        sc.kind = "icmp/error-tcp";
        TcpScript t(rng, sc, f);
        t.syn(t.I());
        if (rng.chance(75)) t.synack(t.R());
        if (rng.chance(60)) t.ack(t.I());
    } else if (flow_kind == 1) {
        sc.kind = "icmp/error-udp";
        sc.packets.push_back({f.initiator, udp_datagram(f.initiator, f.iport, f.rport, 20), "request"});
        if (rng.chance(60)) sc.packets.push_back({other(f.initiator), udp_datagram(other(f.initiator), f.rport, f.iport, 20), "reply"});
    } else {
        sc.kind = "icmp/error-echo";
        sc.packets.push_back({f.initiator, echo_datagram(f.initiator, icmp::kEchoRequest, 0, f.echo_id, 1), "echo request"});
        if (rng.chance(60)) sc.packets.push_back({other(f.initiator), echo_datagram(other(f.initiator), icmp::kEchoReply, 0, f.echo_id, 1), "echo reply"});
    }
    const std::vector<Packet> flow = sc.packets;

    while (sc.packets.size() < length) {
        // Mostly the normal case: a host reports a problem with a datagram it received, so the
        // quote is a datagram the error's destination sent.
        const Packet& q = flow[rng.below(static_cast<uint32_t>(flow.size()))];
        Side from = other(q.from);
        Bytes inner = quote(q.ip, rng.chance(70) ? 8 : q.ip.size());
        std::string what = "quoting the flow";
        switch (rng.below(12)) {
            case 0:
                from = q.from;
                what = "quoting its own datagram (wrong direction)";
                break;
            case 1:  // another source port, or echo identifier
                set16(inner, inner[9] == ipproto::kIcmp ? 24 : 20, f.stray);
                what = "quoting an unknown flow";
                break;
            case 2: {
                const size_t keep = rng.pick(std::array<size_t, 4>{0, 2, 4, 6});
                inner = quote(q.ip, keep);
                what = fmt::format("quote truncated to {} bytes after the IP header", keep);
                break;
            }
            case 3:
                inner.resize(rng.between(8, 19));
                what = "quote truncated inside the IP header";
                break;
            case 4:
                inner[6] = 0x00, inner[7] = 0x10;  // fragment offset 16 (128 bytes)
                what = "quoting a non-first fragment";
                break;
            case 5:
                inner[9] = inner[9] == ipproto::kUdp ? ipproto::kTcp : ipproto::kUdp;
                what = "quote with another protocol";
                break;
            default:
                break;
        }
        uint8_t type = 0, code = 0;
        uint32_t rest = 0;
        switch (rng.below(8)) {
            case 0: case 1: case 2:
                type = icmp::kDestUnreachable;
                code = static_cast<uint8_t>(rng.chance(90) ? rng.below(16) : rng.between(16, 255));
                if (code == icmp::kFragmentationNeeded) rest = 1280;
                break;
            case 3: type = 4; break;  // source quench
            case 4: type = 5; code = static_cast<uint8_t>(rng.below(4)); rest = address_of(from).value; break;  // redirect
            case 5: type = icmp::kTimeExceeded; code = static_cast<uint8_t>(rng.below(2)); break;
            case 6: type = icmp::kParameterProblem; code = static_cast<uint8_t>(rng.below(3)); rest = 20u << 24; break;
            default: type = icmp::kDestUnreachable; code = icmp::kPortUnreachable; break;
        }
        sc.packets.push_back({from, icmp_datagram(from, type, code, rest, inner), fmt::format("icmp error {}/{} {}", type, code, what)});
        if (rng.chance(25) && sc.packets.size() < length) sc.packets.push_back(flow[rng.below(static_cast<uint32_t>(flow.size()))]);
    }
}

}  // namespace

Scenario make_scenario(uint64_t seed, uint32_t index) {
    Rng rng(seed * 0x100000001b3ull ^ (uint64_t{index} << 20) ^ index);
    Scenario sc;
    sc.index = index;
    const size_t length = rng.between(4, 12);
    const uint32_t what = rng.below(100);
    if (what < 66) {
        tcp_scenario(rng, sc, choose_flow(rng, index, 12), length);
    } else if (what < 74) {
        udp_scenario(rng, sc, choose_flow(rng, index, 25), length);
    } else if (what < 82) {
        echo_scenario(rng, sc, choose_flow(rng, index, 25), length);
    } else if (what < 85) {
        other_icmp_scenario(rng, sc, choose_flow(rng, index, 25), length);
    } else {
        error_scenario(rng, sc, choose_flow(rng, index, 15), length);
    }
    if (sc.packets.size() > length) sc.packets.resize(length);
    return sc;
}

void set_ip_id(Bytes& ip, uint16_t id) {
    set16(ip, 4, id);
    fill_checksum(ip, 0, size_t{ip[0] & 0x0fu} * 4, 10);
}

namespace {

std::string tcp_flags_text(uint8_t f) {
    std::string s;
    static constexpr std::array<std::pair<uint8_t, char>, 8> kNames{
        {{kSyn, 'S'}, {kAck, 'A'}, {kFin, 'F'}, {kRst, 'R'}, {kPsh, 'P'}, {kUrg, 'U'}, {kEce, 'E'}, {kCwr, 'C'}}};
    for (auto [bit, c] : kNames)
        if (f & bit) s += c;
    return s.empty() ? "none" : s;
}

std::string tcp_options_text(const Bytes& b, size_t at, size_t end) {
    std::string s;
    while (at < end) {
        const uint8_t kind = b[at];
        if (kind == 0) break;
        if (kind == 1) {
            ++at;
            continue;
        }
        if (at + 1 >= end || b[at + 1] < 2 || at + b[at + 1] > end) break;
        const uint8_t len = b[at + 1];
        if (kind == 3 && len == 3) s += fmt::format(" wscale={}", b[at + 2]);
        if (kind == 4) s += " sackok";
        if (kind == 8) s += " ts";
        if (kind == 5)
            for (size_t i = at + 2; i + 8 <= at + len; i += 8) s += fmt::format(" sack={}-{}", get32(b, i), get32(b, i + 4));
        at += len;
    }
    return s;
}

std::string l4_text(const Bytes& b, size_t at, size_t total, int depth) {
    const uint8_t proto = b[9];
    if (proto == ipproto::kTcp && total >= at + 20) {
        const size_t doff = static_cast<size_t>(b[at + 12] >> 4) * 4;
        return fmt::format("tcp {}>{} {} seq={} ack={} win={} len={}{}", get16(b, at), get16(b, at + 2), tcp_flags_text(b[at + 13]),
                           get32(b, at + 4), get32(b, at + 8), get16(b, at + 14), total - std::min(total, at + doff),
                           tcp_options_text(b, at + 20, std::min(total, at + doff)));
    }
    if ((proto == ipproto::kTcp || proto == ipproto::kUdp) && total >= at + 4)
        return fmt::format("{} {}>{} ({} bytes)", proto == ipproto::kTcp ? "tcp" : "udp", get16(b, at), get16(b, at + 2), total - at);
    if (proto == ipproto::kIcmp && total >= at + 8) {
        const uint8_t type = b[at];
        std::string s = fmt::format("icmp {}/{} id={}", type, b[at + 1], get16(b, at + 4));
        if (depth == 0 && (type == 3 || type == 4 || type == 5 || type == 11 || type == 12)) {
            const size_t inner = at + 8;
            if (total >= inner + 20) {
                const size_t ihl = size_t{b[inner] & 0x0fu} * 4;
                Bytes q(b.begin() + static_cast<ptrdiff_t>(inner), b.end());
                s += fmt::format(" [quote {}>{} frag={:#x} ihl={} {}]", Ipv4Addr{get32(b, inner + 12)}.to_string(),
                                 Ipv4Addr{get32(b, inner + 16)}.to_string(), get16(b, inner + 6), ihl,
                                 ihl >= 20 && q.size() >= ihl ? l4_text(q, ihl, q.size(), 1) : "-");
            } else {
                s += fmt::format(" [quote of {} bytes]", total - inner);
            }
        }
        return s;
    }
    return fmt::format("proto {} ({} bytes)", proto, total - std::min(total, at));
}

}  // namespace

std::string describe(const Packet& p) {
    const Bytes& b = p.ip;
    return fmt::format("{} {} id={}  ({})", p.from == Side::client ? "C>S" : "S>C", l4_text(b, 20, b.size(), 0), get16(b, 4), p.what);
}

}  // namespace calyx::difftest
