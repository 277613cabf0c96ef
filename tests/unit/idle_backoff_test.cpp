// The worker's adaptive idle sleep (io/idle_backoff.hpp) on an injected clock.
#include <gtest/gtest.h>

#include <vector>

#include "io/idle_backoff.hpp"

namespace calyx::io {
namespace {

constexpr uint64_t kUs = 1000;

// The sleeps asked for by `n` empty iterations, each `step_ns` after the previous, starting
// right after a busy one at t0.
std::vector<uint32_t> idle_run(IdleBackoff& b, uint64_t t0, int n, uint64_t step_ns, uint32_t max_us) {
    std::vector<uint32_t> sleeps;
    for (int i = 1; i <= n; ++i) sleeps.push_back(b.next(false, t0 + static_cast<uint64_t>(i) * step_ns, max_us));
    return sleeps;
}

TEST(IdleBackoff, NeverSleepsWhilePacketsArrive) {
    IdleBackoff b;
    for (uint64_t t = 0; t < 10'000 * kUs; t += kUs) EXPECT_EQ(b.next(true, t, 100), 0u);
}

TEST(IdleBackoff, ZeroMeansPurePolling) {
    IdleBackoff b;
    b.next(true, 0, 0);
    for (uint32_t s : idle_run(b, 0, 1000, 10 * kUs, 0)) EXPECT_EQ(s, 0u);
}

TEST(IdleBackoff, KeepsPollingShortlyAfterTheLastPacketThenDoublesUpToTheMaximum) {
    IdleBackoff b;
    b.next(true, 1'000'000, 100);
    // Iterations 10 us apart: the first ones fall inside the spin window.
    const auto sleeps = idle_run(b, 1'000'000, 14, 10 * kUs, 100);
    const std::vector<uint32_t> expected{0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, 100, 100, 100};
    EXPECT_EQ(sleeps, expected);
}

TEST(IdleBackoff, OnePacketStartsTheBackoffOver) {
    IdleBackoff b;
    b.next(true, 0, 100);
    idle_run(b, 0, 20, 10 * kUs, 100);
    EXPECT_EQ(b.next(true, 300 * kUs, 100), 0u);
    EXPECT_EQ(b.next(false, 310 * kUs, 100), 0u) << "spinning again after the packet";
    EXPECT_EQ(b.next(false, 360 * kUs, 100), 1u) << "then the smallest sleep first";
}

TEST(IdleBackoff, AShorterMaximumFromAReloadAppliesAtOnce) {
    IdleBackoff b;
    b.next(true, 0, 1000);
    const auto long_sleeps = idle_run(b, 0, 20, 10 * kUs, 1000);
    EXPECT_EQ(long_sleeps.back(), 1000u);
    EXPECT_EQ(b.next(false, 300 * kUs, 20), 20u);
    EXPECT_EQ(b.next(false, 310 * kUs, 0), 0u) << "pure polling from the next iteration";
}

}  // namespace
}  // namespace calyx::io
