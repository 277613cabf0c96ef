// Connection tracking, per-connection part: the protocol state machines that decide whether a
// packet of a tracked connection is valid, and advance the connection's state.
//
// Pure logic over a small struct: no DPDK, no allocation, no exceptions, time passed in. The
// connection table (rte_hash) stores one ConnState per connection and calls
//   ct_new()    on the first packet of a connection, after the security-group rules allowed it;
//   ct_update() on every later packet, in the direction it was seen in.
//
// TCP follows Linux nf_conntrack_proto_tcp.c with nf_conntrack_tcp_loose=0 and
// tcp_be_liberal=0: the same state table (SYN, SYN-ACK, FIN, ACK, RST, none x 10 states,
// including SYN_SENT2 for simultaneous open), the same window tracking after Guido van
// Rooij's "Real Stateful TCP Packet Filtering" (td_end, td_maxend, td_maxwin per direction,
// window scaling from the SYN options), RST accepted only in window (RFC 5961 exact-sequence
// rule in ESTABLISHED), and the same timeouts. Where it differs it is stricter; see the notes
// in conntrack_state.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "calyx/conntrack_timeouts.hpp"
#include "calyx/headers.hpp"

namespace calyx::dp {

// original: the direction of the packet that created the connection; reply: the other one.
enum class Direction : uint8_t { original = 0, reply = 1 };

// What ct_new / ct_update decided. accept and ignore forward the packet; reopen and expired
// mean "there is no live connection for this packet"; every other verdict drops it, and the
// lead maps each to one DropReason.
enum class CtVerdict : uint8_t {
    accept,         // valid; state and expiry updated
    ignore,         // forward, but the state did not advance and the timer was not refreshed.
                    // Packets our view may be out of sync on (Linux "sIG"/NFCT_TCP_IGNORE): a
                    // SYN on an established connection (the server answers with a challenge ACK
                    // or RST that we do track), a retransmitted SYN-ACK, an ACK answering a SYN
                    // in SYN_SENT, data entirely below the window, a very late ACK
    reopen,         // a SYN on a connection in TIME_WAIT or CLOSE (RFC 1122 4.2.2.13): delete
                    // the entry and handle the packet as the first of a new connection (rules
                    // and ct_new again, from this packet's own direction)
    expired,        // the entry's timer ran out: treat exactly like reopen (delete, then the
                    // packet is a first packet: ct_new accepts only connection openers)
    invalid_new,    // may not open a connection: TCP other than a bare SYN (no mid-stream
                    // pickup), ICMP other than echo request (errors are associated with their
                    // connection by the caller, never tracked themselves)
    invalid_flags,  // TCP flag combination no stack sends (SYN+FIN, SYN+RST, FIN without ACK,
                    // no flags at all, ...), whatever the state
    invalid_state,  // valid flags, wrong moment: SYN-ACK from the client, FIN or ACK before
                    // the handshake, ICMP echo reply in the original direction or with
                    // another identifier, a packet of another protocol than the connection's
    out_of_window,  // TCP sequence or acknowledgment outside what the peers can have sent or
                    // announced, or an RST that is not in window; the state is NOT changed
    malformed,      // PacketInfo marked malformed (truncated L4 header, bad TCP data offset,
                    // non-first fragment): map to l4_malformed
};

// Forwarded (true) or dropped / to be re-created (false).
constexpr bool ct_passes(CtVerdict v) {
    return v == CtVerdict::accept || v == CtVerdict::ignore;
}

// Linux's names and order (TCP_CONNTRACK_*), so `conntrack -L` readers feel at home.
enum class TcpCtState : uint8_t {
    none,         // not a TCP connection, or not started
    syn_sent,     // SYN seen from the original side
    syn_recv,     // SYN-ACK seen
    established,  // ACK of the SYN-ACK seen
    fin_wait,     // FIN seen from one side
    close_wait,   // that FIN ACKed
    last_ack,     // FIN seen from both sides
    time_wait,    // last FIN ACKed
    close,        // RST seen
    syn_sent2,    // SYN from the reply side too: simultaneous open
};
inline constexpr size_t kTcpCtStateCount = 10;

// Per-state lifetimes in seconds (Linux defaults): the struct dataplane.conntrack fills, so the
// data plane reads exactly what the configuration says.
using CtTimeouts = ConntrackTimeouts;

// Lifetime in seconds of a TCP connection that enters `s`.
uint32_t tcp_timeout_s(const CtTimeouts& t, TcpCtState s) noexcept;

// What the pipeline extracts from a packet for the state machines; see packet_info_from().
struct PacketInfo {
    static constexpr uint8_t kNoWscale = 0xff;

    uint8_t proto = 0;       // IP protocol
    bool malformed = false;  // the L4 header could not be read: ct_* answer `malformed`
    // TCP
    uint8_t tcp_flags = 0;       // TcpHdr::flags as on the wire (FIN..URG, ECE, CWR)
    uint8_t wscale = kNoWscale;  // window scale option, read from SYNs only; capped at 14
    uint32_t seq = 0;
    uint32_t ack = 0;
    uint16_t window = 0;       // as on the wire, unscaled
    uint16_t payload_len = 0;  // TCP payload bytes (from the IPv4 total length)
    // ICMP
    uint8_t icmp_type = 0;
    uint8_t icmp_code = 0;
    uint16_t icmp_id = 0;  // echo identifier
};

// Reads a PacketInfo from an IPv4 packet whose L4 header starts at `l4`, with `l4_len` bytes
// readable there. Lengths come from the IPv4 header (Ethernet padding is not payload) and
// are bounded by l4_len. Non-first fragments have no L4 header and come back malformed: the
// fragment stage must settle them before conntrack. A first fragment reports only the payload
// it carries, which would make the peer's ACK look beyond the window: TCP is not expected to
// be fragmented (DF), so the caller may drop or track such packets as it chooses.
PacketInfo packet_info_from(const Ipv4Hdr& ip, const uint8_t* l4, size_t l4_len) noexcept;

// Per-direction TCP window data, as Linux struct ip_ct_tcp_state (flags and scale kept
// apart in TcpTrack so this stays 16 bytes without padding).
struct TcpPeer {
    uint32_t end;     // td_end: highest seq + len this side sent
    uint32_t maxend;  // td_maxend: highest ack + window the other side announced
    uint32_t maxwin;  // td_maxwin: largest window this side announced (0: side not seen yet)
    uint32_t maxack;  // td_maxack: highest ACK this side sent (valid if kPeerMaxAckSet)
};

struct TcpTrack {
    TcpPeer peer[2];         // [Direction::original], [Direction::reply]
    uint8_t scale[2];        // window scale (0 unless both SYNs carried the option)
    uint8_t flags[2];        // kPeer* bits
    uint32_t challenge_ack;  // ACK number of a reply-side ACK seen in SYN_SENT (see .cpp)
};

// TcpTrack::flags bits
inline constexpr uint8_t kPeerWindowScale = 0x01;  // this side's SYN had the wscale option
inline constexpr uint8_t kPeerMaxAckSet = 0x02;    // maxack holds a value
inline constexpr uint8_t kPeerUnacked = 0x04;      // this side has data the other has not ACKed

// ConnState::flags bits
inline constexpr uint8_t kConnSeenReply = 0x01;         // a reply-direction packet was accepted
inline constexpr uint8_t kConnSimultaneousOpen = 0x02;  // TCP went through syn_sent2
inline constexpr uint8_t kConnChallengeAck = 0x04;      // TcpTrack::challenge_ack is set

// One tracked connection's protocol state. Trivially copyable, zero is a valid empty state.
// Expiry is whole seconds on the now_ns clock (now_ns / 1e9), rounded up when set, so a
// connection never expires early and at most 1 s late; 32 bits of seconds last 136 years.
struct ConnState {
    uint32_t expires_s;  // expired once now_ns >= expires_s * 1e9; 0: dead
    uint8_t proto;       // IP protocol
    TcpCtState tcp_state;
    uint8_t flags;  // kConn* bits
    uint8_t spare;  // free for the table (zeroed by ct_new, never read here)
    union {
        TcpTrack tcp;      // proto TCP
        uint16_t icmp_id;  // proto ICMP: the echo identifier
    };

    bool replied() const { return (flags & kConnSeenReply) != 0; }
};
static_assert(sizeof(TcpPeer) == 16);
static_assert(sizeof(TcpTrack) == 40);
static_assert(sizeof(ConnState) <= 48, "a tracked connection must fit in 128 bytes");

// Initialises `st` from the first packet of a connection (Direction::original). On anything
// but accept, `st` is left untouched and no connection must be created.
CtVerdict ct_new(ConnState& st, const PacketInfo& p, const CtTimeouts& t, uint64_t now_ns) noexcept;

// Checks a packet of an existing connection seen in direction `dir` and advances `st`.
// `st` changes only on accept (and, on ignore, for bookkeeping that does not move the
// state). An expired `st` answers `expired` without looking at the packet.
CtVerdict ct_update(ConnState& st, Direction dir, const PacketInfo& p, const CtTimeouts& t,
                    uint64_t now_ns) noexcept;

bool ct_expired(const ConnState& st, uint64_t now_ns) noexcept;

// When the connection expires, on the now_ns clock.
inline uint64_t ct_expires_ns(const ConnState& st) {
    return uint64_t{st.expires_s} * 1'000'000'000ull;
}

std::string_view to_string(TcpCtState s) noexcept;  // "ESTABLISHED", as Linux prints it
std::string_view to_string(CtVerdict v) noexcept;   // "out_of_window"

}  // namespace calyx::dp
