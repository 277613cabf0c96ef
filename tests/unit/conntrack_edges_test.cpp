// Edges of the connection-tracking state machines the main tests (conntrack_state_test.cpp)
// pass by: a timer started between two seconds, and a reset that carries no ACK flag.
#include <gtest/gtest.h>

#include "dp/conntrack_state.hpp"

namespace calyx::dp {
namespace {

constexpr uint64_t kS = 1'000'000'000ull;

PacketInfo tcp(uint8_t flags, uint32_t seq, uint32_t ack) {
    PacketInfo p;
    p.proto = ipproto::kTcp;
    p.tcp_flags = flags;
    p.seq = seq;
    p.ack = ack;
    p.window = 65535;
    return p;
}

// A timer never fires early: one started a nanosecond after a whole second counts from the
// next second.
TEST(ConntrackEdges, ATimerStartedBetweenSecondsRoundsUp) {
    const CtTimeouts t;
    PacketInfo udp;
    udp.proto = ipproto::kUdp;
    ConnState st{};
    const uint64_t start = 1000 * kS + 1;
    ASSERT_EQ(ct_new(st, udp, t, start), CtVerdict::accept);
    EXPECT_EQ(ct_expires_ns(st), (1001 + uint64_t{t.udp_unreplied}) * kS);
    EXPECT_FALSE(ct_expired(st, start + uint64_t{t.udp_unreplied} * kS)) << "fired early";
    EXPECT_TRUE(ct_expired(st, (1001 + uint64_t{t.udp_unreplied}) * kS));
}

// Without the ACK flag the acknowledgment field means nothing (RFC 793 3.1): a bare RST at the
// exact next sequence resets an established connection whatever that field holds.
TEST(ConntrackEdges, ABareResetIgnoresItsAcknowledgmentField) {
    const CtTimeouts t;
    ConnState st{};
    const uint64_t now = 100 * kS;
    ASSERT_EQ(ct_new(st, tcp(TcpHdr::kSyn, 1000, 0), t, now), CtVerdict::accept);
    ASSERT_EQ(ct_update(st, Direction::reply, tcp(TcpHdr::kSyn | TcpHdr::kAck, 5000, 1001), t, now), CtVerdict::accept);
    ASSERT_EQ(ct_update(st, Direction::original, tcp(TcpHdr::kAck, 1001, 5001), t, now), CtVerdict::accept);
    ASSERT_EQ(st.tcp_state, TcpCtState::established);
    // The field holds what a buggy or hostile stack left there: beyond anything the server sent.
    EXPECT_EQ(ct_update(st, Direction::original, tcp(TcpHdr::kRst, 1001, 5001 + 100000), t, now), CtVerdict::accept);
    EXPECT_EQ(st.tcp_state, TcpCtState::close);
}

}  // namespace
}  // namespace calyx::dp
