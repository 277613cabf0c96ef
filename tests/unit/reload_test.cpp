// What a live reload may change, and what needs a restart.
#include <gtest/gtest.h>

#include "cp/reload.hpp"

namespace calyx::cp {
namespace {

TEST(Reload, SnapshotContentsMayChange) {
    config::Config running, next;
    next.networks.push_back({});
    next.security_groups.push_back({});
    next.dataplane.conntrack.tcp_established = 60;
    next.dataplane.icmp_errors_per_second = 5;
    EXPECT_EQ(restart_required(running, next), std::nullopt);
}

TEST(Reload, StartUpSettingsNeedARestartAndAreAllNamed) {
    config::Config running, next;
    next.dataplane.workers = {1, 2};
    next.dataplane.conntrack.capacity = 2048;
    next.metrics.listen = "127.0.0.1:1";
    const auto why = restart_required(running, next);
    ASSERT_TRUE(why.has_value());
    EXPECT_EQ(*why,
              "dataplane.workers, dataplane.conntrack.capacity, metrics.listen cannot change while "
              "calyx runs: restart calyx to apply");
}

}  // namespace
}  // namespace calyx::cp
