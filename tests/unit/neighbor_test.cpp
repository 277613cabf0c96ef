// The uplink's ARP cache: its state machine with injected time, and concurrent learners.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <thread>

#include "dp/neighbor.hpp"

namespace calyx::dp {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;
const Ipv4Addr kGateway = Ipv4Addr::from_octets(198, 51, 100, 1);
const Ipv4Addr kHost = Ipv4Addr::from_octets(198, 51, 100, 20);
const MacAddr kMac{{0x02, 0, 0, 0, 0, 0x01}};
const MacAddr kOtherMac{{0x02, 0, 0, 0, 0, 0x02}};

bool asks_for(const std::vector<NeighborTable::Request>& due, Ipv4Addr ip) {
    return std::any_of(due.begin(), due.end(), [&](const auto& r) { return r.ip == ip; });
}

NeighborState state_of(const NeighborTable& t, Ipv4Addr ip) {
    for (const auto& e : t.entries())
        if (e.ip == ip) return e.state;
    return NeighborState::empty;
}

bool shows_a_mac(const NeighborTable& t, Ipv4Addr ip) {
    for (const auto& e : t.entries())
        if (e.ip == ip) return e.mac.has_value();
    return false;
}

TEST(NeighborTable, PinnedGatewayIsRequestedRetriedThenFailedAndTriedAgain) {
    NeighborTable t;
    uint64_t now = 100 * kSecond;
    t.pin(kGateway, now);
    EXPECT_FALSE(t.lookup(kGateway));
    // Three requests one second apart, broadcast.
    for (int i = 0; i < 3; ++i, now += kSecond) {
        const auto due = t.due_requests(now);
        ASSERT_TRUE(asks_for(due, kGateway)) << i;
        EXPECT_FALSE(due.front().unicast_to);
        EXPECT_FALSE(asks_for(t.due_requests(now + kSecond / 2), kGateway)) << "not before the retry time";
    }
    EXPECT_TRUE(t.due_requests(now).empty());
    EXPECT_EQ(state_of(t, kGateway), NeighborState::failed);
    EXPECT_FALSE(shows_a_mac(t, kGateway)) << "calyxctl shows no MAC for a failed entry";
    // Pinned: after the hold time it starts over on its own.
    now += NeighborTable::kFailedHoldNs;
    EXPECT_TRUE(asks_for(t.due_requests(now), kGateway));
    EXPECT_EQ(state_of(t, kGateway), NeighborState::incomplete);
    // With the same three tries: that was the first, two more, then failed again.
    for (int i = 1; i < 3; ++i) {
        now += kSecond;
        EXPECT_TRUE(asks_for(t.due_requests(now), kGateway)) << i;
    }
    now += kSecond;
    EXPECT_TRUE(t.due_requests(now).empty());
    EXPECT_EQ(state_of(t, kGateway), NeighborState::failed);
}

// Requests sent while the link was down were lost: once it is up the gateway is asked for at
// once, with its full number of tries, not after the failed hold time. Resolved entries keep
// their MAC.
TEST(NeighborTable, LinkUpRetriesFailedEntriesAtOnce) {
    NeighborTable t;
    uint64_t now = 100 * kSecond;
    t.pin(kGateway, now);
    t.want(kHost, now);
    ASSERT_TRUE(t.learn(kHost, kMac, now, false));
    for (int i = 0; i < 4; ++i, now += kSecond) t.due_requests(now);  // 3 requests, then failed
    ASSERT_EQ(state_of(t, kGateway), NeighborState::failed);
    EXPECT_FALSE(asks_for(t.due_requests(now), kGateway)) << "held until the failed hold time";
    t.link_up(now);
    EXPECT_EQ(state_of(t, kGateway), NeighborState::incomplete);
    for (int i = 0; i < 3; ++i, now += kSecond) EXPECT_TRUE(asks_for(t.due_requests(now), kGateway)) << i;
    EXPECT_EQ(t.lookup(kHost), kMac);
}

TEST(NeighborTable, AnswerMakesItReachableThenStaleAndRefreshedByUnicast) {
    NeighborTable t;
    uint64_t now = 100 * kSecond;
    t.pin(kGateway, now);
    t.due_requests(now);
    ASSERT_TRUE(t.learn(kGateway, kMac, now, false));
    EXPECT_EQ(t.lookup(kGateway), kMac);
    EXPECT_TRUE(t.due_requests(now + kSecond).empty()) << "reachable: nothing to ask";
    now += NeighborTable::kReachableNs;
    const auto due = t.due_requests(now);
    ASSERT_TRUE(asks_for(due, kGateway));
    EXPECT_EQ(due.front().unicast_to, kMac) << "a refresh asks the known MAC";
    EXPECT_EQ(state_of(t, kGateway), NeighborState::stale);
    EXPECT_EQ(t.lookup(kGateway), kMac) << "stale is still used";
    // The known MAC answers the refresh.
    EXPECT_TRUE(t.learn(kGateway, kMac, now, false));
    EXPECT_EQ(state_of(t, kGateway), NeighborState::reachable);
}

// ---- ARP poisoning: a claimed change is verified by probing the known MAC ----

// Advances by control-plane ticks of 100 ms to `until`, answering each probe of the known MAC
// when `known_answers`; returns the probes sent.
std::vector<NeighborTable::Request> tick_until(NeighborTable& t, uint64_t& now, uint64_t until,
                                               bool known_answers, const std::function<void()>& each_tick = {}) {
    std::vector<NeighborTable::Request> probes;
    for (; now < until; now += kSecond / 10) {
        if (each_tick) each_tick();
        for (const auto& r : t.due_requests(now)) {
            probes.push_back(r);
            if (known_answers && r.ip == kGateway && r.unicast_to == kMac) t.learn(kGateway, kMac, now + 1000, false);
        }
    }
    return probes;
}

TEST(NeighborTable, PoisonedClaimIsHeldAndRefutedWhileTheKnownMacAnswers) {
    NeighborTable t;
    uint64_t now = 100 * kSecond;
    t.pin(kGateway, now);
    t.due_requests(now);
    ASSERT_TRUE(t.learn(kGateway, kMac, now, false));
    // Anyone on the segment says the gateway is at kOtherMac.
    EXPECT_EQ(t.learn(kGateway, kOtherMac, now, false).outcome, Learned::held);
    EXPECT_EQ(t.lookup(kGateway), kMac) << "not believed before it is verified";
    ASSERT_EQ(t.entries().front().claimed, kOtherMac);
    // The control plane probes the known MAC by unicast at once; it answers.
    const auto probes = tick_until(t, now, now + 10 * kSecond, true);
    ASSERT_EQ(probes.size(), 1u) << "one probe refutes the claim";
    EXPECT_EQ(probes.front().unicast_to, kMac);
    EXPECT_EQ(t.lookup(kGateway), kMac);
    EXPECT_FALSE(t.entries().front().claimed);
    EXPECT_EQ(state_of(t, kGateway), NeighborState::reachable);
}

TEST(NeighborTable, PersistentPoisonerNeverWinsWhileTheKnownMacAnswers) {
    NeighborTable t;
    uint64_t now = 100 * kSecond;
    t.pin(kGateway, now);
    ASSERT_TRUE(t.learn(kGateway, kMac, now, false));
    // A claim every tick, for a minute (the entry also goes stale and is refreshed meanwhile).
    const auto probes = tick_until(t, now, now + 60 * kSecond, true, [&] { t.learn(kGateway, kOtherMac, now, false); });
    EXPECT_EQ(t.lookup(kGateway), kMac);
    EXPECT_GE(probes.size(), 50u) << "every renewed claim is probed again";
    EXPECT_LE(probes.size(), 61u) << "at most one probe a second";
}

TEST(NeighborTable, FailoverIsFollowedWhenTheKnownMacIsSilent) {
    NeighborTable t;
    uint64_t now = 100 * kSecond;
    t.pin(kGateway, now);
    ASSERT_TRUE(t.learn(kGateway, kMac, now, false));
    now += 5 * kSecond;
    // keepalived's new master announces itself; the old one is gone.
    const uint64_t announced = now;
    EXPECT_EQ(t.learn(kGateway, kOtherMac, now, false).outcome, Learned::held);
    uint64_t adopted = 0;
    for (; now < announced + 10 * kSecond && !adopted; now += kSecond / 10) {
        const auto due = t.due_requests(now);
        for (const auto& r : due) EXPECT_EQ(r.unicast_to, kMac) << "only the known MAC is probed";
        if (t.lookup(kGateway) == kOtherMac) adopted = now;
    }
    ASSERT_NE(adopted, 0u) << "the new MAC was never believed";
    EXPECT_GE(adopted - announced, NeighborTable::kMaxRequests * NeighborTable::kRetryNs)
        << "every probe of the known MAC went unanswered first";
    EXPECT_LE(adopted - announced, 4 * kSecond) << "failover within a few seconds";
    EXPECT_EQ(state_of(t, kGateway), NeighborState::reachable);
    EXPECT_FALSE(t.entries().front().claimed);
    // The old MAC coming back is now the claim to verify.
    EXPECT_EQ(t.learn(kGateway, kMac, now, false).outcome, Learned::held);
    EXPECT_EQ(t.lookup(kGateway), kOtherMac);
}

TEST(NeighborTable, StaleEntryIsVerifiedTooAndUnresolvedOnesBelieveTheFirstAnswer) {
    NeighborTable t;
    uint64_t now = 100 * kSecond;
    t.want(kHost, now);
    t.due_requests(now);
    EXPECT_TRUE(t.learn(kHost, kMac, now, false)) << "incomplete: the first answer is believed";
    now += NeighborTable::kReachableNs;
    t.lookup(kHost, now);  // in use
    t.due_requests(now);
    ASSERT_EQ(state_of(t, kHost), NeighborState::stale);
    EXPECT_EQ(t.learn(kHost, kOtherMac, now, false).outcome, Learned::held);
    EXPECT_EQ(t.lookup(kHost), kMac);
}

TEST(NeighborTable, StaleEntryThatStopsAnsweringFails) {
    NeighborTable t;
    uint64_t now = 100 * kSecond;
    t.pin(kGateway, now);
    t.learn(kGateway, kMac, now, false);
    now += NeighborTable::kReachableNs;
    for (int i = 0; i < 3; ++i, now += kSecond) ASSERT_TRUE(asks_for(t.due_requests(now), kGateway));
    t.due_requests(now);
    EXPECT_EQ(state_of(t, kGateway), NeighborState::failed);
    EXPECT_FALSE(t.lookup(kGateway)) << "failed: packets are dropped, not sent to an old MAC";
}

TEST(NeighborTable, WantedHostsAreResolvedAndForgottenWhenUnused) {
    NeighborTable t;
    uint64_t now = 100 * kSecond;
    t.want(kHost, now);
    EXPECT_TRUE(asks_for(t.due_requests(now), kHost));
    t.learn(kHost, kMac, now, false);
    EXPECT_EQ(t.lookup(kHost), kMac);
    // Nobody sends to it for a minute: it goes, after a grace period.
    now += NeighborTable::kUnusedNs + NeighborTable::kReachableNs;
    t.due_requests(now);
    EXPECT_FALSE(t.lookup(kHost));
    EXPECT_EQ(t.retiring(), 1u);
    EXPECT_EQ(t.release_retired(), 1u);
    EXPECT_TRUE(t.entries().empty());
}

// A released entry is free like a never-used one: the next address that takes it starts as
// any wanted address does (resolving, unpinned), nothing of the last one's state left.
TEST(NeighborTable, AReleasedEntryStartsAfreshForTheNextAddressThatTakesIt) {
    NeighborTable t;
    uint64_t now = 100 * kSecond;
    t.want(kHost, now);
    t.learn(kHost, kMac, now, false);
    now += NeighborTable::kUnusedNs + NeighborTable::kReachableNs;
    t.due_requests(now);
    ASSERT_EQ(t.release_retired(), 1u);
    t.want(kHost, now);  // the same home slot
    const auto entries = t.entries();
    ASSERT_EQ(entries.size(), 1u);
    EXPECT_EQ(entries[0].state, NeighborState::incomplete);
    EXPECT_FALSE(entries[0].pinned);
    EXPECT_FALSE(entries[0].mac);
    EXPECT_TRUE(asks_for(t.due_requests(now), kHost));
}

TEST(NeighborTable, LearnsStrangersOnlyWhenAskedTo) {
    NeighborTable t;
    EXPECT_FALSE(t.learn(kHost, kMac, 1, false)) << "an ARP nobody wanted";
    EXPECT_FALSE(t.lookup(kHost));
    EXPECT_TRUE(t.learn(kHost, kMac, 1, true)) << "it asked for one of calyx's addresses";
    EXPECT_EQ(t.lookup(kHost), kMac);
    EXPECT_FALSE(t.learn(kGateway, MacAddr::broadcast(), 1, true)) << "never a broadcast MAC";
    EXPECT_FALSE(t.learn(kGateway, MacAddr{}, 1, true)) << "never a zero MAC";
}

TEST(NeighborTable, FullTableRefusesQuietly) {
    NeighborTable t;
    for (uint32_t i = 1; i <= 4 * NeighborTable::kCapacity; ++i)
        t.want(Ipv4Addr{Ipv4Addr::from_octets(10, 0, 0, 0).value + i}, 1);
    EXPECT_LE(t.entries().size(), NeighborTable::kCapacity);
    EXPECT_GT(t.entries().size(), NeighborTable::kCapacity / 2);
}

TEST(NeighborTable, ConcurrentLearnersAndReadersNeverSeeAForeignMac) {
    NeighborTable t;
    t.pin(kGateway, 1);
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> wrong{0};
    std::thread learner([&] {
        for (uint64_t i = 0; !stop; ++i) t.learn(kGateway, (i & 1) ? kMac : kOtherMac, i, false);
    });
    std::thread reader([&] {
        while (!stop)
            if (auto mac = t.lookup(kGateway); mac && *mac != kMac && *mac != kOtherMac) ++wrong;
    });
    for (uint64_t now = 0; now < 2000; ++now) t.due_requests(now * NeighborTable::kRetryNs);
    stop = true;
    learner.join();
    reader.join();
    EXPECT_EQ(wrong.load(), 0u);
}

// One gateway is pinned at a time: pinning a new one (a reload changed uplink.gateway) unpins
// the old, which is then forgotten like any host nobody wants.
TEST(NeighborTable, PinningAnotherGatewayUnpinsTheOld) {
    NeighborTable t;
    const Ipv4Addr old_gw = Ipv4Addr::from_octets(198, 51, 100, 1), new_gw = Ipv4Addr::from_octets(198, 51, 100, 2);
    t.pin(old_gw, 0);
    t.pin(new_gw, 0);
    bool saw_old = false, saw_new = false;
    for (const auto& e : t.entries()) {
        if (e.ip == old_gw) {
            saw_old = true;
            EXPECT_FALSE(e.pinned) << "the old gateway is still pinned";
        }
        if (e.ip == new_gw) {
            saw_new = true;
            EXPECT_TRUE(e.pinned);
        }
    }
    EXPECT_TRUE(saw_old && saw_new);
}
// A lookup without a time (the control plane's, calyxctl's) is no use and changes no mark: a
// host the data path wanted 30 s ago is still verified, not forgotten.
TEST(NeighborTable, ALookupWithoutATimeLeavesTheUseMarkAlone) {
    NeighborTable t;
    uint64_t now = 100 * kSecond;
    t.want(kHost, now);
    t.due_requests(now);
    ASSERT_TRUE(t.learn(kHost, kMac, now, false));
    now += NeighborTable::kReachableNs + 1;  // no longer reachable, wanted less than kUnusedNs ago
    ASSERT_EQ(t.lookup(kHost), kMac);
    EXPECT_TRUE(asks_for(t.due_requests(now), kHost));
    EXPECT_EQ(t.retiring(), 0u);
    EXPECT_EQ(state_of(t, kHost), NeighborState::stale);
}

// A hit marks the entry in use at most once per kRetryNs (the cache line stays shared): a
// lookup exactly kRetryNs after the last mark does not mark it again, so at kUnusedNs after
// that mark nobody wanted the host and it is forgotten, not asked for.
TEST(NeighborTable, AHitMarksUseAtMostOncePerRetryInterval) {
    NeighborTable t;
    const Ipv4Addr host = Ipv4Addr::from_octets(198, 51, 100, 20);
    const MacAddr mac{{0x02, 0, 0, 0, 0, 0x20}};
    const uint64_t t0 = 1'000'000'000;
    ASSERT_TRUE(t.learn(host, mac, t0, true));  // marks it wanted at t0
    ASSERT_EQ(t.lookup(host, t0 + NeighborTable::kRetryNs), mac);
    const auto requests = t.due_requests(t0 + NeighborTable::kUnusedNs);
    EXPECT_TRUE(std::ranges::none_of(requests, [&](const auto& r) { return r.ip == host; }))
        << "the lookup at exactly kRetryNs counted as a new use";
    EXPECT_EQ(t.retiring(), 1u);
    // One nanosecond later a lookup does mark it.
    NeighborTable u;
    ASSERT_TRUE(u.learn(host, mac, t0, true));
    ASSERT_EQ(u.lookup(host, t0 + NeighborTable::kRetryNs + 1), mac);
    const auto asked = u.due_requests(t0 + NeighborTable::kUnusedNs);
    EXPECT_TRUE(std::ranges::any_of(asked, [&](const auto& r) { return r.ip == host; }));
}

}  // namespace
}  // namespace calyx::dp
