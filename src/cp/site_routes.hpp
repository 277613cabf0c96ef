// The site's routes in the kernel, where calyx meets BIRD (as Felix does in Calico):
//   export  one /32 per instance of this host in routing.export_table: a blackhole route
//           under calyx's own route protocol (kRouteProtocol). BIRD's kernel protocol learns it
//           (`learn`) and announces it by BGP; the kernel itself never forwards by it (no rule
//           uses the table), which `blackhole` states.
//   import  what BIRD learnt by BGP and wrote into routing.import_table, checked here before
//           calyx routes by it: a bad route is refused with a line saying why, and the others
//           stay.
// Pure functions over plain values; daemon/site_routing.cpp does the netlink side.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "calyx/config.hpp"
#include "calyx/kernel_route.hpp"

namespace calyx::cp {

// calyx's routes in the kernel: "proto 67" in `ip route` ('C'; unused in iproute2's
// rt_protos, and by BIRD, Felix or FRR). conf/iproute2/rt_protos.d/calyx.conf names it.
inline constexpr uint8_t kRouteProtocol = 67;

// The routes export_table must hold: one blackhole /32 per instance of this host.
std::vector<KernelRoute> exported_routes(const config::Config& cfg);

struct ExportPlan {
    std::vector<KernelRoute> add;     // missing
    std::vector<KernelRoute> remove;  // calyx's own, for instances this host no longer has
    bool operator==(const ExportPlan&) const = default;
};
// What turns `current` (export_table as dumped) into exactly `wanted`, touching only calyx's own
// routes (kRouteProtocol): another protocol's route in the table is left alone.
ExportPlan plan_export(const std::vector<KernelRoute>& wanted, const std::vector<KernelRoute>& current);

// An imported route calyx routes by: a prefix inside the site's networks, via hosts of the
// uplink subnet.
struct SiteRoute {
    Ipv4Prefix prefix;
    std::vector<Ipv4Addr> next_hops;  // sorted, without repeats; at most kMaxSitePaths
    uint8_t protocol = 0;             // who wrote it (bird: 12): the route's origin
    bool operator==(const SiteRoute&) const = default;
};
inline constexpr size_t kMaxSitePaths = 16;

struct ImportedRoutes {
    std::vector<SiteRoute> accepted;    // by prefix
    std::vector<std::string> rejected;  // "10.9.0.0/24 via 198.51.100.12 proto 12 table 101: outside ..."
};
// Checks import_table (as dumped, or as kept from events) against the configuration. Accepted:
// unicast routes to a prefix inside one of the site's networks via 1..kMaxSitePaths gateways
// on the uplink subnet, none of them this host's own address or the subnet's network or
// broadcast address. Of several routes to one prefix, the lowest metric. Everything else is
// rejected, each with its reason.
ImportedRoutes check_imported(const config::Config& cfg, const std::vector<KernelRoute>& table);

}  // namespace calyx::cp
