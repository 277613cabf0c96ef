// Connection-tracking state machines. See conntrack_state.hpp for the contract.
//
// TCP follows nf_conntrack_tcp_packet() and tcp_in_window() of Linux 6.x step by step (the
// comments name Linux's variables), with loose=0, be_liberal=0, ignore_invalid_rst=0. Linux's
// ip_ct_tcp is packed into TcpTrack, ConnState::flags and ConnState::tcp_last. Left out, because
// they only change timeouts, never a verdict: the retransmission counter (tcp_max_retrans and
// its 5-minute timeout) and the 5-minute timeout after a zero window. Linux's SYN proxy and NAT
// sequence adjustment do not exist here.
//
// Where calyx decides differently on purpose (ICMP redirects and source quench, short quotes
// in ICMP errors) is in dp/policy.cpp and doc/architecture.md.
// UDP: every packet after a reply refreshes to udp_replied (Linux waits 2 s first).
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

// The TCP state table: [direction][segment kind][current state] -> next state, Linux's
// tcp_conntracks. We sit in the middle and only guess each endpoint's state; kIv rejects a
// segment that no endpoint state explains, kIg lets one pass untracked because it may be
// right while we are out of sync (the endpoint's answer, which we do track, settles it).
// (No segment leads back to NONE, so sNO only names the first column.)
constexpr uint8_t sSS = 1, sSR = 2, sES = 3, sFW = 4, sCW = 5, sLA = 6, sTW = 7, sCL = 8,
                  sS2 = 9, kIv = 10, kIg = 11;
static_assert(sSS == static_cast<uint8_t>(TcpCtState::syn_sent) &&
              sCL == static_cast<uint8_t>(TcpCtState::close) &&
              sS2 == static_cast<uint8_t>(TcpCtState::syn_sent2) && kIv >= kTcpCtStateCount);
constexpr uint8_t kTcpTable[2][6][kTcpCtStateCount] = {
    {
        // original direction (client)
        //       sNO  sSS  sSR  sES  sFW  sCW  sLA  sTW  sCL  sS2
        /*syn*/ {sSS, sSS, kIg, kIg, kIg, kIg, kIg, sSS, sSS, sS2},
        // SYN: opens, or is retransmitted; in TIME_WAIT/CLOSE it may reopen (RFC 1122); on a
        // live connection the server answers it with a challenge ACK or RST.
        /*s-a*/ {kIv, kIv, sSR, kIv, kIv, kIv, kIv, kIv, kIv, sSR},
        // SYN-ACK from the client only in simultaneous open (or its retransmission).
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

// --- Linux's per-connection fields, packed ----------------------------------------------------

uint8_t scale_of(const TcpTrack& t, int d) { return (t.scales >> (4 * d)) & 0x0f; }
void set_scale(TcpTrack& t, int d, uint8_t s) {
    t.scales = static_cast<uint8_t>((t.scales & (0xf0 >> (4 * d))) | (s << (4 * d)));
}
uint8_t flags_of(const TcpTrack& t, int d) { return (t.peer_flags >> (4 * d)) & 0x0f; }
bool has(const TcpTrack& t, int d, uint8_t f) { return (flags_of(t, d) & f) != 0; }
void set_flags(TcpTrack& t, int d, uint8_t f) { t.peer_flags |= static_cast<uint8_t>(f << (4 * d)); }
void clear_flags(TcpTrack& t, int d, uint8_t f) { t.peer_flags &= static_cast<uint8_t>(~(f << (4 * d))); }
void assign_flags(TcpTrack& t, int d, uint8_t f) {
    t.peer_flags = static_cast<uint8_t>((t.peer_flags & (0xf0 >> (4 * d))) | (f << (4 * d)));
}

TcpIndex last_index(const ConnState& st) { return static_cast<TcpIndex>(st.tcp_last & 0x07); }
int last_dir(const ConnState& st) { return (st.tcp_last >> 3) & 1; }
uint8_t last_wscale(const ConnState& st) { return st.tcp_last >> 4; }
void set_last(ConnState& st, TcpIndex index, int d) {
    st.tcp_last = static_cast<uint8_t>((st.tcp_last & 0xf0) | index | (d << 3));
}
void set_last_wscale(ConnState& st, uint8_t ws) {
    st.tcp_last = static_cast<uint8_t>((st.tcp_last & 0x0f) | (ws << 4));
}

// Linux's last_flags bits that live in ConnState::flags; "last_flags = 0" clears them all.
constexpr uint8_t kLastFlags = kConnSimultaneousOpen | kConnExpChallengeAck | kConnLastWscale | kConnLastSackPerm;

// Sequence space a segment occupies: its payload plus one for SYN and one for FIN.
uint32_t segment_end(const PacketInfo& p) {
    return p.seq + p.payload_len + ((p.tcp_flags & TcpHdr::kSyn) ? 1 : 0) +
           ((p.tcp_flags & TcpHdr::kFin) ? 1 : 0);
}

// How far below the receiver's highest sequence an ACK may lag (Linux MAXACKWINDOW).
uint32_t max_ack_window(const TcpPeer& sender) {
    return std::max<uint32_t>(sender.maxwin, 66000);
}

// Linux tcp_options(): a segment with options replaces its sender's window scale and SACK
// permission; one without any options leaves them as they were.
void take_options(TcpTrack& t, int d, const PacketInfo& p) {
    if (!(p.tcp_options & PacketInfo::kOptions)) return;
    set_scale(t, d, 0);
    assign_flags(t, d, 0);
    if (p.tcp_options & PacketInfo::kSackPerm) set_flags(t, d, kPeerSackPerm);
    if (p.wscale != PacketInfo::kNoWscale) {
        set_scale(t, d, std::min(p.wscale, kMaxWscale));
        set_flags(t, d, kPeerWindowScale);
    }
}

// Linux tcp_init_sender(): a side's numbers from its SYN or SYN-ACK. The window of a SYN is
// never scaled.
void init_sender(TcpTrack& t, int d, const PacketInfo& p, uint32_t end) {
    TcpPeer& s = t.peer[d];
    s.end = s.maxend = end;
    s.maxwin = p.window ? p.window : 1;
    take_options(t, d, p);
    // RFC 7323 2.2: scaling is on only if both SYNs carried the option.
    if (d == static_cast<int>(Direction::reply) &&
        !(has(t, d, kPeerWindowScale) && has(t, 1 - d, kPeerWindowScale))) {
        set_scale(t, 0, 0);
        set_scale(t, 1, 0);
    }
}

enum class Window { ok, ignore, invalid };

// Linux tcp_in_window(): the segment must intersect the receiver's window and may ACK (or
// SACK) only what the other side has sent. With s the sender and r the receiver:
//   I.   seq <= s.maxend                      (no data beyond what r announced)
//   II.  end >= s.end - r.maxwin              (not entirely below the window: else ignore)
//   III. sack <= r.end                        (no ACK of data r has not sent)
//   IV.  sack >= r.end - max(s.maxwin, 66000) (not absurdly late: else ignore)
// Like Linux it writes to `st` as it goes: a SYN's numbers are taken before the checks, and a
// segment that overshoots the window by less than the window passes (ignore) with its end.
Window tcp_in_window(ConnState& st, int d, TcpIndex index, const PacketInfo& p) {
    TcpTrack& t = st.tcp;
    TcpPeer& s = t.peer[d];
    TcpPeer& r = t.peer[1 - d];
    const bool syn = p.tcp_flags & TcpHdr::kSyn;
    const bool has_ack = p.tcp_flags & TcpHdr::kAck;
    const bool rst = p.tcp_flags & TcpHdr::kRst;
    uint32_t seq = p.seq;
    uint32_t ack = p.ack;
    uint32_t end = segment_end(p);
    uint32_t win = p.window;
    uint32_t sack = ack;
    if (has(t, 1 - d, kPeerSackPerm) && (p.tcp_options & PacketInfo::kSack) && after(p.sack, sack)) sack = p.sack;

    if (s.maxwin == 0) {
        if (syn) {
            init_sender(t, d, p, end);
            if (!has_ack) return Window::ok;  // the server's own SYN: simultaneous open
        } else {
            // The first segment from this side without a SYN (the server refusing the SYN
            // with an RST): take its numbers as they come.
            s.end = end;
            const uint32_t swin = win << scale_of(t, d);
            s.maxwin = swin ? swin : 1;
            s.maxend = end + s.maxwin;
            if (r.maxwin == 0) {
                r.end = r.maxend = sack;
            } else if (sack == r.end + 1) {
                ++r.end;  // likely the answer to a keepalive
            }
        }
    } else if (syn && after(end, s.end) &&
               (st.tcp_state == TcpCtState::syn_sent || st.tcp_state == TcpCtState::syn_recv)) {
        // A SYN with a higher ISN: the endpoint restarted the handshake (RFC 793 lets a
        // reinitialised TCP reuse a tuple with larger sequence numbers).
        init_sender(t, d, p, end);
        if (d == static_cast<int>(Direction::reply) && !has_ack) return Window::ok;
    }

    // No ACK flag: nothing to check. RST|ACK with ack 0 comes from broken stacks.
    if (!has_ack || (rst && ack == 0)) ack = sack = r.end;
    // An RST answering a SYN carries seq 0 (RFC 793 3.4).
    if (rst && seq == 0 && st.tcp_state == TcpCtState::syn_sent) seq = end = s.end;

    if (!before(seq, s.maxend + 1)) {  // I
        // Stacks that send a little more than the window allows: if that is all that is
        // wrong, Linux lets the segment through untracked but takes its end, so that the
        // receiver's ACK of it is not over the bound.
        const uint32_t overshot = end - s.maxend + 1;
        const bool ack_ok = after(sack, r.end - max_ack_window(s) - 1);
        const bool in_recv_win = r.maxwin && after(end, s.end - r.maxwin - 1);
        if (in_recv_win && ack_ok && overshot <= r.maxwin && before(sack, r.end + 1)) {
            s.end = end;
            set_flags(t, d, kPeerUnacked);
            return Window::ignore;
        }
        return Window::invalid;
    }
    if (!before(sack, r.end + 1)) return Window::invalid;                                  // III
    if (r.maxwin != 0 && !after(end, s.end - r.maxwin - 1)) return Window::ignore;         // II
    if (!after(sack, r.end - max_ack_window(s) - 1)) return Window::ignore;                // IV

    if (!syn) win <<= scale_of(t, d);
    const uint32_t swin = win + (sack - ack);
    s.maxwin = std::max(s.maxwin, swin);
    if (after(end, s.end)) {
        s.end = end;
        set_flags(t, d, kPeerUnacked);
    }
    if (has_ack) {
        if (!has(t, d, kPeerMaxAckSet) || after(ack, s.maxack)) s.maxack = ack;
        set_flags(t, d, kPeerMaxAckSet);
    }
    // The receiver evidently accepts more than it announced: widen its window.
    if (r.maxwin != 0 && after(end, s.maxend)) r.maxwin += end - s.maxend;
    if (after(sack + win, r.maxend - 1)) {
        r.maxend = sack + win;
        if (win == 0) ++r.maxend;  // let a zero-window probe through
    }
    if (ack == r.end) clear_flags(t, 1 - d, kPeerUnacked);
    if (index == kAckSet) t.last_end = end;  // Linux's retransmission bookkeeping
    return Window::ok;
}

// Linux nf_tcp_handle_invalid(): an out-of-window FIN or RST on an established connection is
// remembered, and one answering the other side's FIN or RST shortens the timer.
void handle_invalid(ConnState& st, int d, TcpIndex index, const CtTimeouts& t, uint64_t now_ns) {
    if (!(st.flags & kConnAssured) || (index != kRstSet && index != kFinSet)) return;
    if (last_dir(st) != d && (last_index(st) == kFinSet || last_index(st) == kRstSet)) {
        const uint64_t left_s = ct_expires_ns(st) > now_ns ? (ct_expires_ns(st) - now_ns) / kNsPerS : 0;
        if (left_s >= 120 && left_s > t.tcp_unacknowledged) st.expires_s = expiry_s(now_ns, t.tcp_unacknowledged);
    } else {
        set_last(st, index, d);
    }
}

CtVerdict tcp_packet(ConnState& st, Direction dir, const PacketInfo& p, const CtTimeouts& t,
                     uint64_t now_ns) {
    const int d = static_cast<int>(dir);
    const int reply = static_cast<int>(Direction::reply);
    const TcpIndex index = tcp_index(p.tcp_flags);
    auto old_state = static_cast<uint8_t>(st.tcp_state);
    uint8_t new_state = kTcpTable[d][index][old_state];
    bool check_window = true;

    switch (new_state) {
        case sSS:
            if (old_state < sTW) break;
            // A SYN in TIME_WAIT or CLOSE: reopen when the connection was closed (a FIN) or
            // aborted by this side's RST; otherwise we may be out of sync: ignore it.
            if ((st.flags & kConnCloseInit) || (last_dir(st) == d && last_index(st) == kRstSet))
                return CtVerdict::reopen;
            [[fallthrough]];
        case kIg: {
            if (index == kSynAckSet && last_index(st) == kSynSet && last_dir(st) != d &&
                p.ack == st.tcp.last_end) {
                // This SYN-ACK answers a SYN we ignored: client and server are in sync and we
                // are not. Adopt the new handshake from the ignored SYN's numbers.
                const int ld = last_dir(st);
                old_state = sSS;
                new_state = sSR;
                TcpPeer& s = st.tcp.peer[ld];
                s.end = s.maxend = st.tcp.last_end;
                s.maxwin = st.tcp.last_win ? st.tcp.last_win : 1;
                set_scale(st.tcp, ld, last_wscale(st));
                st.flags &= static_cast<uint8_t>(~(kConnExpChallengeAck | kConnCloseInit));
                assign_flags(st.tcp, ld, ((st.flags & kConnLastWscale) ? kPeerWindowScale : 0) |
                                             ((st.flags & kConnLastSackPerm) ? kPeerSackPerm : 0));
                st.tcp.peer[d] = TcpPeer{};
                set_scale(st.tcp, d, 0);
                assign_flags(st.tcp, d, 0);
                break;
            }
            set_last(st, index, d);
            st.tcp.last_end = segment_end(p);
            st.tcp.last_win = p.window;
            if (index == kSynSet && dir == Direction::original) {
                // Keep the SYN's options, to adopt its handshake if the server answers it.
                st.flags &= static_cast<uint8_t>(~kLastFlags);
                set_last_wscale(st, 0);
                if (p.tcp_options & PacketInfo::kOptions) {
                    if (p.wscale != PacketInfo::kNoWscale) {
                        st.flags |= kConnLastWscale;
                        set_last_wscale(st, std::min(p.wscale, kMaxWscale));
                    }
                    if (p.tcp_options & PacketInfo::kSackPerm) st.flags |= kConnLastSackPerm;
                }
                // RFC 5961: the server may answer with a challenge ACK, which in LAST_ACK
                // looks like the last ACK.
                if (old_state == sLA) st.flags |= kConnExpChallengeAck;
            }
            // A possible challenge ACK answering the SYN: the client's RST will carry its ACK
            // number as sequence number.
            if (old_state == sSS && index == kAckSet && d == reply) st.tcp.peer[reply].maxack = p.ack;
            return CtVerdict::ignore;
        }
        case kIv:
            return CtVerdict::invalid_state;
        case sTW:
            // RFC 5961: the challenge ACK answering a SYN in LAST_ACK is not the last ACK.
            if (old_state == sLA && index == kAckSet && last_dir(st) != d && last_index(st) == kSynSet &&
                (st.flags & kConnExpChallengeAck)) {
                st.flags &= static_cast<uint8_t>(~kConnExpChallengeAck);
                return CtVerdict::ignore;
            }
            break;
        case sS2:
            st.flags |= kConnSimultaneousOpen;  // kept even if the window check fails, as Linux
            break;
        case sSR:
            if (d == reply && index == kAckSet && (st.flags & kConnSimultaneousOpen)) new_state = sES;
            break;
        case sCL: {
            if (index != kRstSet) break;
            // Closing (FIN_WAIT to CLOSE): the tuple may have been reused already and the
            // window data be stale; Linux lets every RST through unchecked.
            const TcpCtState stored = st.tcp_state;
            if (stored == TcpCtState::fin_wait || stored == TcpCtState::close_wait || stored == TcpCtState::last_ack ||
                stored == TcpCtState::time_wait || stored == TcpCtState::close) {
                check_window = false;
                break;
            }
            const bool established = stored == TcpCtState::established && (st.flags & kConnAssured);
            if (has(st.tcp, 1 - d, kPeerMaxAckSet) && last_index(st) != kSynSet) {
                const uint32_t receiver_maxack = st.tcp.peer[1 - d].maxack;
                // seq 0 outside ESTABLISHED: most likely the answer to a SYN we let through.
                if (p.seq == 0 && !established) break;
                // RFC 5961 3.2: below what the receiver already acknowledged is stale.
                if (before(p.seq, receiver_maxack)) return CtVerdict::out_of_window;
                if (!established || p.seq == receiver_maxack) break;
                // An RST right behind the same side's last ACK: part of a train, exact enough.
                if (last_index(st) == kAckSet && last_dir(st) == d && p.seq == st.tcp.last_end) break;
                // Not the exact next sequence: keep the state (the endpoint answers with a
                // challenge ACK), on the short timer.
                new_state = old_state;
            }
            if ((((st.flags & kConnSeenReply) && last_index(st) == kSynSet) ||
                 (!(st.flags & kConnAssured) && last_index(st) == kAckSet)) &&
                p.ack == st.tcp.last_end) {
                check_window = false;  // the RST answering a SYN or ACK we let through
            } else if (old_state == sSS && last_index(st) == kAckSet && last_dir(st) == reply &&
                       p.seq == st.tcp.peer[reply].maxack) {
                check_window = false;  // the RST answering a challenge ACK
            }
            break;
        }
        default:
            break;
    }

    if (check_window) {
        switch (tcp_in_window(st, d, index, p)) {
            case Window::invalid:
                handle_invalid(st, d, index, t, now_ns);
                return CtVerdict::out_of_window;
            case Window::ignore:
                return CtVerdict::ignore;
            case Window::ok:
                break;
        }
    }

    set_last(st, index, d);
    st.tcp_state = static_cast<TcpCtState>(new_state);
    if (old_state != new_state && new_state == sFW) st.flags |= kConnCloseInit;

    uint32_t timeout = tcp_timeout_s(t, st.tcp_state);
    if (index == kRstSet) {
        timeout = t.tcp_close;
    } else if (((st.tcp.peer_flags & (kPeerUnacked | kPeerUnacked << 4)) != 0) && timeout > t.tcp_unacknowledged) {
        timeout = t.tcp_unacknowledged;
    }
    if (!st.replied()) {
        if (index == kRstSet) {
            // Refused (or aborted) before any answer: nothing left to track. Long expired,
            // not dead (0): the key must stay visible to the sweep, which removes it (and a
            // masquerade mapping with it); a dead entry's key would never be freed.
            st.expires_s = 1;
            return CtVerdict::accept;
        }
        // Retransmitted SYNs do not extend the timer, or a client retrying an unanswered
        // port would hold its entry forever.
        if (index == kSynSet && old_state == sSS) return CtVerdict::accept;
        if (new_state == sES) timeout = std::min(timeout, t.tcp_unacknowledged);
    } else if (!(st.flags & kConnAssured) && (old_state == sSR || old_state == sES) && new_state == sES) {
        st.flags |= kConnAssured;
    }
    st.expires_s = expiry_s(now_ns, timeout);
    return CtVerdict::accept;
}

CtVerdict tcp_new(ConnState& st, const PacketInfo& p, const CtTimeouts& t, uint64_t now_ns) {
    if (!tcp_flags_valid(p.tcp_flags)) return CtVerdict::invalid_flags;
    // nf_conntrack_tcp_loose=0: only a bare SYN opens; a mid-stream ACK is never picked up.
    if (tcp_index(p.tcp_flags) != kSynSet) return CtVerdict::invalid_new;
    ConnState n{};
    n.proto = ipproto::kTcp;
    TcpPeer& s = n.tcp.peer[0];
    s.end = s.maxend = segment_end(p);
    s.maxwin = p.window ? p.window : 1;
    take_options(n.tcp, 0, p);
    set_last(n, kNoneSet, 0);
    const CtVerdict v = tcp_packet(n, Direction::original, p, t, now_ns);
    if (v == CtVerdict::accept) st = n;
    return v;
}

CtVerdict tcp_update(ConnState& st, Direction dir, const PacketInfo& p, const CtTimeouts& t,
                     uint64_t now_ns) {
    if (!tcp_flags_valid(p.tcp_flags)) return CtVerdict::invalid_flags;
    const CtVerdict v = tcp_packet(st, dir, p, t, now_ns);
    // Linux marks a connection as answered by any reply-direction packet it lets through.
    if (dir == Direction::reply && ct_passes(v)) st.flags |= kConnSeenReply;
    return v;
}

// --- ICMP echo ---------------------------------------------------------------------------------

bool requested(const ConnState& st, Direction from, uint8_t code) {
    const int d = static_cast<int>(from);
    const uint8_t* codes = st.icmp.codes[d];
    return std::find(codes, codes + st.icmp.count[d], code) != codes + st.icmp.count[d];
}

void add_request_code(ConnState& st, Direction from, uint8_t code) {
    const int d = static_cast<int>(from);
    uint8_t* codes = st.icmp.codes[d];
    uint8_t& n = st.icmp.count[d];
    if (n == kEchoCodes) std::copy(codes + 1, codes + n--, codes);  // forget the oldest
    codes[n++] = code;
}

// Whether an echo message sent in direction `dir` belongs to a flow of `st`.
CtVerdict echo_update(const ConnState& st, Direction dir, const PacketInfo& p) {
    if (p.icmp_id != st.icmp.id) return CtVerdict::invalid_state;
    if (p.icmp_type == icmp::kEchoRequest)
        return requested(st, dir, p.icmp_code) ? CtVerdict::accept : CtVerdict::new_flow;
    if (p.icmp_type == icmp::kEchoReply) {
        const Direction requester = dir == Direction::original ? Direction::reply : Direction::original;
        return requested(st, requester, p.icmp_code) ? CtVerdict::accept : CtVerdict::invalid_state;
    }
    return CtVerdict::invalid_state;
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

// The options conntrack reads (RFC 7323 window scale, RFC 2018 SACK), stopping at the first
// malformed option as Linux does: the SYN's scale and SACK permission, and the highest right
// edge of the first SACK option of other segments.
void parse_tcp_options(PacketInfo& p, const uint8_t* opt, size_t len, bool syn) {
    // Linux's fast path: the timestamps option alone (NOP, NOP, TS) carries no SACK.
    if (!syn && len == 12 && opt[0] == 1 && opt[1] == 1 && opt[2] == 8 && opt[3] == 10) return;
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
        if (syn) {
            if (kind == 3 && olen == 3) p.wscale = std::min(opt[i + 2], kMaxWscale);
            if (kind == 4 && olen == 2) p.tcp_options |= PacketInfo::kSackPerm;
        } else if (kind == 5 && olen >= 10 && (olen - 2) % 8 == 0) {
            for (size_t b = i + 2; b < i + olen; b += 8) {
                const uint32_t right = uint32_t{opt[b + 4]} << 24 | uint32_t{opt[b + 5]} << 16 |
                                       uint32_t{opt[b + 6]} << 8 | opt[b + 7];
                if (!(p.tcp_options & PacketInfo::kSack) || after(right, p.sack)) p.sack = right;
                p.tcp_options |= PacketInfo::kSack;
            }
            return;  // Linux reads the first SACK option only
        }
        i += olen;
    }
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
            if (doff > sizeof h) {
                p.tcp_options = PacketInfo::kOptions;
                parse_tcp_options(p, l4 + sizeof h, doff - sizeof h, h.flags & TcpHdr::kSyn);
            }
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
            n.icmp.id = p.icmp_id;
            add_request_code(n, Direction::original, p.icmp_code);
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
            const CtVerdict v = echo_update(st, dir, p);
            if (v != CtVerdict::accept) return v;
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

void ct_add_flow(ConnState& st, Direction dir, const PacketInfo& p, const CtTimeouts& t,
                 uint64_t now_ns) noexcept {
    if (st.proto != ipproto::kIcmp || p.icmp_type != icmp::kEchoRequest) return;
    add_request_code(st, dir, p.icmp_code);
    st.expires_s = expiry_s(now_ns, t.icmp);
}

bool ct_icmp_quote_matches(const ConnState& st, Direction dir, const PacketInfo& quoted) noexcept {
    return st.proto == ipproto::kIcmp && echo_update(st, dir, quoted) == CtVerdict::accept;
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
        case CtVerdict::new_flow:
            return "new_flow";
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
