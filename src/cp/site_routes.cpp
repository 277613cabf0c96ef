#include "cp/site_routes.hpp"

#include <algorithm>
#include <map>

#include <fmt/format.h>

namespace calyx::cp {

std::vector<KernelRoute> exported_routes(const config::Config& cfg) {
    std::vector<KernelRoute> routes;
    if (!cfg.routing) return routes;
    for (const config::InstanceConfig* inst : cfg.local_instances()) {
        KernelRoute r;
        r.prefix = {inst->ipv4, 32};
        r.table = cfg.routing->export_table;
        r.protocol = kRouteProtocol;
        r.type = KernelRoute::kBlackhole;
        routes.push_back(std::move(r));
    }
    return routes;
}

ExportPlan plan_export(const std::vector<KernelRoute>& wanted, const std::vector<KernelRoute>& current) {
    ExportPlan plan;
    const auto same = [](const KernelRoute& a, const KernelRoute& b) {
        return a.prefix == b.prefix && a.type == b.type && a.protocol == b.protocol && a.priority == b.priority &&
               a.gateways == b.gateways && a.oif == b.oif;
    };
    for (const KernelRoute& w : wanted)
        if (std::ranges::none_of(current, [&](const KernelRoute& c) { return same(c, w); })) plan.add.push_back(w);
    for (const KernelRoute& c : current)
        if (c.protocol == kRouteProtocol && std::ranges::none_of(wanted, [&](const KernelRoute& w) { return same(c, w); }))
            plan.remove.push_back(c);
    return plan;
}

namespace {

// Why calyx does not route by `r`, or nothing when it does.
std::optional<std::string> refusal(const config::Config& cfg, const KernelRoute& r) {
    if (r.type != KernelRoute::kUnicast)
        return "not a unicast route: calyx routes only via hosts of the site";
    if (std::ranges::none_of(cfg.networks, [&](const auto& n) { return n.cidr.contains(r.prefix); }))
        return "outside the site's networks: calyx takes routes only for the site's instances "
               "(the rest of the world is via the uplink's gateway)";
    if (r.gateways.empty()) return "no gateway: the next hop must be a host on the uplink subnet";
    if (r.gateways.size() > kMaxSitePaths) return fmt::format("more than {} next hops", kMaxSitePaths);
    const config::UplinkConfig& up = *cfg.uplink;  // routing needs an uplink
    const Ipv4Prefix subnet = up.subnet();
    for (const Ipv4Addr& gw : r.gateways) {
        if (!subnet.contains(gw))
            return fmt::format("next hop {} is not on the uplink subnet {}", gw.to_string(), subnet.to_string());
        if (gw == up.address) return fmt::format("next hop {} is this host itself", gw.to_string());
        if (gw == subnet.addr || gw == subnet.broadcast())
            return fmt::format("next hop {} is the uplink subnet's network or broadcast address", gw.to_string());
    }
    return std::nullopt;
}

}  // namespace

ImportedRoutes check_imported(const config::Config& cfg, const std::vector<KernelRoute>& table) {
    ImportedRoutes out;
    // The lowest metric per prefix, among the routes calyx accepts.
    std::map<std::pair<uint32_t, uint8_t>, const KernelRoute*> best;
    for (const KernelRoute& r : table) {
        if (!cfg.uplink) {
            out.rejected.push_back(fmt::format("{}: calyx has no uplink", r.to_string()));
            continue;
        }
        if (auto why = refusal(cfg, r)) {
            out.rejected.push_back(fmt::format("{}: {}", r.to_string(), *why));
            continue;
        }
        auto [it, added] = best.try_emplace({r.prefix.addr.value, r.prefix.length}, &r);
        if (!added && r.priority < it->second->priority) it->second = &r;
    }
    for (const auto& [key, r] : best) {
        SiteRoute s{r->prefix, r->gateways, r->protocol};
        std::ranges::sort(s.next_hops);
        s.next_hops.erase(std::unique(s.next_hops.begin(), s.next_hops.end()), s.next_hops.end());
        out.accepted.push_back(std::move(s));
    }
    return out;
}

}  // namespace calyx::cp
