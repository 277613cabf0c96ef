// Connection-tracking state machines with injected time: TCP handshake, data, close, RST,
// sequence windows and window scaling; UDP and ICMP echo; every timeout; and the extraction
// of PacketInfo from real frame bytes.
#include "dp/conntrack_state.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <type_traits>
#include <vector>

#include "support/frame_builder.hpp"

namespace calyx::dp {
namespace {

using test::FrameBuilder;

constexpr uint64_t kS = 1'000'000'000ull;
constexpr uint8_t SYN = TcpHdr::kSyn, ACK = TcpHdr::kAck, FIN = TcpHdr::kFin, RST = TcpHdr::kRst,
                  PSH = TcpHdr::kPsh;
constexpr Direction kOrig = Direction::original, kReply = Direction::reply;

bool same(const ConnState& a, const ConnState& b) {
    return std::memcmp(&a, &b, sizeof a) == 0;
}

// The connection did not advance: same state, timer and windows (Linux's bookkeeping of the
// last packet may differ).
bool same_tracking(const ConnState& a, const ConnState& b) {
    return a.tcp_state == b.tcp_state && a.expires_s == b.expires_s &&
           std::memcmp(a.tcp.peer, b.tcp.peer, sizeof a.tcp.peer) == 0 && a.tcp.scales == b.tcp.scales;
}

PacketInfo tcp_info(uint8_t flags, uint32_t seq, uint32_t ack, uint16_t len = 0,
                    uint16_t window = 65535, uint8_t wscale = PacketInfo::kNoWscale) {
    PacketInfo p;
    p.proto = ipproto::kTcp;
    p.tcp_flags = flags;
    p.seq = seq;
    p.ack = ack;
    p.payload_len = len;
    p.window = window;
    p.wscale = wscale;
    if (wscale != PacketInfo::kNoWscale) p.tcp_options = PacketInfo::kOptions;
    return p;
}

PacketInfo echo_info(uint8_t type, uint16_t id, uint8_t code = 0) {
    PacketInfo p;
    p.proto = ipproto::kIcmp;
    p.icmp_type = type;
    p.icmp_code = code;
    p.icmp_id = id;
    return p;
}

// A TCP connection between a client (original direction) and a server (reply direction)
// that remembers each side's next sequence number, so tests read as the segments they send.
class TcpConn {
  public:
    explicit TcpConn(uint32_t client_isn = 1000, uint32_t server_isn = 7'000'000)
        : client_isn_(client_isn), server_isn_(server_isn) {}

    ConnState st{};
    CtTimeouts timeouts;
    uint64_t now = 1000 * kS;
    uint32_t client_next = 0, server_next = 0;  // next sequence number each side sends
    uint8_t client_wscale = PacketInfo::kNoWscale, server_wscale = PacketInfo::kNoWscale;

    // The segment `dir`'s side would send now: its next seq, ACKing all the other side sent.
    PacketInfo segment(Direction dir, uint8_t flags, uint16_t len = 0, uint16_t window = 65535) {
        const bool orig = dir == kOrig;
        uint32_t seq = orig ? client_next : server_next;
        if (flags & SYN) seq = orig ? client_isn_ : server_isn_;
        const uint32_t ack = (flags & ACK) ? (orig ? server_next : client_next) : 0;
        const uint8_t ws =
            (flags & SYN) ? (orig ? client_wscale : server_wscale) : PacketInfo::kNoWscale;
        return tcp_info(flags, seq, ack, len, window, ws);
    }

    CtVerdict send(Direction dir, uint8_t flags, uint16_t len = 0, uint16_t window = 65535) {
        return deliver(dir, segment(dir, flags, len, window));
    }
    CtVerdict client(uint8_t flags, uint16_t len = 0, uint16_t window = 65535) {
        return send(kOrig, flags, len, window);
    }
    CtVerdict server(uint8_t flags, uint16_t len = 0, uint16_t window = 65535) {
        return send(kReply, flags, len, window);
    }

    // Runs a segment through conntrack (ct_new for the very first one) and, if it passed,
    // advances its sender's next sequence number past it.
    CtVerdict deliver(Direction dir, const PacketInfo& p) {
        const CtVerdict v =
            started_ ? ct_update(st, dir, p, timeouts, now) : ct_new(st, p, timeouts, now);
        if (v == CtVerdict::accept && !started_) started_ = true;
        if (v == CtVerdict::accept) {
            const uint32_t end = p.seq + p.payload_len + ((p.tcp_flags & SYN) ? 1 : 0) +
                                 ((p.tcp_flags & FIN) ? 1 : 0);
            uint32_t& next = dir == kOrig ? client_next : server_next;
            if (static_cast<int32_t>(end - next) > 0 || next == 0) next = end;
        }
        return v;
    }

    void handshake() {
        ASSERT_EQ(client(SYN), CtVerdict::accept);
        ASSERT_EQ(server(SYN | ACK), CtVerdict::accept);
        ASSERT_EQ(client(ACK), CtVerdict::accept);
        ASSERT_EQ(st.tcp_state, TcpCtState::established);
    }

    TcpCtState state() const { return st.tcp_state; }
    // Seconds from now until the entry expires.
    uint64_t ttl_s() const { return (ct_expires_ns(st) - now) / kS; }

  private:
    uint32_t client_isn_, server_isn_;
    bool started_ = false;
};

// --- TCP life cycle -------------------------------------------------------------------

TEST(ConntrackTcp, HandshakeDataAndCloseEndInTimeWaitThatExpiresAfter120s) {
    TcpConn c;
    EXPECT_EQ(c.client(SYN), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::syn_sent);
    EXPECT_EQ(c.server(SYN | ACK), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::syn_recv);
    EXPECT_EQ(c.client(ACK), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::established);
    EXPECT_TRUE(c.st.replied());

    EXPECT_EQ(c.client(PSH | ACK, 300), CtVerdict::accept);
    EXPECT_EQ(c.server(ACK), CtVerdict::accept);
    EXPECT_EQ(c.server(PSH | ACK, 1400), CtVerdict::accept);
    EXPECT_EQ(c.server(PSH | ACK, 1400), CtVerdict::accept);
    EXPECT_EQ(c.client(ACK), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::established);

    EXPECT_EQ(c.client(FIN | ACK), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::fin_wait);
    EXPECT_EQ(c.server(ACK), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::close_wait);
    EXPECT_EQ(c.server(FIN | ACK), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::last_ack);
    EXPECT_EQ(c.client(ACK), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::time_wait);

    const uint64_t closed_at = c.now;
    EXPECT_FALSE(ct_expired(c.st, closed_at + 120 * kS - 1));
    EXPECT_TRUE(ct_expired(c.st, closed_at + 120 * kS));
    c.now = closed_at + 120 * kS;
    EXPECT_EQ(c.client(ACK), CtVerdict::expired);
}

TEST(ConntrackTcp, SimultaneousCloseReachesTimeWait) {
    TcpConn c;
    c.handshake();
    EXPECT_EQ(c.client(FIN | ACK), CtVerdict::accept);
    // The server's FIN crosses the client's: it does not ACK the client's FIN yet.
    PacketInfo server_fin = c.segment(kReply, FIN | ACK);
    server_fin.ack = c.client_next - 1;
    EXPECT_EQ(c.deliver(kReply, server_fin), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::last_ack);
    EXPECT_EQ(c.client(ACK), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::time_wait);
    EXPECT_EQ(c.server(ACK), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::time_wait);
    EXPECT_EQ(c.ttl_s(), 120u);
}

TEST(ConntrackTcp, SimultaneousOpenGoesThroughSynSent2) {
    TcpConn c;
    const uint32_t a = 1000, b = 90000;
    ConnState& st = c.st;
    ASSERT_EQ(ct_new(st, tcp_info(SYN, a, 0), c.timeouts, c.now), CtVerdict::accept);
    EXPECT_EQ(ct_update(st, kReply, tcp_info(SYN, b, 0), c.timeouts, c.now), CtVerdict::accept);
    EXPECT_EQ(st.tcp_state, TcpCtState::syn_sent2);
    EXPECT_EQ(ct_update(st, kOrig, tcp_info(SYN | ACK, a, b + 1), c.timeouts, c.now),
              CtVerdict::accept);
    EXPECT_EQ(st.tcp_state, TcpCtState::syn_recv);
    EXPECT_EQ(ct_update(st, kOrig, tcp_info(SYN | ACK, a, b + 1), c.timeouts, c.now),
              CtVerdict::accept)
        << "its retransmission";
    EXPECT_EQ(ct_update(st, kReply, tcp_info(SYN | ACK, b, a + 1), c.timeouts, c.now),
              CtVerdict::ignore)
        << "the other SYN-ACK is a retransmission as far as we can tell";
    EXPECT_EQ(ct_update(st, kReply, tcp_info(ACK, b + 1, a + 1), c.timeouts, c.now),
              CtVerdict::accept);
    EXPECT_EQ(st.tcp_state, TcpCtState::established);
}

TEST(ConntrackTcp, SequenceNumbersWrapAroundZero) {
    TcpConn c(0xffffff00u, 0xfffffff0u);
    c.handshake();
    for (int i = 0; i < 4; ++i) {
        EXPECT_EQ(c.client(PSH | ACK, 1000), CtVerdict::accept) << i;
        EXPECT_EQ(c.server(PSH | ACK, 1000), CtVerdict::accept) << i;
    }
    EXPECT_LT(c.client_next, 0x10000u) << "wrapped";
    EXPECT_EQ(c.client(ACK), CtVerdict::accept);
}

// --- what may open a connection ---------------------------------------------------------

TEST(ConntrackTcp, OnlyABareSynOpensAConnection) {
    const CtTimeouts t;
    ConnState st{};
    EXPECT_EQ(ct_new(st, tcp_info(ACK, 1, 1), t, 0), CtVerdict::invalid_new)
        << "no mid-stream pickup (nf_conntrack_tcp_loose=0)";
    EXPECT_EQ(ct_new(st, tcp_info(SYN | ACK, 1, 1), t, 0), CtVerdict::invalid_new);
    EXPECT_EQ(ct_new(st, tcp_info(FIN | ACK, 1, 1), t, 0), CtVerdict::invalid_new);
    EXPECT_EQ(ct_new(st, tcp_info(RST, 1, 0), t, 0), CtVerdict::invalid_new);
    EXPECT_EQ(ct_new(st, tcp_info(PSH | ACK, 1, 1, 100), t, 0), CtVerdict::invalid_new);
    EXPECT_EQ(ct_new(st, tcp_info(SYN | FIN, 1, 0), t, 0), CtVerdict::invalid_flags);
    EXPECT_EQ(ct_new(st, tcp_info(SYN | RST, 1, 0), t, 0), CtVerdict::invalid_flags);
    EXPECT_EQ(ct_new(st, tcp_info(0, 1, 0), t, 0), CtVerdict::invalid_flags) << "null scan";
    EXPECT_EQ(ct_new(st, tcp_info(FIN | PSH | TcpHdr::kUrg, 1, 0), t, 0), CtVerdict::invalid_flags)
        << "xmas scan";
    EXPECT_TRUE(same(st, ConnState{})) << "rejected first packets leave the state alone";
    EXPECT_EQ(ct_new(st, tcp_info(SYN | 0x40 | 0x80, 1, 0), t, 0), CtVerdict::accept)
        << "ECN-setup SYN";
}

TEST(ConntrackTcp, PacketsOutOfTurnDuringTheHandshakeAreInvalid) {
    TcpConn c;
    ASSERT_EQ(c.client(SYN), CtVerdict::accept);
    const ConnState before = c.st;
    EXPECT_EQ(c.client(SYN | ACK), CtVerdict::invalid_state) << "SYN-ACK from the client";
    EXPECT_EQ(c.client(ACK), CtVerdict::invalid_state) << "ACK before any SYN-ACK";
    EXPECT_EQ(c.client(FIN | ACK), CtVerdict::invalid_state);
    EXPECT_EQ(c.server(FIN | ACK), CtVerdict::invalid_state);
    EXPECT_TRUE(same(c.st, before));
    ASSERT_EQ(c.server(SYN | ACK), CtVerdict::accept);
    EXPECT_EQ(c.client(ACK | FIN), CtVerdict::accept) << "FIN in SYN_RECV closes";
}

// The first class: the client answers the server's SYN-ACK with a SYN-ACK of its own
// (simultaneous open as some stacks and hole punchers do it). Linux passes it.
TEST(ConntrackTcp, ClientSynAckAnsweringASynAckPasses) {
    TcpConn c;
    ASSERT_EQ(c.client(SYN), CtVerdict::accept);
    ASSERT_EQ(c.server(SYN | ACK), CtVerdict::accept);
    EXPECT_EQ(c.client(SYN | ACK), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::syn_recv);
    EXPECT_EQ(c.client(ACK), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::established);
}

TEST(ConntrackTcp, SynAckMustAcknowledgeTheSyn) {
    TcpConn c;
    ASSERT_EQ(c.client(SYN), CtVerdict::accept);
    PacketInfo synack = c.segment(kReply, SYN | ACK);
    synack.ack += 5000;  // acknowledges data the client never sent
    EXPECT_EQ(c.deliver(kReply, synack), CtVerdict::out_of_window);
    EXPECT_EQ(c.state(), TcpCtState::syn_sent);
}

TEST(ConntrackTcp, RetransmittedSynIsAcceptedButDoesNotExtendTheTimer) {
    TcpConn c;
    ASSERT_EQ(c.client(SYN), CtVerdict::accept);
    const uint32_t expires = c.st.expires_s;
    c.now += 3 * kS;
    EXPECT_EQ(c.client(SYN), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::syn_sent);
    EXPECT_EQ(c.st.expires_s, expires);
    c.now += 6 * kS;
    EXPECT_EQ(c.client(SYN), CtVerdict::accept);
    c.now = ct_expires_ns(c.st);
    EXPECT_EQ(c.client(SYN), CtVerdict::expired) << "unanswered SYNs die after syn_sent";
}

TEST(ConntrackTcp, SynWithANewIsnInSynSentRestartsTheHandshake) {
    TcpConn c;
    ASSERT_EQ(c.client(SYN), CtVerdict::accept);
    EXPECT_EQ(c.deliver(kOrig, tcp_info(SYN, 500'000, 0)), CtVerdict::accept);
    EXPECT_EQ(c.deliver(kReply, tcp_info(SYN | ACK, 9000, 500'001)), CtVerdict::accept);
    EXPECT_EQ(c.deliver(kOrig, tcp_info(ACK, 500'001, 9001)), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::established);
}

// --- RST -------------------------------------------------------------------------------

TEST(ConntrackTcp, RstAtTheNextSequenceClosesTheConnection) {
    TcpConn c;
    c.handshake();
    EXPECT_EQ(c.server(RST), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::close);
    EXPECT_EQ(c.ttl_s(), 10u);
}

TEST(ConntrackTcp, RstAfterDataFromTheSameSideClosesTheConnection) {
    TcpConn c;
    c.handshake();
    ASSERT_EQ(c.client(PSH | ACK, 500), CtVerdict::accept);
    EXPECT_EQ(c.client(RST | ACK), CtVerdict::accept) << "an abort right after sending";
    EXPECT_EQ(c.state(), TcpCtState::close);
}

TEST(ConntrackTcp, RstOutOfWindowIsDroppedAndChangesNothing) {
    TcpConn c;
    c.handshake();
    const ConnState before = c.st;
    PacketInfo rst = c.segment(kReply, RST);
    rst.seq += 10'000'000;  // far beyond anything the client announced
    EXPECT_EQ(c.deliver(kReply, rst), CtVerdict::out_of_window);
    rst.seq = c.server_next - 100;  // below what the client already acknowledged
    EXPECT_EQ(c.deliver(kReply, rst), CtVerdict::out_of_window);
    EXPECT_TRUE(same_tracking(c.st, before));
    EXPECT_EQ(c.state(), TcpCtState::established);
}

// Linux does not check RSTs once a side has sent its FIN: the tuple may have been reused and
// the windows be stale.
TEST(ConntrackTcp, RstInAClosingStatePassesUnchecked) {
    TcpConn c;
    c.handshake();
    ASSERT_EQ(c.client(FIN | ACK), CtVerdict::accept);
    ASSERT_EQ(c.state(), TcpCtState::fin_wait);
    const ConnState before = c.st;
    PacketInfo rst = c.segment(kReply, RST);
    rst.seq += 10'000'000;
    EXPECT_EQ(c.deliver(kReply, rst), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::close);
    EXPECT_EQ(c.ttl_s(), 10u);
    EXPECT_EQ(std::memcmp(c.st.tcp.peer, before.tcp.peer, sizeof before.tcp.peer), 0) << "no window update";
}

// The "after a reset" class: an answer that conntrack only let through (here a
// challenge ACK in SYN_SENT) still counts as a reply, so the connection the client then resets
// stays in CLOSE for tcp_close, and what was in flight behind the RST is matched.
TEST(ConntrackTcp, ResetConnectionStaysInCloseForTenSecondsOnceAnswered) {
    TcpConn c;
    ASSERT_EQ(c.client(SYN), CtVerdict::accept);
    EXPECT_EQ(c.deliver(kReply, tcp_info(ACK, 5'000, 777)), CtVerdict::ignore) << "challenge ACK";
    EXPECT_TRUE(c.st.replied());
    PacketInfo rst = tcp_info(RST, c.client_next, 0);
    EXPECT_EQ(c.deliver(kOrig, rst), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::close);
    EXPECT_EQ(c.ttl_s(), 10u);
    EXPECT_EQ(c.deliver(kOrig, tcp_info(ACK, c.client_next, 0)), CtVerdict::accept) << "the ACK behind the RST";
    c.now += 10 * kS;
    EXPECT_EQ(c.client(ACK), CtVerdict::expired);
}

TEST(ConntrackTcp, RstInWindowButNotExactKeepsTheStateOnTheShortTimer) {
    // RFC 5961 3.2: the endpoint answers such an RST with a challenge ACK; only an exact one
    // tears the connection down.
    TcpConn c;
    c.handshake();
    PacketInfo rst = c.segment(kReply, RST);
    rst.seq += 1000;
    EXPECT_EQ(c.deliver(kReply, rst), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::established);
    EXPECT_EQ(c.ttl_s(), 10u);
    EXPECT_EQ(c.client(ACK), CtVerdict::accept) << "the challenge ACK";
    EXPECT_EQ(c.ttl_s(), 432000u) << "traffic restores the established timer";
}

TEST(ConntrackTcp, RstRefusingTheSynEndsTheConnectionAtOnce) {
    TcpConn c;
    ASSERT_EQ(c.client(SYN), CtVerdict::accept);
    EXPECT_EQ(c.deliver(kReply, tcp_info(RST | ACK, 0, c.client_next, 0, 0)), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::close);
    EXPECT_TRUE(ct_expired(c.st, c.now));
    EXPECT_EQ(c.client(SYN), CtVerdict::expired) << "the retry is a new connection";
}

// RFC 793 3.4: in SYN_SENT an RST is acceptable only if it acknowledges the SYN. One whose
// ACK is beyond it refuses nothing, whatever window the SYN announced (zero included).
TEST(ConntrackTcp, RstWhoseAckIsBeyondTheSynIsOutOfWindow) {
    for (const uint16_t window : {uint16_t{65535}, uint16_t{0}}) {
        TcpConn c;
        ASSERT_EQ(c.client(SYN, 0, window), CtVerdict::accept);
        EXPECT_EQ(c.deliver(kReply, tcp_info(RST | ACK, 0, c.client_next + 5, 0, 0)), CtVerdict::out_of_window)
            << "window " << window;
        EXPECT_EQ(c.state(), TcpCtState::syn_sent) << "window " << window;
    }
}

TEST(ConntrackTcp, ClientRstAnsweringAChallengeAckInSynSentIsAccepted) {
    // The server still holds an old connection on this tuple and answers the new SYN with
    // an ACK of its old sequence space; the client resets that with seq = the ACK number.
    TcpConn c;
    ASSERT_EQ(c.client(SYN), CtVerdict::accept);
    const uint32_t stale_ack = 123'456'789;
    EXPECT_EQ(c.deliver(kReply, tcp_info(ACK, 42, stale_ack)), CtVerdict::ignore);
    EXPECT_EQ(c.state(), TcpCtState::syn_sent);
    EXPECT_EQ(c.deliver(kOrig, tcp_info(RST, stale_ack + 1, 0)), CtVerdict::out_of_window)
        << "only the exact sequence";
    EXPECT_EQ(c.deliver(kOrig, tcp_info(RST, stale_ack, 0)), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::close);
}

// --- sequence windows -------------------------------------------------------------------

TEST(ConntrackTcp, DataBeyondTheReceiversWindowIsDroppedAndChangesNothing) {
    TcpConn c;
    c.handshake();
    const ConnState before = c.st;
    PacketInfo data = c.segment(kOrig, PSH | ACK, 100);
    data.seq += 140'000;  // the server announced 65535 bytes: more than a window beyond
    EXPECT_EQ(c.deliver(kOrig, data), CtVerdict::out_of_window);
    EXPECT_TRUE(same_tracking(c.st, before));
    data.seq = c.client_next + 65'000;  // inside the window: fine even if out of order
    EXPECT_EQ(c.deliver(kOrig, data), CtVerdict::accept);
}

// Linux's MAXACKWINDOW: an ACK may lag the receiver's highest sequence by up to 66000 bytes
// (or the sender's largest window, if larger) and still be tracked: a late duplicate ACK
// behind a small window is accepted, not ignored.
TEST(ConntrackTcp, AnAckLaggingUpTo66000BytesBehindASmallWindowIsAccepted) {
    TcpConn c;
    ASSERT_EQ(c.client(SYN), CtVerdict::accept);
    ASSERT_EQ(c.server(SYN | ACK, 0, 1000), CtVerdict::accept);
    ASSERT_EQ(c.client(ACK), CtVerdict::accept);
    const PacketInfo early_ack = c.segment(kReply, ACK, 0, 1000);
    for (int i = 0; i < 10; ++i) {  // 10000 bytes, one server window of 1000 at a time
        ASSERT_EQ(c.client(PSH | ACK, 1000), CtVerdict::accept) << i;
        ASSERT_EQ(c.server(ACK, 0, 1000), CtVerdict::accept) << i;
    }
    EXPECT_EQ(c.deliver(kReply, early_ack), CtVerdict::accept) << "10000 bytes late: within 66000";
}

// Linux's workaround for stacks that send more than the window allows: a segment that starts
// beyond the right edge by less than a window passes untracked, and its end is taken so that
// the receiver's ACK of it is valid.
TEST(ConntrackTcp, SegmentOvershootingTheWindowByLessThanAWindowPassesUntracked) {
    TcpConn c;
    c.handshake();
    PacketInfo data = c.segment(kOrig, PSH | ACK, 100);
    data.seq += 70'000;
    EXPECT_EQ(c.deliver(kOrig, data), CtVerdict::ignore);
    PacketInfo ack = c.segment(kReply, ACK);
    ack.ack = data.seq + 100;
    EXPECT_EQ(c.deliver(kReply, ack), CtVerdict::accept) << "its ACK is not beyond what was sent";
}

// Window edges in SYN_RECV: the SYN-ACK's window is never scaled (RFC 7323 2.2), even when
// both sides announce scaling. Data and FIN ending at its right edge pass; data starting
// three windows beyond it is dropped (a scaled SYN window, 1000 << 7, would take it).
TEST(ConntrackTcp, SynAckWindowIsUnscaledAtTheRightEdgeInSynRecv) {
    for (const uint8_t fin : {uint8_t{0}, FIN}) {
        TcpConn c;
        c.client_wscale = 7;
        c.server_wscale = 7;
        ASSERT_EQ(c.client(SYN), CtVerdict::accept);
        ASSERT_EQ(c.server(SYN | ACK, 0, 1000), CtVerdict::accept);
        PacketInfo edge = c.segment(kOrig, ACK | fin, fin ? 0 : 100);
        edge.seq = c.client_next + 1000 - (fin ? 0 : 100);  // ends at ack + 1000
        EXPECT_EQ(c.deliver(kOrig, edge), CtVerdict::accept) << (fin ? "FIN" : "data");
        EXPECT_EQ(c.state(), fin ? TcpCtState::fin_wait : TcpCtState::established);
        PacketInfo beyond = c.segment(kOrig, ACK, 100);
        beyond.seq = c.client_next + 3000;
        EXPECT_EQ(c.deliver(kOrig, beyond), CtVerdict::out_of_window);
    }
}

// The server's in-order data after the client's FIN, more than the client's small window
// (512 bytes, unscaled), then the server's FIN beyond that window and the client's last ACK.
// Linux checks only where a segment starts against the window, so the data passes and widens
// the receiver's window; the FIN then overshoots by less than a window, passes untracked, and
// its end is taken so that the last ACK is valid (before, calyx dropped both).
TEST(ConntrackTcp, ServerDataAfterTheClientsFinThenItsFinAndTheLastAckPass) {
    TcpConn c;
    ASSERT_EQ(c.client(SYN, 0, 512), CtVerdict::accept);
    ASSERT_EQ(c.server(SYN | ACK, 0, 64240), CtVerdict::accept);
    ASSERT_EQ(c.client(ACK, 0, 512), CtVerdict::accept);
    ASSERT_EQ(c.client(FIN | ACK, 0, 512), CtVerdict::accept);
    ASSERT_EQ(c.server(ACK, 0, 64240), CtVerdict::accept);
    const PacketInfo data = c.segment(kReply, ACK, 984, 64240);
    EXPECT_EQ(c.deliver(kReply, data), CtVerdict::accept) << "984 bytes into a 512-byte window";
    EXPECT_EQ(c.deliver(kReply, data), CtVerdict::accept) << "its retransmission";
    EXPECT_EQ(c.server(FIN | ACK, 0, 64240), CtVerdict::ignore);
    EXPECT_EQ(c.deliver(kOrig, tcp_info(ACK, c.client_next, data.seq + 985, 0, 512)), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::close_wait) << "the FIN passed untracked";
}

// SACK blocks are bounded like ACKs when the receiver's SYN permitted SACK (RFC 2018).
TEST(ConntrackTcp, SackBlocksBeyondWhatWasSentAreDropped) {
    for (const bool permitted : {true, false}) {
        TcpConn c;
        PacketInfo syn = c.segment(kOrig, SYN);
        if (permitted) syn.tcp_options = PacketInfo::kOptions | PacketInfo::kSackPerm;
        ASSERT_EQ(c.deliver(kOrig, syn), CtVerdict::accept);
        ASSERT_EQ(c.server(SYN | ACK), CtVerdict::accept);
        ASSERT_EQ(c.client(ACK), CtVerdict::accept);
        ASSERT_EQ(c.client(PSH | ACK, 500), CtVerdict::accept);
        PacketInfo sack = c.segment(kReply, ACK);
        sack.tcp_options = PacketInfo::kOptions | PacketInfo::kSack;
        sack.sack = c.client_next + 3'000'000;  // far beyond the client's data
        EXPECT_EQ(c.deliver(kReply, sack), permitted ? CtVerdict::out_of_window : CtVerdict::accept)
            << (permitted ? "SACK permitted" : "SACK not negotiated: blocks are not read");
        sack.sack = c.client_next;  // the client's data, SACKed
        EXPECT_EQ(c.deliver(kReply, sack), CtVerdict::accept);
    }
}

TEST(ConntrackTcp, AckOfDataNeverSentIsDropped) {
    TcpConn c;
    c.handshake();
    const ConnState before = c.st;
    PacketInfo ack = c.segment(kOrig, ACK);
    ack.ack += 1;
    EXPECT_EQ(c.deliver(kOrig, ack), CtVerdict::out_of_window);
    EXPECT_TRUE(same(c.st, before));
}

// A FIN occupies one sequence number: the ACK of the FIN is the FIN's seq + 1, and one
// beyond it acknowledges something never sent.
TEST(ConntrackTcp, AFinOccupiesOneSequenceNumber) {
    TcpConn c;
    c.handshake();
    ASSERT_EQ(c.client(FIN | ACK), CtVerdict::accept);
    const ConnState before = c.st;
    PacketInfo beyond = c.segment(kReply, ACK);
    beyond.ack += 1;
    EXPECT_EQ(c.deliver(kReply, beyond), CtVerdict::out_of_window);
    EXPECT_TRUE(same(c.st, before));
    EXPECT_EQ(c.server(ACK), CtVerdict::accept) << "the FIN's own ACK";
}

// The sender's bound (what the receiver ever allowed) only grows: a window announced later
// smaller, by one byte (the edge of the comparison) or by much, does not pull it back.
TEST(ConntrackTcp, AShrinkingWindowDoesNotLowerTheSendersBound) {
    for (const uint16_t smaller : {uint16_t{65534}, uint16_t{1000}}) {
        TcpConn c;
        c.handshake();  // the server allowed the client up to client_next + 65535
        const uint32_t bound = c.client_next + 65535;
        ASSERT_EQ(c.server(ACK, 0, smaller), CtVerdict::accept);
        PacketInfo at_bound = c.segment(kOrig, PSH | ACK, 1);
        at_bound.seq = bound;
        EXPECT_EQ(c.deliver(kOrig, at_bound), CtVerdict::accept) << "window " << smaller;
    }
}

TEST(ConntrackTcp, OldRetransmissionBelowTheWindowPassesUntracked) {
    TcpConn c;
    c.handshake();
    const uint32_t first = c.client_next;
    for (int i = 0; i < 60; ++i) {  // 84 KB, well past the server's 64 KB window
        ASSERT_EQ(c.client(PSH | ACK, 1400), CtVerdict::accept);
        ASSERT_EQ(c.server(ACK), CtVerdict::accept);
    }
    const ConnState before = c.st;
    PacketInfo old = c.segment(kOrig, PSH | ACK, 1400);
    old.seq = first;
    EXPECT_EQ(c.deliver(kOrig, old), CtVerdict::ignore);
    EXPECT_TRUE(same(c.st, before));
}

TEST(ConntrackTcp, WindowScalingFromTheSynOptionsIsHonoured) {
    // The server announces 1024 << 7 = 128 KiB; a segment 100 KB ahead is inside it.
    TcpConn scaled;
    scaled.client_wscale = 7;
    scaled.server_wscale = 7;
    scaled.handshake();
    EXPECT_EQ(scaled.st.tcp.scales & 0x0f, 7);
    EXPECT_EQ(scaled.st.tcp.scales >> 4, 7);
    ASSERT_EQ(scaled.server(ACK, 0, 1024), CtVerdict::accept);
    PacketInfo far = scaled.segment(kOrig, PSH | ACK, 1000);
    far.seq += 100'000;
    EXPECT_EQ(scaled.deliver(kOrig, far), CtVerdict::accept);

    // Without scaling the same window field is 1 KiB (64 KiB from the SYN-ACK at most): the
    // segment is beyond the window, by less than a window (it passes untracked), and one
    // twice as far is dropped.
    TcpConn unscaled;
    unscaled.handshake();
    ASSERT_EQ(unscaled.server(ACK, 0, 1024), CtVerdict::accept);
    far = unscaled.segment(kOrig, PSH | ACK, 1000);
    far.seq += 100'000;
    EXPECT_EQ(unscaled.deliver(kOrig, far), CtVerdict::ignore);
    far.seq += 100'000;
    EXPECT_EQ(unscaled.deliver(kOrig, far), CtVerdict::out_of_window);
}

TEST(ConntrackTcp, WindowScalingNeedsTheOptionFromBothSides) {
    TcpConn c;
    c.client_wscale = 7;  // the server does not answer with the option
    c.handshake();
    EXPECT_EQ(c.st.tcp.scales & 0x0f, 0);
    EXPECT_EQ(c.st.tcp.scales >> 4, 0);
    ASSERT_EQ(c.server(ACK, 0, 1024), CtVerdict::accept);
    PacketInfo far = c.segment(kOrig, PSH | ACK, 1000);
    far.seq += 200'000;
    EXPECT_EQ(c.deliver(kOrig, far), CtVerdict::out_of_window);
}

TEST(ConntrackTcp, MegabyteWindowsWithScaleSevenCarryBulkData) {
    TcpConn c;
    c.client_wscale = 7;
    c.server_wscale = 7;
    c.handshake();
    ASSERT_EQ(c.server(ACK, 0, 0xffff), CtVerdict::accept);  // 8 MiB
    for (int i = 0; i < 5000; ++i) {                         // 7 MB in flight without an ACK
        ASSERT_EQ(c.client(PSH | ACK, 1400, 0xffff), CtVerdict::accept) << i;
    }
    EXPECT_EQ(c.server(ACK, 0, 0xffff), CtVerdict::accept);
    EXPECT_EQ(c.client(PSH | ACK, 1400, 0xffff), CtVerdict::accept);
}

// --- reopening and odd segments ----------------------------------------------------------

TEST(ConntrackTcp, SynInTimeWaitOrCloseReopens) {
    TcpConn c;
    c.handshake();
    ASSERT_EQ(c.client(FIN | ACK), CtVerdict::accept);
    ASSERT_EQ(c.server(FIN | ACK), CtVerdict::accept);
    ASSERT_EQ(c.client(ACK), CtVerdict::accept);
    ASSERT_EQ(c.state(), TcpCtState::time_wait);
    const ConnState tw = c.st;
    EXPECT_EQ(c.deliver(kOrig, tcp_info(SYN, c.client_next + 100'000, 0)), CtVerdict::reopen);
    EXPECT_EQ(c.deliver(kReply, tcp_info(SYN, 4242, 0)), CtVerdict::reopen)
        << "the server may take the client's role";
    EXPECT_TRUE(same(c.st, tw)) << "the caller deletes the entry, not ct_update";

    TcpConn r;
    r.handshake();
    ASSERT_EQ(r.client(RST | ACK), CtVerdict::accept);
    ASSERT_EQ(r.state(), TcpCtState::close);
    EXPECT_EQ(r.deliver(kOrig, tcp_info(SYN, 77, 0)), CtVerdict::reopen);
    EXPECT_EQ(r.deliver(kReply, tcp_info(SYN, 77, 0)), CtVerdict::invalid_state);
}

TEST(ConntrackTcp, SynOnAnEstablishedConnectionPassesUntracked) {
    TcpConn c;
    c.handshake();
    const ConnState before = c.st;
    EXPECT_EQ(c.deliver(kOrig, tcp_info(SYN, 99, 0)), CtVerdict::ignore);
    EXPECT_EQ(c.server(SYN | ACK), CtVerdict::ignore) << "a late SYN-ACK retransmission";
    EXPECT_TRUE(same_tracking(c.st, before));
}

// Both endpoints lost the connection we still hold: the client's new SYN is ignored, and the
// server's SYN-ACK that acknowledges it makes conntrack adopt the new handshake.
TEST(ConntrackTcp, SynAckAnsweringAnIgnoredSynResynchronises) {
    TcpConn c;
    c.handshake();
    ASSERT_EQ(c.deliver(kOrig, tcp_info(SYN, 50'000'000, 0)), CtVerdict::ignore);
    EXPECT_EQ(c.deliver(kReply, tcp_info(SYN | ACK, 90'000'000, 50'000'001)), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::syn_recv);
    EXPECT_EQ(c.deliver(kOrig, tcp_info(ACK, 50'000'001, 90'000'001)), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::established);
    EXPECT_EQ(c.deliver(kOrig, tcp_info(PSH | ACK, 50'000'001, 90'000'001, 100)), CtVerdict::accept);
}

// The adopted handshake keeps the ignored SYN's window scale: with both SYNs carrying it,
// the new connection's windows are scaled.
TEST(ConntrackTcp, AResynchronisedHandshakeKeepsTheSynsWindowScale) {
    for (const bool scaled : {true, false}) {
        TcpConn c;
        c.handshake();
        const uint8_t ws = scaled ? 7 : PacketInfo::kNoWscale;
        ASSERT_EQ(c.deliver(kOrig, tcp_info(SYN, 50'000'000, 0, 0, 65535, ws)), CtVerdict::ignore);
        ASSERT_EQ(c.deliver(kReply, tcp_info(SYN | ACK, 90'000'000, 50'000'001, 0, 65535, 7)), CtVerdict::accept);
        ASSERT_EQ(c.deliver(kOrig, tcp_info(ACK, 50'000'001, 90'000'001, 0, 1024)), CtVerdict::accept);
        ASSERT_EQ(c.deliver(kReply, tcp_info(ACK, 90'000'001, 50'000'001, 0, 1024)), CtVerdict::accept);
        EXPECT_EQ(c.st.tcp.scales & 0x0f, scaled ? 7 : 0);
        EXPECT_EQ(c.st.tcp.scales >> 4, scaled ? 7 : 0);
        // 1024 << 7 = 128 KiB: 100 KB ahead is inside it; unscaled, it is beyond the window.
        const PacketInfo far = tcp_info(PSH | ACK, 50'000'001 + 100'000, 90'000'001, 1000, 1024);
        EXPECT_EQ(c.deliver(kOrig, far), scaled ? CtVerdict::accept : CtVerdict::ignore);
    }
}

// RFC 5961 4.2: a SYN in LAST_ACK is answered with a challenge ACK, which is not the last ACK
// (Linux keeps LAST_ACK); the last ACK itself, from the side the SYN came from, is.
TEST(ConntrackTcp, TheChallengeAckAnsweringASynInLastAckIsNotTheLastAck) {
    TcpConn c;
    c.handshake();
    ASSERT_EQ(c.client(FIN | ACK), CtVerdict::accept);
    ASSERT_EQ(c.server(FIN | ACK), CtVerdict::accept);
    ASSERT_EQ(c.state(), TcpCtState::last_ack);
    ASSERT_EQ(c.deliver(kOrig, tcp_info(SYN, c.client_next + 100'000, 0)), CtVerdict::ignore);
    EXPECT_EQ(c.server(ACK), CtVerdict::ignore) << "the challenge ACK";
    EXPECT_EQ(c.state(), TcpCtState::last_ack);
    EXPECT_EQ(c.client(ACK), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::time_wait);
}

// A SYN on a half-closed connection (one FIN seen) passes untracked; the RST the endpoint
// answers it with (ack = the SYN's end) closes the entry without a window check.
TEST(ConntrackTcp, SynOnAHalfClosedConnectionAndTheRstAnsweringIt) {
    TcpConn c;
    c.handshake();
    ASSERT_EQ(c.server(FIN | ACK), CtVerdict::accept);
    ASSERT_EQ(c.state(), TcpCtState::fin_wait);
    EXPECT_EQ(c.deliver(kOrig, tcp_info(SYN, 60'000'000, 0)), CtVerdict::ignore);
    EXPECT_EQ(c.state(), TcpCtState::fin_wait);
    EXPECT_EQ(c.deliver(kReply, tcp_info(RST | ACK, 0, 60'000'001)), CtVerdict::accept);
    EXPECT_EQ(c.state(), TcpCtState::close);
    EXPECT_EQ(c.deliver(kOrig, tcp_info(SYN, 60'000'000, 0)), CtVerdict::reopen) << "a FIN was seen";
}

// A SYN in CLOSE after the *other* side's RST, with no FIN ever: Linux passes it untracked
// rather than reopening.
TEST(ConntrackTcp, SynAfterThePeersResetIsIgnoredNotReopened) {
    TcpConn c;
    c.handshake();
    ASSERT_EQ(c.server(RST), CtVerdict::accept);
    EXPECT_EQ(c.deliver(kOrig, tcp_info(SYN, 8'000'000, 0)), CtVerdict::ignore);
    EXPECT_EQ(c.state(), TcpCtState::close);
    TcpConn own;
    own.handshake();
    ASSERT_EQ(own.client(RST), CtVerdict::accept);
    EXPECT_EQ(own.deliver(kOrig, tcp_info(SYN, 8'000'000, 0)), CtVerdict::reopen) << "after its own RST";
}

TEST(ConntrackTcp, InvalidFlagCombinationsAreDroppedInAnyState) {
    TcpConn c;
    c.handshake();
    const ConnState before = c.st;
    EXPECT_EQ(c.client(SYN | FIN), CtVerdict::invalid_flags);
    EXPECT_EQ(c.client(FIN), CtVerdict::invalid_flags) << "FIN without ACK";
    EXPECT_EQ(c.client(0), CtVerdict::invalid_flags);
    EXPECT_EQ(c.client(RST | FIN | ACK), CtVerdict::invalid_flags);
    EXPECT_TRUE(same(c.st, before));
    EXPECT_EQ(c.client(PSH | ACK | 0x40 | 0x80, 10), CtVerdict::accept) << "ECE and CWR";
}

TEST(ConntrackTcp, OtherProtocolsPacketOnATcpEntryIsInvalid) {
    TcpConn c;
    c.handshake();
    PacketInfo udp;
    udp.proto = ipproto::kUdp;
    EXPECT_EQ(ct_update(c.st, kOrig, udp, c.timeouts, c.now), CtVerdict::invalid_state);
}

// --- timeouts ------------------------------------------------------------------------------

TEST(ConntrackTimeouts, DefaultsAreLinuxs) {
    const CtTimeouts t;
    EXPECT_EQ(t.tcp_syn_sent, 120u);
    EXPECT_EQ(t.tcp_syn_recv, 60u);
    EXPECT_EQ(t.tcp_established, 432000u);
    EXPECT_EQ(t.tcp_fin_wait, 120u);
    EXPECT_EQ(t.tcp_close_wait, 60u);
    EXPECT_EQ(t.tcp_last_ack, 30u);
    EXPECT_EQ(t.tcp_time_wait, 120u);
    EXPECT_EQ(t.tcp_close, 10u);
    EXPECT_EQ(t.tcp_unacknowledged, 300u);
    EXPECT_EQ(t.udp_unreplied, 30u);
    EXPECT_EQ(t.udp_replied, 120u);
    EXPECT_EQ(t.icmp, 30u);
    EXPECT_EQ(t.generic, 600u);
}

TEST(ConntrackTimeouts, EveryTcpStateTakesItsOwnTimeout) {
    TcpConn c;
    // Distinct values so that a mix-up between two states shows.
    c.timeouts = CtTimeouts{.tcp_syn_sent = 11,
                            .tcp_syn_recv = 12,
                            .tcp_established = 13000,
                            .tcp_fin_wait = 14,
                            .tcp_close_wait = 15,
                            .tcp_last_ack = 16,
                            .tcp_time_wait = 17,
                            .tcp_close = 18,
                            .tcp_unacknowledged = 19};
    ASSERT_EQ(c.client(SYN), CtVerdict::accept);
    EXPECT_EQ(c.ttl_s(), 11u);
    ASSERT_EQ(c.server(SYN | ACK), CtVerdict::accept);
    EXPECT_EQ(c.ttl_s(), 12u);
    ASSERT_EQ(c.client(ACK), CtVerdict::accept);
    EXPECT_EQ(c.ttl_s(), 13000u);
    ASSERT_EQ(c.client(PSH | ACK, 100), CtVerdict::accept);
    EXPECT_EQ(c.ttl_s(), 19u) << "unacknowledged data caps the timer";
    ASSERT_EQ(c.server(ACK), CtVerdict::accept);
    EXPECT_EQ(c.ttl_s(), 13000u) << "until it is acknowledged";
    ASSERT_EQ(c.client(FIN | ACK), CtVerdict::accept);
    EXPECT_EQ(c.ttl_s(), 14u);
    ASSERT_EQ(c.server(ACK), CtVerdict::accept);
    EXPECT_EQ(c.ttl_s(), 15u);
    ASSERT_EQ(c.server(FIN | ACK), CtVerdict::accept);
    EXPECT_EQ(c.ttl_s(), 16u);
    ASSERT_EQ(c.client(ACK), CtVerdict::accept);
    EXPECT_EQ(c.ttl_s(), 17u);

    TcpConn r;
    r.timeouts = c.timeouts;
    r.handshake();
    ASSERT_EQ(r.server(RST), CtVerdict::accept);
    EXPECT_EQ(r.ttl_s(), 18u);

    for (uint8_t s = 0; s < kTcpCtStateCount; ++s) {
        EXPECT_GT(tcp_timeout_s(c.timeouts, static_cast<TcpCtState>(s)), 0u);
    }
    EXPECT_EQ(tcp_timeout_s(c.timeouts, TcpCtState::syn_sent2), 11u);
}

TEST(ConntrackTimeouts, ExpiryIsNeverEarlyAndFiresOnTheSecond) {
    const CtTimeouts t;
    PacketInfo udp;
    udp.proto = ipproto::kUdp;
    ConnState st{};
    const uint64_t t0 = 5 * kS + 300'000'000;  // 5.3 s: rounded up to 6 s
    ASSERT_EQ(ct_new(st, udp, t, t0), CtVerdict::accept);
    EXPECT_FALSE(ct_expired(st, t0 + 30 * kS - 1));
    EXPECT_FALSE(ct_expired(st, 35 * kS + 999'999'999));
    EXPECT_TRUE(ct_expired(st, 36 * kS));
    EXPECT_TRUE(ct_expired(ConnState{}, 0)) << "a zeroed entry is dead";
}

// --- UDP, ICMP, others ---------------------------------------------------------------------

TEST(ConntrackUdp, UnrepliedLives30sThenARepliedFlowLives120s) {
    const CtTimeouts t;
    PacketInfo udp;
    udp.proto = ipproto::kUdp;
    ConnState st{};
    uint64_t now = 100 * kS;
    ASSERT_EQ(ct_new(st, udp, t, now), CtVerdict::accept);
    EXPECT_FALSE(st.replied());
    EXPECT_FALSE(ct_expired(st, now + 29 * kS));
    EXPECT_TRUE(ct_expired(st, now + 30 * kS));

    now += 20 * kS;
    EXPECT_EQ(ct_update(st, kOrig, udp, t, now), CtVerdict::accept);
    EXPECT_EQ(ct_expires_ns(st), now + 30 * kS) << "more requests keep the short timer";
    EXPECT_EQ(ct_update(st, kReply, udp, t, now), CtVerdict::accept);
    EXPECT_TRUE(st.replied());
    EXPECT_EQ(ct_expires_ns(st), now + 120 * kS);
    now += 100 * kS;
    EXPECT_EQ(ct_update(st, kOrig, udp, t, now), CtVerdict::accept);
    EXPECT_EQ(ct_expires_ns(st), now + 120 * kS);
    EXPECT_EQ(ct_update(st, kOrig, udp, t, now + 120 * kS), CtVerdict::expired);
}

TEST(ConntrackIcmp, EchoRequestAndReplyMatchByIdentifier) {
    const CtTimeouts t;
    const auto echo = [](uint8_t type, uint16_t id) { return echo_info(type, id); };
    ConnState st{};
    uint64_t now = 7 * kS;
    EXPECT_EQ(ct_new(st, echo(icmp::kEchoReply, 7), t, now), CtVerdict::invalid_new);
    EXPECT_EQ(ct_new(st, echo(icmp::kDestUnreachable, 0), t, now), CtVerdict::invalid_new)
        << "errors are associated with their connection, never tracked";
    ASSERT_EQ(ct_new(st, echo(icmp::kEchoRequest, 7), t, now), CtVerdict::accept);
    EXPECT_EQ(ct_expires_ns(st), now + 30 * kS);

    now += 1 * kS;
    EXPECT_EQ(ct_update(st, kReply, echo(icmp::kEchoReply, 8), t, now), CtVerdict::invalid_state);
    EXPECT_EQ(ct_update(st, kOrig, echo(icmp::kEchoReply, 7), t, now), CtVerdict::invalid_state);
    EXPECT_FALSE(st.replied());
    EXPECT_EQ(ct_update(st, kReply, echo(icmp::kEchoRequest, 7), t, now), CtVerdict::new_flow)
        << "the other host pings with the same identifier: a flow of its own";
    EXPECT_EQ(ct_update(st, kReply, echo(icmp::kEchoReply, 7), t, now), CtVerdict::accept);
    EXPECT_TRUE(st.replied());
    now += 1 * kS;
    EXPECT_EQ(ct_update(st, kOrig, echo(icmp::kEchoRequest, 7), t, now), CtVerdict::accept)
        << "the next ping of the same session";
    EXPECT_FALSE(ct_expired(st, now + 30 * kS - 1));
    EXPECT_TRUE(ct_expired(st, now + 30 * kS));
}

// Linux's ICMP tuple holds the code: a reply must carry its request's code, a request with
// another code is a flow of its own (the rules decide), and either host may ping with the
// same identifier.
TEST(ConntrackIcmp, EchoFlowsAreKeyedByCodeAndDirectionLikeLinuxTuples) {
    const CtTimeouts t;
    const auto echo = [](uint8_t type, uint8_t code) { return echo_info(type, 9, code); };
    ConnState st{};
    ASSERT_EQ(ct_new(st, echo(icmp::kEchoRequest, 0), t, 0), CtVerdict::accept);
    EXPECT_EQ(ct_update(st, kReply, echo(icmp::kEchoReply, 3), t, 0), CtVerdict::invalid_state)
        << "a reply with another code answers no request";
    EXPECT_EQ(ct_update(st, kOrig, echo(icmp::kEchoRequest, 3), t, 0), CtVerdict::new_flow);
    ct_add_flow(st, kOrig, echo(icmp::kEchoRequest, 3), t, 0);
    EXPECT_EQ(ct_update(st, kReply, echo(icmp::kEchoReply, 3), t, 0), CtVerdict::accept);
    EXPECT_EQ(ct_update(st, kReply, echo(icmp::kEchoReply, 0), t, 0), CtVerdict::accept) << "the first flow lives on";

    ASSERT_EQ(ct_update(st, kReply, echo(icmp::kEchoRequest, 0), t, 0), CtVerdict::new_flow);
    EXPECT_EQ(ct_update(st, kOrig, echo(icmp::kEchoReply, 0), t, 0), CtVerdict::invalid_state) << "not added yet";
    ct_add_flow(st, kReply, echo(icmp::kEchoRequest, 0), t, 0);
    EXPECT_EQ(ct_update(st, kReply, echo(icmp::kEchoRequest, 0), t, 0), CtVerdict::accept);
    EXPECT_EQ(ct_update(st, kOrig, echo(icmp::kEchoReply, 0), t, 0), CtVerdict::accept);
    EXPECT_TRUE(ct_icmp_quote_matches(st, kOrig, echo(icmp::kEchoRequest, 3)));
    EXPECT_FALSE(ct_icmp_quote_matches(st, kOrig, echo(icmp::kEchoRequest, 4)));
    EXPECT_FALSE(ct_icmp_quote_matches(st, kOrig, echo(icmp::kTimeExceeded, 0)));

    for (uint8_t code = 10; code < 10 + kEchoCodes; ++code) ct_add_flow(st, kOrig, echo(icmp::kEchoRequest, code), t, 0);
    EXPECT_EQ(ct_update(st, kReply, echo(icmp::kEchoReply, 0), t, 0), CtVerdict::invalid_state)
        << "beyond kEchoCodes codes the oldest is forgotten";
    EXPECT_EQ(ct_update(st, kReply, echo(icmp::kEchoReply, 10 + kEchoCodes - 1), t, 0), CtVerdict::accept);
}

TEST(ConntrackGeneric, OtherProtocolsLiveTenMinutes) {
    const CtTimeouts t;
    PacketInfo gre;
    gre.proto = 47;
    ConnState st{};
    ASSERT_EQ(ct_new(st, gre, t, 0), CtVerdict::accept);
    EXPECT_EQ(ct_expires_ns(st), 600 * kS);
    EXPECT_EQ(ct_update(st, kReply, gre, t, 10 * kS), CtVerdict::accept);
    EXPECT_TRUE(st.replied());
    EXPECT_EQ(ct_expires_ns(st), 610 * kS);
}

TEST(ConntrackState, FitsItsBudget) {
    static_assert(sizeof(ConnState) <= 48);
    EXPECT_LE(sizeof(ConnState), 48u);
    static_assert(std::is_trivially_copyable_v<ConnState>, "tables copy entries by value");
    // same(), which the tests above compare states with, sees a change of any field.
    ConnState a{}, b{};
    b.expires_s = 1;
    EXPECT_FALSE(same(a, b));
}

TEST(ConntrackState, NamesForCalyxctl) {
    EXPECT_EQ(to_string(TcpCtState::established), "ESTABLISHED");
    EXPECT_EQ(to_string(TcpCtState::syn_sent2), "SYN_SENT2");
    EXPECT_EQ(to_string(TcpCtState::time_wait), "TIME_WAIT");
    EXPECT_EQ(to_string(CtVerdict::out_of_window), "out_of_window");
    for (uint8_t s = 0; s < kTcpCtStateCount; ++s) {
        EXPECT_NE(to_string(static_cast<TcpCtState>(s)), "?");
    }
}

// --- PacketInfo from frame bytes -----------------------------------------------------------

const MacAddr kVmMac{{0x52, 0x54, 0x00, 0x00, 0x01, 0x01}};
const MacAddr kGwMac{{0x52, 0x54, 0x00, 0xff, 0xff, 0x01}};
const Ipv4Addr kClientIp = Ipv4Addr::from_octets(10, 0, 0, 5);
const Ipv4Addr kServerIp = Ipv4Addr::from_octets(10, 0, 1, 7);
constexpr size_t kIpOff = sizeof(EtherHdr);
constexpr size_t kL4Off = kIpOff + sizeof(Ipv4Hdr);

// TCP options of a typical Linux SYN: MSS 1460, SACK permitted, timestamps, NOP, wscale.
std::vector<uint8_t> syn_options(uint8_t wscale) {
    return {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, wscale};
}

// A TCP frame with `options` after the fixed header (data offset fixed up) and `payload`.
std::vector<uint8_t> tcp_frame(Ipv4Addr src, Ipv4Addr dst, uint8_t flags, uint32_t seq,
                               uint32_t ack, const std::vector<uint8_t>& options,
                               const std::vector<uint8_t>& payload = {}, uint16_t window = 65535) {
    auto bytes =
        FrameBuilder()
            .eth(kVmMac, kGwMac)
            .ipv4(src, dst, ipproto::kTcp)
            .tcp(src == kClientIp ? 40000 : 443, src == kClientIp ? 443 : 40000, flags, seq, ack)
            .raw(options)
            .raw(payload)
            .build();
    auto* tcp = reinterpret_cast<TcpHdr*>(bytes.data() + kL4Off);
    tcp->data_offset = static_cast<uint8_t>(((sizeof(TcpHdr) + options.size()) / 4) << 4);
    tcp->window = Be16::from_host(window);
    return bytes;
}

PacketInfo parse(const std::vector<uint8_t>& frame) {
    Ipv4Hdr ip;
    std::memcpy(&ip, frame.data() + kIpOff, sizeof ip);
    return packet_info_from(ip, frame.data() + kL4Off, frame.size() - kL4Off);
}

TEST(ConntrackPacketInfo, ReadsTcpFieldsAndTheWindowScaleOfASyn) {
    const auto syn = tcp_frame(kClientIp, kServerIp, SYN, 0xdeadbeef, 0, syn_options(7), {}, 64240);
    const PacketInfo p = parse(syn);
    EXPECT_FALSE(p.malformed);
    EXPECT_EQ(p.proto, ipproto::kTcp);
    EXPECT_EQ(p.tcp_flags, SYN);
    EXPECT_EQ(p.seq, 0xdeadbeefu);
    EXPECT_EQ(p.window, 64240);
    EXPECT_EQ(p.wscale, 7);
    EXPECT_EQ(p.payload_len, 0);

    const auto data =
        tcp_frame(kClientIp, kServerIp, PSH | ACK, 5, 9, {1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 1},
                  std::vector<uint8_t>(333, 'x'));
    const PacketInfo d = parse(data);
    EXPECT_FALSE(d.malformed);
    EXPECT_EQ(d.payload_len, 333);
    EXPECT_EQ(d.ack, 9u);
    EXPECT_EQ(d.wscale, PacketInfo::kNoWscale) << "options are read from SYNs only";
}

TEST(ConntrackPacketInfo, WindowScaleIsCappedAndOptionsAreBoundsChecked) {
    EXPECT_EQ(parse(tcp_frame(kClientIp, kServerIp, SYN, 1, 0, syn_options(20))).wscale, 14);
    EXPECT_EQ(parse(tcp_frame(kClientIp, kServerIp, SYN, 1, 0, {})).wscale, PacketInfo::kNoWscale);
    // An option whose length runs past the header: stop reading, no scale.
    EXPECT_EQ(parse(tcp_frame(kClientIp, kServerIp, SYN, 1, 0, {2, 40, 0, 0})).wscale,
              PacketInfo::kNoWscale);
    EXPECT_EQ(parse(tcp_frame(kClientIp, kServerIp, SYN, 1, 0, {2, 0, 3, 3})).wscale,
              PacketInfo::kNoWscale)
        << "a zero option length ends parsing";
    EXPECT_EQ(parse(tcp_frame(kClientIp, kServerIp, SYN, 1, 0, {0, 0, 3, 3, 3, 5, 0, 0})).wscale,
              PacketInfo::kNoWscale)
        << "nothing after end-of-options";
    EXPECT_EQ(parse(tcp_frame(kClientIp, kServerIp, SYN, 1, 0, {1, 1, 1, 1, 1, 3, 3, 2})).wscale,
              2);
}

TEST(ConntrackPacketInfo, ReadsSackPermittedFromSynsAndTheHighestSackEdgeFromOthers) {
    const PacketInfo syn = parse(tcp_frame(kClientIp, kServerIp, SYN, 1, 0, syn_options(7)));
    EXPECT_EQ(syn.tcp_options, PacketInfo::kOptions | PacketInfo::kSackPerm);
    EXPECT_EQ(parse(tcp_frame(kClientIp, kServerIp, SYN, 1, 0, {})).tcp_options, 0) << "no options at all";

    // NOP, NOP, SACK with two blocks: 100-200 and 300-900.
    const std::vector<uint8_t> two_blocks{1, 1, 5, 18, 0, 0, 0, 100, 0, 0, 0, 200, 0, 0, 1, 44, 0, 0, 3, 132};
    const PacketInfo sack = parse(tcp_frame(kClientIp, kServerIp, ACK, 5, 9, two_blocks));
    EXPECT_EQ(sack.tcp_options, PacketInfo::kOptions | PacketInfo::kSack);
    EXPECT_EQ(sack.sack, 900u);
    EXPECT_EQ(sack.wscale, PacketInfo::kNoWscale);

    const PacketInfo ts = parse(tcp_frame(kClientIp, kServerIp, ACK, 5, 9, {1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 1}));
    EXPECT_EQ(ts.tcp_options, PacketInfo::kOptions) << "timestamps only: no SACK";
    // A SACK option whose length is not 2 + 8n is skipped.
    const PacketInfo odd = parse(tcp_frame(kClientIp, kServerIp, ACK, 5, 9, {5, 6, 0, 0, 0, 100, 1, 1}));
    EXPECT_EQ(odd.tcp_options, PacketInfo::kOptions);
}

TEST(ConntrackPacketInfo, PayloadLengthComesFromTheIpHeaderNotTheFramePadding) {
    auto bytes = tcp_frame(kClientIp, kServerIp, ACK, 100, 200, {});
    bytes.resize(bytes.size() + 6, 0);  // Ethernet padding to 60 bytes
    const PacketInfo p = parse(bytes);
    EXPECT_FALSE(p.malformed);
    EXPECT_EQ(p.payload_len, 0);
}

TEST(ConntrackPacketInfo, TruncatedOrInconsistentHeadersAreMalformed) {
    const auto ok = tcp_frame(kClientIp, kServerIp, ACK, 1, 2, {}, {1, 2, 3});
    Ipv4Hdr ip;
    std::memcpy(&ip, ok.data() + kIpOff, sizeof ip);
    const uint8_t* l4 = ok.data() + kL4Off;
    EXPECT_FALSE(packet_info_from(ip, l4, ok.size() - kL4Off).malformed);
    EXPECT_TRUE(packet_info_from(ip, l4, 19).malformed) << "TCP header cut short";
    EXPECT_TRUE(packet_info_from(ip, nullptr, 0).malformed);

    auto bad_doff = ok;
    reinterpret_cast<TcpHdr*>(bad_doff.data() + kL4Off)->data_offset = 0x40;  // 16 bytes
    EXPECT_TRUE(parse(bad_doff).malformed);
    reinterpret_cast<TcpHdr*>(bad_doff.data() + kL4Off)->data_offset = 0xf0;  // 60 > 23
    EXPECT_TRUE(parse(bad_doff).malformed);

    Ipv4Hdr frag = ip;
    frag.frag = Be16::from_host(100);  // offset 800: no L4 header in here
    EXPECT_TRUE(packet_info_from(frag, l4, ok.size() - kL4Off).malformed);
    Ipv4Hdr short_total = ip;
    short_total.total_length = Be16::from_host(30);  // says 10 bytes of TCP
    EXPECT_TRUE(packet_info_from(short_total, l4, ok.size() - kL4Off).malformed);

    auto udp = FrameBuilder()
                   .eth(kVmMac, kGwMac)
                   .ipv4(kClientIp, kServerIp, ipproto::kUdp)
                   .udp(5353, 53)
                   .build();
    EXPECT_FALSE(parse(udp).malformed);
    udp.resize(udp.size() - 1);
    reinterpret_cast<Ipv4Hdr*>(udp.data() + kIpOff)->total_length = Be16::from_host(27);
    EXPECT_TRUE(parse(udp).malformed);

    const auto ping =
        FrameBuilder().eth(kVmMac, kGwMac).ipv4(kClientIp, kServerIp).icmp_echo(0x1234, 1).build();
    const PacketInfo e = parse(ping);
    EXPECT_FALSE(e.malformed);
    EXPECT_EQ(e.icmp_type, icmp::kEchoRequest);
    EXPECT_EQ(e.icmp_id, 0x1234);
    PacketInfo m;
    m.malformed = true;
    ConnState st{};
    EXPECT_EQ(ct_new(st, m, CtTimeouts{}, 0), CtVerdict::malformed);
}

TEST(ConntrackPacketInfo, ScaledConnectionFromRealFrames) {
    // The whole exchange parsed from bytes: SYN and SYN-ACK carry wscale 7, then the server
    // opens a 4 MiB window that only scaling makes possible.
    const CtTimeouts t;
    ConnState st{};
    uint64_t now = 50 * kS;
    const uint32_t c = 1'000'000, s = 3'000'000'000u;
    ASSERT_EQ(ct_new(st, parse(tcp_frame(kClientIp, kServerIp, SYN, c, 0, syn_options(7))), t, now),
              CtVerdict::accept);
    ASSERT_EQ(ct_update(st, kReply,
                        parse(tcp_frame(kServerIp, kClientIp, SYN | ACK, s, c + 1, syn_options(7))),
                        t, now),
              CtVerdict::accept);
    ASSERT_EQ(
        ct_update(st, kOrig, parse(tcp_frame(kClientIp, kServerIp, ACK, c + 1, s + 1, {})), t, now),
        CtVerdict::accept);
    ASSERT_EQ(st.tcp_state, TcpCtState::established);
    ASSERT_EQ(
        ct_update(st, kReply,
                  parse(tcp_frame(kServerIp, kClientIp, ACK, s + 1, c + 1, {}, {}, 32768)), t, now),
        CtVerdict::accept);
    const auto far = tcp_frame(kClientIp, kServerIp, PSH | ACK, c + 1 + 3'000'000, s + 1, {},
                               std::vector<uint8_t>(1000, 'a'));
    EXPECT_EQ(ct_update(st, kOrig, parse(far), t, now), CtVerdict::accept);
    const auto too_far = tcp_frame(kClientIp, kServerIp, PSH | ACK, c + 1 + 9'000'000, s + 1, {},
                                   std::vector<uint8_t>(1000, 'a'));
    EXPECT_EQ(ct_update(st, kOrig, parse(too_far), t, now), CtVerdict::out_of_window);
}

}  // namespace
}  // namespace calyx::dp
