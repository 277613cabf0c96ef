// Connection tracking, per-connection part: the protocol state machines that decide whether a
// packet of a tracked connection is valid, and advance the connection's state.
//
// Pure logic over a small struct: no DPDK, no allocation, no exceptions, time passed in. The
// connection table (rte_hash) stores one ConnState per connection and calls
//   ct_new()    on the first packet of a connection, after the security-group rules allowed it;
//   ct_update() on every later packet, in the direction it was seen in.
//
// TCP is Linux's nf_conntrack_proto_tcp.c with nf_conntrack_tcp_loose=0 and tcp_be_liberal=0,
// decision for decision: the same state table (SYN, SYN-ACK, FIN, ACK, RST, none x 10 states,
// SYN_SENT2 for simultaneous open), the same window tracking after Guido van Rooij's "Real
// Stateful TCP Packet Filtering" (td_end, td_maxend, td_maxwin per direction, window scaling
// from the SYN options, unscaled SYN windows, SACK blocks bounded like ACKs), the same
// bookkeeping of the last packet (reopening, resynchronising after an ignored SYN, challenge
// ACKs, RST trains) and the same timeouts. ICMP echo matches Linux's tuples (identifier and
// code, either host may ping). tests/differential compares the verdicts with the kernel's,
// packet for packet; doc/architecture.md lists where calyx differs on purpose.
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
// mean "there is no live connection for this packet"; new_flow asks the caller for a rule
// check; every other verdict drops it, and the caller maps each to one DropReason.
enum class CtVerdict : uint8_t {
    accept,         // valid; state and expiry updated
    ignore,         // forward, but the state did not advance and the timer was not refreshed.
                    // Packets our view may be out of sync on (Linux "sIG"/NFCT_TCP_IGNORE): a
                    // SYN on an established connection (the server answers with a challenge ACK
                    // or RST that we do track), a retransmitted SYN-ACK, an ACK answering a SYN
                    // in SYN_SENT, data entirely below the window, a very late ACK, a few bytes
                    // beyond the window. Only Linux's bookkeeping of such packets is kept.
    reopen,         // a SYN on a connection in TIME_WAIT or CLOSE that Linux would reopen (a
                    // side closed it with FIN, or this side reset it): delete the entry and
                    // handle the packet as the first of a new connection (rules and ct_new
                    // again, from this packet's own direction)
    expired,        // the entry's timer ran out: treat exactly like reopen (delete, then the
                    // packet is a first packet: ct_new accepts only connection openers)
    new_flow,       // an ICMP echo request that Linux tracks as a connection of its own but that
                    // shares this entry's key (the other host pings with the same identifier,
                    // or a request with another code): check the rules as for a first packet
                    // in the packet's direction, then ct_add_flow() it
    invalid_new,    // may not open a connection: TCP other than a bare SYN (no mid-stream
                    // pickup), ICMP other than echo request (errors are associated with their
                    // connection by the caller, never tracked themselves)
    invalid_flags,  // TCP flag combination no stack sends (SYN+FIN, SYN+RST, FIN without ACK,
                    // no flags at all, ...), whatever the state
    invalid_state,  // valid flags, wrong moment: SYN-ACK from the client, FIN or ACK before
                    // the handshake, an ICMP echo reply to no request (or with another code),
                    // a packet of another protocol than the connection's
    out_of_window,  // TCP sequence or acknowledgment outside what the peers can have sent or
                    // announced, or an RST that is not in window; the state does not advance
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
    // tcp_options bits
    static constexpr uint8_t kOptions = 0x01;   // the header has options (data offset > 5)
    static constexpr uint8_t kSackPerm = 0x02;  // SACK permitted (read from SYNs only)
    static constexpr uint8_t kSack = 0x04;      // SACK blocks: `sack` holds their right edge

    uint8_t proto = 0;       // IP protocol
    bool malformed = false;  // the L4 header could not be read: ct_* answer `malformed`
    // TCP
    uint8_t tcp_flags = 0;       // TcpHdr::flags as on the wire (FIN..URG, ECE, CWR)
    uint8_t wscale = kNoWscale;  // window scale option, read from SYNs only; capped at 14
    uint32_t seq = 0;
    uint32_t ack = 0;
    uint16_t window = 0;       // as on the wire, unscaled
    uint16_t payload_len = 0;  // TCP payload bytes (from the IPv4 total length)
    uint8_t tcp_options = 0;   // k* bits above
    uint32_t sack = 0;         // highest right edge of the first SACK option's blocks
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

// Per-direction TCP window data, as Linux struct ip_ct_tcp_state (its flags and scale are
// packed in TcpTrack so that a connection fits its 64-byte table entry).
struct TcpPeer {
    uint32_t end;     // td_end: highest seq + len this side sent
    uint32_t maxend;  // td_maxend: highest ack + window the other side announced
    uint32_t maxwin;  // td_maxwin: largest window this side announced (0: side not seen yet)
    uint32_t maxack;  // td_maxack: highest ACK this side sent (valid if kPeerMaxAckSet). In
                      // SYN_SENT the reply side's holds Linux's last_ack: the ACK number of an
                      // ACK that answered the SYN (a challenge ACK), without kPeerMaxAckSet.
};

struct TcpTrack {
    TcpPeer peer[2];     // [Direction::original], [Direction::reply]
    uint32_t last_end;   // Linux last_end: seq + len of the last ignored packet, or of the last
                         // accepted packet whose index was ACK
    uint16_t last_win;   // Linux last_win: the window of the last ignored packet
    uint8_t scales;      // window scale per side: original in bits 0-3, reply in bits 4-7
    uint8_t peer_flags;  // kPeer* bits per side: original in bits 0-3, reply in bits 4-7
};

// TcpTrack::peer_flags bits of one side (Linux IP_CT_TCP_FLAG_*)
inline constexpr uint8_t kPeerWindowScale = 0x01;  // this side's SYN had the wscale option
inline constexpr uint8_t kPeerSackPerm = 0x02;     // this side's SYN permitted SACK
inline constexpr uint8_t kPeerMaxAckSet = 0x04;    // maxack holds a value
inline constexpr uint8_t kPeerUnacked = 0x08;      // this side has data the other has not ACKed

// ConnState::flags bits
inline constexpr uint8_t kConnSeenReply = 0x01;  // a reply-direction packet passed
// TCP (Linux's ct status and last_flags bits)
inline constexpr uint8_t kConnAssured = 0x02;          // the handshake completed (IPS_ASSURED)
inline constexpr uint8_t kConnCloseInit = 0x04;        // a side sent the first FIN
inline constexpr uint8_t kConnSimultaneousOpen = 0x08;  // went through syn_sent2
inline constexpr uint8_t kConnExpChallengeAck = 0x10;  // a SYN was ignored in LAST_ACK
inline constexpr uint8_t kConnLastWscale = 0x20;       // the last ignored SYN had wscale
inline constexpr uint8_t kConnLastSackPerm = 0x40;     // ... and SACK permitted
// ICMP echo: Linux tracks (addresses, identifier, type, code), so a reply must carry the code
// of a request it answers, and both hosts may ping with one identifier. Each side's request
// codes are kept, the latest kEchoCodes of them (pings use code 0; a side that cycles through
// more codes within the ICMP timeout loses the replies to its oldest ones).
inline constexpr size_t kEchoCodes = 16;
struct IcmpTrack {
    uint16_t id;                         // echo identifier (the table key holds it too)
    uint8_t count[2];                    // request codes kept per side: [Direction]
    uint8_t codes[2][kEchoCodes];        // the codes, oldest first
};

// One tracked connection's protocol state. Trivially copyable, zero is a valid empty state.
// Expiry is whole seconds on the now_ns clock (now_ns / 1e9), rounded up when set, so a
// connection never expires early and at most 1 s late; 32 bits of seconds last 136 years.
struct ConnState {
    uint32_t expires_s;  // expired once now_ns >= expires_s * 1e9; 0: dead
    uint8_t proto;       // IP protocol
    TcpCtState tcp_state;
    uint8_t flags;     // kConn* bits
    uint8_t tcp_last;  // TCP: Linux last_index (bits 0-2), last_dir (bit 3), last_wscale (4-7)
    union {
        TcpTrack tcp;    // proto TCP
        IcmpTrack icmp;  // proto ICMP (echo)
    };

    bool replied() const { return (flags & kConnSeenReply) != 0; }
};
static_assert(sizeof(TcpPeer) == 16);
static_assert(sizeof(TcpTrack) == 40);
static_assert(sizeof(IcmpTrack) <= sizeof(TcpTrack));
static_assert(sizeof(ConnState) <= 48, "a tracked connection must fit in its 64-byte entry");

// Initialises `st` from the first packet of a connection (Direction::original). On anything
// but accept, `st` is left untouched and no connection must be created.
CtVerdict ct_new(ConnState& st, const PacketInfo& p, const CtTimeouts& t, uint64_t now_ns) noexcept;

// Checks a packet of an existing connection seen in direction `dir` and advances `st`.
// The state advances only on accept; on other verdicts `st` keeps at most Linux's
// bookkeeping of the packet (what the last packet was, a challenge ACK's number, a window
// Linux widens for a segment it lets through). An expired `st` answers `expired` without
// looking at the packet.
CtVerdict ct_update(ConnState& st, Direction dir, const PacketInfo& p, const CtTimeouts& t,
                    uint64_t now_ns) noexcept;

// After new_flow and a rule check that allowed it: adds the echo request's flow to `st`.
void ct_add_flow(ConnState& st, Direction dir, const PacketInfo& p, const CtTimeouts& t,
                 uint64_t now_ns) noexcept;

// Whether an ICMP error may quote the ICMP echo message `quoted` sent in direction `dir` of
// `st`: it must belong to one of its flows, as Linux matches the quote's inverted tuple.
bool ct_icmp_quote_matches(const ConnState& st, Direction dir, const PacketInfo& quoted) noexcept;

bool ct_expired(const ConnState& st, uint64_t now_ns) noexcept;

// When the connection expires, on the now_ns clock.
inline uint64_t ct_expires_ns(const ConnState& st) {
    return uint64_t{st.expires_s} * 1'000'000'000ull;
}

std::string_view to_string(TcpCtState s) noexcept;  // "ESTABLISHED", as Linux prints it
std::string_view to_string(CtVerdict v) noexcept;   // "out_of_window"

}  // namespace calyx::dp
