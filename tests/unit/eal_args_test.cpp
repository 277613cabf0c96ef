// The EAL command line calyx builds: lcores, which PCI devices EAL may probe (only a pci
// uplink's, never the machine's own NIC), shared-file handling, and the user's extra args.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "calyx/config.hpp"
#include "io/eal.hpp"

namespace calyx::io {
namespace {

using config::UplinkConfig;
using Args = std::vector<std::string>;

bool has(const Args& args, const std::string& a) {
    return std::find(args.begin(), args.end(), a) != args.end();
}

// The value after option `opt`, or "" when the option is absent or last.
std::string value_of(const Args& args, const std::string& opt) {
    auto it = std::find(args.begin(), args.end(), opt);
    return it == args.end() || std::next(it) == args.end() ? "" : *std::next(it);
}

UplinkConfig uplink(config::UplinkPort port) {
    UplinkConfig u;
    u.port = std::move(port);
    return u;
}

const config::PciPort kPci{"0000:3b:00.1"};

TEST(EalArguments, MainLcoreZeroThenTheWorkers) {
    config::DataplaneConfig dp;
    dp.workers = {1, 3};
    const Args args = eal_arguments(dp, std::nullopt, "calyx");
    ASSERT_FALSE(args.empty());
    EXPECT_EQ(args.front(), "calyx");
    EXPECT_EQ(value_of(args, "-l"), "0,1,3");
    EXPECT_EQ(value_of(args, "--main-lcore"), "0");
}

// --lcores maps lcores to CPUs (e.g. more workers than CPUs in a test); -l would contradict it.
TEST(EalArguments, OperatorsLcoreMapReplacesTheLcoreList) {
    config::DataplaneConfig dp;
    dp.workers = {1, 2};
    dp.eal_args = {"--lcores", "0@0,1@1,2@1"};
    const Args args = eal_arguments(dp, std::nullopt, "calyx");
    EXPECT_FALSE(has(args, "-l"));
    EXPECT_EQ(value_of(args, "--lcores"), "0@0,1@1,2@1");
    EXPECT_EQ(value_of(args, "--main-lcore"), "0");
}

TEST(EalArguments, WithoutUplinkNoPciDeviceIsProbed) {
    const Args args = eal_arguments({}, std::nullopt, "calyx");
    EXPECT_TRUE(has(args, "--no-pci"));
    EXPECT_FALSE(has(args, "-a"));
}

TEST(EalArguments, VdevUplinksProbeNoPciDevice) {
    const config::UplinkPort vdevs[] = {config::TapPort{"calyx0"}, config::AfPacketPort{"eth1"},
                                        config::VhostUserPort{"/run/calyx/uplink.sock"}};
    for (const config::UplinkPort& port : vdevs) {
        const Args args = eal_arguments({}, uplink(port), "calyx");
        EXPECT_TRUE(has(args, "--no-pci")) << config::type_name(port);
        EXPECT_FALSE(has(args, "-a")) << config::type_name(port);
        // The uplink is created later as a vdev, not on the command line.
        EXPECT_FALSE(has(args, "--vdev")) << config::type_name(port);
    }
}

TEST(EalArguments, PciUplinkAllowlistsExactlyItsDevice) {
    const Args args = eal_arguments({}, uplink(kPci), "calyx");
    EXPECT_FALSE(has(args, "--no-pci"));
    EXPECT_EQ(value_of(args, "-a"), "0000:3b:00.1");
    EXPECT_EQ(std::count(args.begin(), args.end(), "-a"), 1);
    EXPECT_EQ(std::count(args.begin(), args.end(), "0000:3b:00.1"), 1);
}

TEST(EalArguments, NoSharedFilesUnlessAsked) {
    EXPECT_TRUE(has(eal_arguments({}, std::nullopt, "calyx"), "--in-memory"));

    config::DataplaneConfig no_huge;
    no_huge.eal_args = {"--no-huge", "-m", "512"};
    const Args legacy = eal_arguments(no_huge, std::nullopt, "calyx");
    EXPECT_TRUE(has(legacy, "--no-shconf"));  // --in-memory refuses legacy memory
    EXPECT_FALSE(has(legacy, "--in-memory"));

    config::DataplaneConfig prefixed;
    prefixed.eal_args = {"--file-prefix=calyx-a"};
    const Args own = eal_arguments(prefixed, uplink(kPci), "calyx");
    EXPECT_FALSE(has(own, "--in-memory"));
    EXPECT_FALSE(has(own, "--no-shconf"));
}

TEST(EalArguments, UserArgumentsComeLast) {
    config::DataplaneConfig dp;
    dp.eal_args = {"--log-level", "pmd.net.tap:debug"};
    const Args args = eal_arguments(dp, uplink(kPci), "calyx");
    ASSERT_GE(args.size(), 2u);
    EXPECT_EQ(args[args.size() - 2], "--log-level");
    EXPECT_EQ(args.back(), "pmd.net.tap:debug");
}

}  // namespace
}  // namespace calyx::io
