// Connection-tracking state machines. See conntrack_state.hpp for the contract.
//
// Where this differs from Linux (nf_conntrack_proto_tcp.c, loose=0, be_liberal=0):
// - A client's SYN-ACK in SYN_RECV is invalid unless the open was simultaneous.
// - A SYN in TIME_WAIT or CLOSE always answers `reopen`; Linux lets some of them through
//   untracked. Reopening runs the rules again, so this is never more permissive.
// - A segment that starts in window but overshoots the receiver's window is dropped; Linux
//   lets it pass untracked as a workaround for sloppy stacks.
// - An RST is always window-checked, also in the closing states, and an RST answering an SYN
//   or ACK that conntrack ignored is not recognised (no record of ignored packets is kept).
// - No resynchronisation after an ignored SYN: if both endpoints lost a connection that we
//   still hold as established, the new handshake passes but its final ACK is out of window,
//   until the entry expires. (Linux keeps the ignored SYN's numbers to adopt it; that costs
//   12 bytes per connection we do not have.)
// - SACK blocks are not read: the cumulative ACK bounds the window, which is at least as
//   strict. No retransmission counting (tcp_max_retrans) and no zero-window timeout.
// - UDP: every packet after a reply refreshes to udp_replied (Linux waits 2 s first).
#include "dp/conntrack_state.hpp"

#include <algorithm>
#include <cstring>

namespace calyx::dp {
namespace {

constexpr uint64_t kNsPerS = 1'000'000'000ull;
constexpr uint8_t kMaxWscale = 14;  // RFC 7323 2.3
constexpr uint8_t kTcpEce = 0x40, kTcpCwr = 0x80;

uint32_t expiry_s(uint64_t now_ns, uint32_t timeout_s) {
    // Round now up so that a timer never fires early.
    const uint64_t s = (now_ns + kNsPerS - 1) / kNsPerS + timeout_s;
    return static_cast<uint32_t>(std::min<uint64_t>(s, UINT32_MAX));
}

// Sequence-space comparisons, modulo 2^32 (RFC 1982).
bool before(uint32_t a, uint32_t b) {
    return static_cast<int32_t>(a - b) < 0;
}
bool after(uint32_t a, uint32_t b) {
    return before(b, a);
}

// Row of the state table a segment selects; RST wins over SYN, SYN over FIN, FIN over ACK.
enum TcpIndex : uint8_t { kSynSet, kSynAckSet, kFinSet, kAckSet, kRstSet, kNoneSet };

TcpIndex tcp_index(uint8_t f) {
    if (f & TcpHdr::kRst) return kRstSet;
    if (f & TcpHdr::kSyn) return (f & TcpHdr::kAck) ? kSynAckSet : kSynSet;
    if (f & TcpHdr::kFin) return kFinSet;
    if (f & TcpHdr::kAck) return kAckSet;
    return kNoneSet;
}

// The flag combinations real stacks send (PSH, ECE and CWR go with anything). Everything
// else (SYN+FIN, SYN+RST, a FIN without ACK, no flags) is a scan or an attack.
bool tcp_flags_valid(uint8_t f) {
    using H = TcpHdr;
    switch (f & ~(H::kPsh | kTcpEce | kTcpCwr)) {
        case H::kSyn:
        case H::kSyn | H::kUrg:
        case H::kSyn | H::kAck:
        case H::kRst:
        case H::kRst | H::kAck:
        case H::kFin | H::kAck:
        case H::kFin | H::kAck | H::kUrg:
        case H::kAck:
        case H::kAck | H::kUrg:
            return true;
        default:
            return false;
    }
}

// The TCP state table: [direction][segment kind][current state] -> next state, as Linux's
// tcp_conntracks. We sit in the middle and only guess each endpoint's state; kIv rejects a
// segment that no endpoint state explains, kIg lets one pass untracked because it may be
// right while we are out of sync (the endpoint's answer, which we do track, settles it).
// (No segment leads back to NONE, so sNO only names the first column.)
constexpr uint8_t sSS = 1, sSR = 2, sES = 3, sFW = 4, sCW = 5, sLA = 6, sTW = 7, sCL = 8, sS2 = 9,
                  kIv = 10, kIg = 11;
static_assert(sSS == static_cast<uint8_t>(TcpCtState::syn_sent) &&
              sCL == static_cast<uint8_t>(TcpCtState::close) &&
              sS2 == static_cast<uint8_t>(TcpCtState::syn_sent2) && kIv >= kTcpCtStateCount);
constexpr uint8_t kTcpTable[2][6][kTcpCtStateCount] = {
    {
        // original direction (client)
        //       sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2
        /*syn*/ {sSS, sSS, kIg, kIg, kIg, kIg, kIg, sSS, sSS, sS2},
        // SYN: opens, or is retransmitted; in TIME_WAIT/CLOSE it reopens (RFC 1122); on a
        // live connection the server answers it with a challenge ACK or RST.
        /*s-a*/ {kIv, kIv, sSR, kIv, kIv, kIv, kIv, kIv, kIv, sSR},
        // SYN-ACK from the client only in simultaneous open.
        /*fin*/ {kIv, kIv, sFW, sFW, sLA, sLA, sLA, sTW, sCL, kIv},
        /*ack*/ {sES, kIv, sES, sES, sCW, sCW, sTW, sTW, sCL, kIv},
        // ACK in SYN_SENT: no SYN-ACK seen yet, so nothing to acknowledge.
        /*rst*/ {kIv, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
        /*non*/ {kIv, kIv, kIv, kIv, kIv, kIv, kIv, kIv, kIv, kIv},
    },
    {
        // reply direction (server)
        //       sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2
        /*syn*/ {kIv, sS2, kIv, kIv, kIv, kIv, kIv, sSS, kIv, sS2},
        // SYN from the server: simultaneous open, or reopening TIME_WAIT with roles swapped.
        /*s-a*/ {kIv, sSR, kIg, kIg, kIg, kIg, kIg, kIg, kIg, sSR},
        // Late SYN-ACKs are retransmissions or answer an ignored SYN: pass untracked.
        /*fin*/ {kIv, kIv, sFW, sFW, sLA, sLA, sLA, sTW, sCL, kIv},
        /*ack*/ {kIv, kIg, sSR, sES, sCW, sCW, sTW, sTW, sCL, kIg},
        // ACK in SYN_SENT: a challenge ACK from a server that holds a stale connection.
        /*rst*/ {kIv, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL, sCL},
        /*non*/ {kIv, kIv, kIv, kIv, kIv, kIv, kIv, kIv, kIv, kIv},
    },
};

// Sequence space a segment occupies: its payload plus one for SYN and one for FIN.
uint32_t segment_end(const PacketInfo& p) {
    return p.seq + p.payload_len + ((p.tcp_flags & TcpHdr::kSyn) ? 1 : 0) +
           ((p.tcp_flags & TcpHdr::kFin) ? 1 : 0);
}

// How far below the receiver's highest sequence an ACK may lag (Linux MAXACKWINDOW).
uint32_t max_ack_window(const TcpPeer& sender) {
    return std::max<uint32_t>(sender.maxwin, 66000);
}

// Takes a side's numbers from its SYN or SYN-ACK.
void init_sender(TcpTrack& tr, int d, const PacketInfo& p, uint32_t end, Direction dir) {
    TcpPeer& s = tr.peer[d];
    s.end = s.maxend = end;
    s.maxwin = p.window ? p.window : 1;  // the window in a SYN is never scaled
    tr.flags[d] = 0;
    tr.scale[d] = 0;
    if (p.wscale != PacketInfo::kNoWscale) {
        tr.scale[d] = std::min(p.wscale, kMaxWscale);
        tr.flags[d] |= kPeerWindowScale;
    }
    // RFC 7323 2.2: scaling is on only if both SYNs carried the option.
    if (dir == Direction::reply &&
        !((tr.flags[0] & kPeerWindowScale) && (tr.flags[1] & kPeerWindowScale))) {
        tr.scale[0] = tr.scale[1] = 0;
    }
}

enum class Window { ok, ignore, out };

// Linux tcp_in_window(): the segment must intersect the receiver's window and may ACK only
// what the other side has sent. With s the sender and r the receiver:
//   I.   seq <= s.maxend                      (no data beyond what r announced)
//   II.  end >= s.end - r.maxwin              (not entirely below the window: else ignore)
//   III. ack <= r.end                         (no ACK of data r has not sent)
//   IV.  ack >= r.end - max(s.maxwin, 66000)  (not absurdly late: else ignore)
// May have written to `tr` when it fails: the caller passes a copy and keeps it only on ok.
Window tcp_in_window(TcpTrack& tr, Direction dir, TcpCtState old, const PacketInfo& p) {
    const int d = static_cast<int>(dir);
    TcpPeer& s = tr.peer[d];
    TcpPeer& r = tr.peer[1 - d];
    const bool syn = p.tcp_flags & TcpHdr::kSyn;
    const bool has_ack = p.tcp_flags & TcpHdr::kAck;
    const bool rst = p.tcp_flags & TcpHdr::kRst;
    uint32_t seq = p.seq;
    uint32_t ack = p.ack;
    uint32_t end = segment_end(p);
    uint32_t win = p.window;

    if (s.maxwin == 0) {
        if (syn) {
            init_sender(tr, d, p, end, dir);
            if (!has_ack) return Window::ok;  // the server's own SYN: simultaneous open
        } else {
            // First segment from this side without a SYN. Since connections are never picked
            // up mid-stream, this is the server refusing the SYN with an RST: take its
            // numbers as they come.
            s.end = end;
            const uint32_t swin = win << tr.scale[d];
            s.maxwin = swin ? swin : 1;
            s.maxend = end + s.maxwin;
        }
    } else if (syn && after(end, s.end) &&
               (old == TcpCtState::syn_sent || old == TcpCtState::syn_recv)) {
        // A SYN with a higher ISN: the endpoint restarted the handshake (RFC 793 lets a
        // reinitialised TCP reuse a tuple with larger sequence numbers).
        init_sender(tr, d, p, end, dir);
        if (dir == Direction::reply && !has_ack) return Window::ok;
    }

    // No ACK flag: nothing to check. RST|ACK with ack 0 comes from broken stacks.
    if (!has_ack || (rst && ack == 0)) ack = r.end;
    // An RST answering a SYN carries seq 0 (RFC 793 3.4).
    if (rst && seq == 0 && old == TcpCtState::syn_sent) seq = end = s.end;

    if (!before(seq, s.maxend + 1)) return Window::out;                             // I
    if (!before(ack, r.end + 1)) return Window::out;                                // III
    if (r.maxwin != 0 && !after(end, s.end - r.maxwin - 1)) return Window::ignore;  // II
    if (!after(ack, r.end - max_ack_window(s) - 1)) return Window::ignore;          // IV

    if (!syn) win <<= tr.scale[d];
    s.maxwin = std::max(s.maxwin, win);
    if (after(end, s.end)) {
        s.end = end;
        tr.flags[d] |= kPeerUnacked;
    }
    if (has_ack) {
        if (!(tr.flags[d] & kPeerMaxAckSet) || after(ack, s.maxack)) s.maxack = ack;
        tr.flags[d] |= kPeerMaxAckSet;
    }
    // The receiver evidently accepts more than it announced: widen its window.
    if (r.maxwin != 0 && after(end, s.maxend)) r.maxwin += end - s.maxend;
    if (after(ack + win, r.maxend - 1)) {
        r.maxend = ack + win;
        if (win == 0) ++r.maxend;  // let a zero-window probe through
    }
    if (ack == r.end) tr.flags[1 - d] &= ~kPeerUnacked;
    return Window::ok;
}

CtVerdict tcp_new(ConnState& st, const PacketInfo& p, const CtTimeouts& t, uint64_t now_ns) {
    if (!tcp_flags_valid(p.tcp_flags)) return CtVerdict::invalid_flags;
    // nf_conntrack_tcp_loose=0: only a bare SYN opens; a mid-stream ACK is never picked up.
    if (tcp_index(p.tcp_flags) != kSynSet) return CtVerdict::invalid_new;
    ConnState n{};
    n.proto = ipproto::kTcp;
    n.tcp_state = TcpCtState::syn_sent;
    init_sender(n.tcp, 0, p, segment_end(p), Direction::original);
    n.expires_s = expiry_s(now_ns, t.tcp_syn_sent);
    st = n;
    return CtVerdict::accept;
}

CtVerdict tcp_update(ConnState& st, Direction dir, const PacketInfo& p, const CtTimeouts& t,
                     uint64_t now_ns) {
    if (!tcp_flags_valid(p.tcp_flags)) return CtVerdict::invalid_flags;
    const int d = static_cast<int>(dir);
    const TcpIndex index = tcp_index(p.tcp_flags);
    const TcpCtState old = st.tcp_state;
    uint8_t next = kTcpTable[d][index][static_cast<uint8_t>(old)];
    bool check_window = true;

    switch (next) {
        case kIv:
            return CtVerdict::invalid_state;
        case kIg:
            // A server holding a stale connection on this tuple answers our SYN with a
            // challenge ACK (RFC 5961 4); the client then resets it with seq = that ACK.
            // Remember it so that RST can pass (it is outside any window we know).
            if (old == TcpCtState::syn_sent && index == kAckSet && dir == Direction::reply) {
                st.tcp.challenge_ack = p.ack;
                st.flags |= kConnChallengeAck;
            }
            return CtVerdict::ignore;
        case sSS:
            if (old == TcpCtState::time_wait || old == TcpCtState::close) return CtVerdict::reopen;
            break;
        case sSR:
            // Linux lets a client's SYN-ACK repeat in SYN_RECV for simultaneous open; outside
            // one the client never sends a SYN-ACK.
            if (index == kSynAckSet && dir == Direction::original &&
                !(st.flags & kConnSimultaneousOpen)) {
                return CtVerdict::invalid_state;
            }
            break;
        case sCL: {
            if (index != kRstSet) break;
            const TcpPeer& sender = st.tcp.peer[d];
            const TcpPeer& receiver = st.tcp.peer[1 - d];
            if (old == TcpCtState::syn_sent && dir == Direction::original &&
                (st.flags & kConnChallengeAck) && p.seq == st.tcp.challenge_ack) {
                check_window = false;  // the RST answering the challenge ACK
            } else if ((st.tcp.flags[1 - d] & kPeerMaxAckSet) &&
                       !(p.seq == 0 && old != TcpCtState::established)) {
                // RFC 5961 3.2: below what the receiver already acknowledged is stale.
                if (before(p.seq, receiver.maxack)) return CtVerdict::out_of_window;
                // In an established connection only the exact next sequence resets it; any
                // other in-window RST passes (the endpoint answers a challenge ACK) but the
                // state stays, on the short close timer.
                if (old == TcpCtState::established && p.seq != receiver.maxack &&
                    p.seq != sender.end) {
                    next = static_cast<uint8_t>(old);
                }
            }
            break;
        }
        default:
            break;
    }

    ConnState n = st;  // the packet changes nothing unless it is accepted
    if (check_window) {
        switch (tcp_in_window(n.tcp, dir, old, p)) {
            case Window::out:
                return CtVerdict::out_of_window;
            case Window::ignore:
                return CtVerdict::ignore;
            case Window::ok:
                break;
        }
    }

    auto next_state = static_cast<TcpCtState>(next);
    if (next_state == TcpCtState::syn_sent2) n.flags |= kConnSimultaneousOpen;
    // In simultaneous open the reply side's ACK of the SYN-ACK completes the handshake.
    if (next_state == TcpCtState::syn_recv && dir == Direction::reply && index == kAckSet &&
        (n.flags & kConnSimultaneousOpen)) {
        next_state = TcpCtState::established;
    }
    n.tcp_state = next_state;

    uint32_t timeout = tcp_timeout_s(t, next_state);
    if (index == kRstSet) {
        timeout = t.tcp_close;
    } else if (((n.tcp.flags[0] | n.tcp.flags[1]) & kPeerUnacked) &&
               timeout > t.tcp_unacknowledged) {
        timeout = t.tcp_unacknowledged;
    }
    if (!st.replied()) {
        if (index == kRstSet) {
            // Refused (or aborted) before any answer: nothing left to track. Long expired,
            // not dead (0): the key must stay visible to the sweep, which removes it (and a
            // masquerade mapping with it); a dead entry's key would never be freed.
            n.expires_s = 1;
            st = n;
            return CtVerdict::accept;
        }
        if (index == kSynSet && old == TcpCtState::syn_sent) {
            // Retransmitted SYNs do not extend the timer, or a client retrying an unanswered
            // port would hold its entry forever.
            st = n;
            return CtVerdict::accept;
        }
    }
    n.expires_s = expiry_s(now_ns, timeout);
    if (dir == Direction::reply) n.flags |= kConnSeenReply;
    st = n;
    return CtVerdict::accept;
}

}  // namespace

uint32_t tcp_timeout_s(const CtTimeouts& t, TcpCtState s) noexcept {
    switch (s) {
        case TcpCtState::none:
        case TcpCtState::syn_sent:
        case TcpCtState::syn_sent2:
            return t.tcp_syn_sent;
        case TcpCtState::syn_recv:
            return t.tcp_syn_recv;
        case TcpCtState::established:
            return t.tcp_established;
        case TcpCtState::fin_wait:
            return t.tcp_fin_wait;
        case TcpCtState::close_wait:
            return t.tcp_close_wait;
        case TcpCtState::last_ack:
            return t.tcp_last_ack;
        case TcpCtState::time_wait:
            return t.tcp_time_wait;
        case TcpCtState::close:
            return t.tcp_close;
    }
    return t.tcp_close;
}

namespace {

// Window scale from the TCP options (RFC 7323 2.2), or kNoWscale. Stops at the first
// malformed option, as Linux does.
uint8_t parse_wscale(const uint8_t* opt, size_t len) {
    size_t i = 0;
    while (i < len) {
        const uint8_t kind = opt[i];
        if (kind == 0) break;  // end of option list
        if (kind == 1) {       // no-operation
            ++i;
            continue;
        }
        if (len - i < 2) break;
        const uint8_t olen = opt[i + 1];
        if (olen < 2 || olen > len - i) break;
        if (kind == 3 && olen == 3) return std::min(opt[i + 2], kMaxWscale);
        i += olen;
    }
    return PacketInfo::kNoWscale;
}

}  // namespace

PacketInfo packet_info_from(const Ipv4Hdr& ip, const uint8_t* l4, size_t l4_len) noexcept {
    PacketInfo p;
    p.proto = ip.protocol;
    const size_t ihl = ip.header_length();
    const size_t total = ip.total_length.host();
    if (ihl < sizeof(Ipv4Hdr) || total < ihl || !ip.is_first_fragment() || l4 == nullptr) {
        p.malformed = true;
        return p;
    }
    // The IPv4 total length says where the datagram ends; what follows is link padding.
    const size_t avail = std::min(l4_len, total - ihl);

    switch (p.proto) {
        case ipproto::kTcp: {
            TcpHdr h;
            if (avail < sizeof h) break;
            std::memcpy(&h, l4, sizeof h);
            const size_t doff = h.header_length();
            if (doff < sizeof h || doff > avail) break;
            p.tcp_flags = h.flags;
            p.seq = h.seq.host();
            p.ack = h.ack.host();
            p.window = h.window.host();
            p.payload_len = static_cast<uint16_t>(avail - doff);
            // Options matter to conntrack only in SYNs (window scale); skip parsing elsewhere.
            if (h.flags & TcpHdr::kSyn) p.wscale = parse_wscale(l4 + sizeof h, doff - sizeof h);
            return p;
        }
        case ipproto::kUdp:
            if (avail < sizeof(UdpHdr)) break;
            return p;
        case ipproto::kIcmp: {
            IcmpHdr h;
            if (avail < sizeof h) break;
            std::memcpy(&h, l4, sizeof h);
            p.icmp_type = h.type;
            p.icmp_code = h.code;
            p.icmp_id = h.id.host();
            return p;
        }
        default:
            return p;  // other protocols are tracked by addresses alone
    }
    p.malformed = true;
    return p;
}

CtVerdict ct_new(ConnState& st, const PacketInfo& p, const CtTimeouts& t,
                 uint64_t now_ns) noexcept {
    if (p.malformed) return CtVerdict::malformed;
    ConnState n{};
    n.proto = p.proto;
    switch (p.proto) {
        case ipproto::kTcp:
            return tcp_new(st, p, t, now_ns);
        case ipproto::kUdp:
            n.expires_s = expiry_s(now_ns, t.udp_unreplied);
            break;
        case ipproto::kIcmp:
            // Only echo opens; errors belong to the connection they quote.
            if (p.icmp_type != icmp::kEchoRequest) return CtVerdict::invalid_new;
            n.icmp_id = p.icmp_id;
            n.expires_s = expiry_s(now_ns, t.icmp);
            break;
        default:
            n.expires_s = expiry_s(now_ns, t.generic);
            break;
    }
    st = n;
    return CtVerdict::accept;
}

CtVerdict ct_update(ConnState& st, Direction dir, const PacketInfo& p, const CtTimeouts& t,
                    uint64_t now_ns) noexcept {
    if (ct_expired(st, now_ns)) return CtVerdict::expired;
    if (p.malformed) return CtVerdict::malformed;
    if (p.proto != st.proto) return CtVerdict::invalid_state;
    const bool reply = dir == Direction::reply;
    uint32_t timeout = 0;
    switch (p.proto) {
        case ipproto::kTcp:
            return tcp_update(st, dir, p, t, now_ns);
        case ipproto::kUdp:
            timeout = (reply || st.replied()) ? t.udp_replied : t.udp_unreplied;
            break;
        case ipproto::kIcmp: {
            // The request goes one way, the reply with the same identifier the other.
            const uint8_t expected = reply ? icmp::kEchoReply : icmp::kEchoRequest;
            if (p.icmp_type != expected || p.icmp_id != st.icmp_id) {
                return CtVerdict::invalid_state;
            }
            timeout = t.icmp;
            break;
        }
        default:
            timeout = t.generic;
            break;
    }
    if (reply) st.flags |= kConnSeenReply;
    st.expires_s = expiry_s(now_ns, timeout);
    return CtVerdict::accept;
}

bool ct_expired(const ConnState& st, uint64_t now_ns) noexcept {
    return now_ns >= ct_expires_ns(st);
}

std::string_view to_string(TcpCtState s) noexcept {
    switch (s) {
        case TcpCtState::none:
            return "NONE";
        case TcpCtState::syn_sent:
            return "SYN_SENT";
        case TcpCtState::syn_recv:
            return "SYN_RECV";
        case TcpCtState::established:
            return "ESTABLISHED";
        case TcpCtState::fin_wait:
            return "FIN_WAIT";
        case TcpCtState::close_wait:
            return "CLOSE_WAIT";
        case TcpCtState::last_ack:
            return "LAST_ACK";
        case TcpCtState::time_wait:
            return "TIME_WAIT";
        case TcpCtState::close:
            return "CLOSE";
        case TcpCtState::syn_sent2:
            return "SYN_SENT2";
    }
    return "?";
}

std::string_view to_string(CtVerdict v) noexcept {
    switch (v) {
        case CtVerdict::accept:
            return "accept";
        case CtVerdict::ignore:
            return "ignore";
        case CtVerdict::reopen:
            return "reopen";
        case CtVerdict::expired:
            return "expired";
        case CtVerdict::invalid_new:
            return "invalid_new";
        case CtVerdict::invalid_flags:
            return "invalid_flags";
        case CtVerdict::invalid_state:
            return "invalid_state";
        case CtVerdict::out_of_window:
            return "out_of_window";
        case CtVerdict::malformed:
            return "malformed";
    }
    return "?";
}

}  // namespace calyx::dp
