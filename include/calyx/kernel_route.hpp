// An IPv4 route of a kernel routing table, as calyx reads and writes them (io/netlink.hpp)
// and plans them (cp/site_routes.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "calyx/net.hpp"

namespace calyx {

struct KernelRoute {
    // rtm_type values calyx uses (linux/rtnetlink.h), so that no one needs the kernel header.
    static constexpr uint8_t kUnicast = 1;    // RTN_UNICAST
    static constexpr uint8_t kBlackhole = 6;  // RTN_BLACKHOLE
    static constexpr uint32_t kMainTable = 254;

    Ipv4Prefix prefix;
    uint32_t table = 0;
    uint8_t protocol = 0;  // RTPROT_*: who installed it (bird: 12; calyx: cp::kRouteProtocol)
    uint8_t type = 0;      // RTN_UNICAST, RTN_BLACKHOLE, ...
    uint32_t priority = 0;  // the metric
    std::vector<Ipv4Addr> gateways;  // RTA_GATEWAY, or each next hop of RTA_MULTIPATH
    uint32_t oif = 0;                // output interface of a single-path route, 0: none
    bool operator==(const KernelRoute&) const = default;
    std::string to_string() const;  // "10.20.0.11/32 via 198.51.100.12 proto 12 table 101"
};

}  // namespace calyx
