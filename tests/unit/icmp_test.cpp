// ICMP error budget: the token bucket that keeps a flood of expiring packets from turning
// calyx into an ICMP amplifier.
#include <gtest/gtest.h>

#include "dp/worker_context.hpp"

namespace calyx::dp {
namespace {

TEST(IcmpErrorBudget, StartsWithAFullBurst) {
    IcmpErrorBudget b;
    for (int i = 0; i < 5; ++i) EXPECT_TRUE(b.take(1000, 100, 5)) << i;
    EXPECT_FALSE(b.take(1000, 100, 5));
}

TEST(IcmpErrorBudget, RefillsAtTheConfiguredRateUpToTheBurst) {
    IcmpErrorBudget b;
    for (int i = 0; i < 5; ++i) b.take(0, 100, 5);
    EXPECT_FALSE(b.take(5'000'000, 100, 5)) << "half a token after 5 ms at 100/s";
    EXPECT_TRUE(b.take(10'000'000, 100, 5)) << "one token after 10 ms";
    EXPECT_FALSE(b.take(10'000'000, 100, 5));
    // An hour later the bucket holds at most the burst.
    int granted = 0;
    while (b.take(3'600'000'000'000ull, 100, 5)) ++granted;
    EXPECT_EQ(granted, 5);
}

TEST(IcmpErrorBudget, SlowRatesStillRefill) {
    IcmpErrorBudget b;
    b.take(0, 1, 1);
    EXPECT_FALSE(b.take(999'000'000, 1, 1));
    EXPECT_TRUE(b.take(1'000'000'000, 1, 1));
}

}  // namespace
}  // namespace calyx::dp
