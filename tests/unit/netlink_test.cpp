// rtnetlink route messages (io/netlink.hpp): what calyx writes, it reads back the same; the
// kernel's side is checked by the integration suite (site_test.cpp reads routes `ip route`
// wrote, and `ip route` shows the ones calyx wrote).
#include <gtest/gtest.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include "io/netlink.hpp"

namespace calyx::io {
namespace {

KernelRoute route(std::vector<Ipv4Addr> via, uint32_t table = 101) {
    KernelRoute r;
    r.prefix = {Ipv4Addr::from_octets(10, 20, 0, 11), 32};
    r.table = table;
    r.protocol = 12;
    r.type = KernelRoute::kUnicast;
    r.priority = 32;
    r.gateways = std::move(via);
    return r;
}

void expect_round_trip(const KernelRoute& r, bool del) {
    const auto msg = encode_route(r, del, NLM_F_CREATE, 7);
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(msg.data());
    EXPECT_EQ(nlh->nlmsg_len, msg.size());
    EXPECT_EQ(nlh->nlmsg_seq, 7u);
    const auto e = decode_route(msg.data());
    ASSERT_TRUE(e.has_value()) << r.to_string();
    EXPECT_EQ(e->deleted, del);
    EXPECT_EQ(e->route, r) << e->route.to_string() << " != " << r.to_string();
}

TEST(Netlink, RoutesReadBackAsWritten) {
    expect_round_trip(route({Ipv4Addr::from_octets(198, 51, 100, 12)}), false);
    expect_round_trip(route({Ipv4Addr::from_octets(198, 51, 100, 12)}), true);
    expect_round_trip(route({Ipv4Addr::from_octets(198, 51, 100, 12), Ipv4Addr::from_octets(198, 51, 100, 13),
                             Ipv4Addr::from_octets(198, 51, 100, 14)}),
                      false);
    expect_round_trip(route({Ipv4Addr::from_octets(198, 51, 100, 12)}, 100000), false);  // beyond rtm_table
    KernelRoute blackhole = route({}, 100);
    blackhole.type = KernelRoute::kBlackhole;
    blackhole.protocol = 67;
    blackhole.priority = 0;
    expect_round_trip(blackhole, false);
}

TEST(Netlink, ANonIpv4OrTruncatedMessageIsNoRoute) {
    auto msg = encode_route(route({Ipv4Addr::from_octets(198, 51, 100, 12)}), false, 0, 1);
    auto* rtm = static_cast<rtmsg*>(NLMSG_DATA(reinterpret_cast<nlmsghdr*>(msg.data())));
    rtm->rtm_family = AF_INET6;
    EXPECT_FALSE(decode_route(msg.data()).has_value());
    auto short_msg = encode_route(route({}), false, 0, 1);
    reinterpret_cast<nlmsghdr*>(short_msg.data())->nlmsg_len = NLMSG_LENGTH(2);
    EXPECT_FALSE(decode_route(short_msg.data()).has_value());
    reinterpret_cast<nlmsghdr*>(short_msg.data())->nlmsg_type = RTM_NEWLINK;
    EXPECT_FALSE(decode_route(short_msg.data()).has_value());
}

}  // namespace
}  // namespace calyx::io
