#include "cp/snapshot_builder.hpp"

#include <atomic>
#include <map>
#include <set>

#include <fmt/format.h>
#include <rte_errno.h>
#include <rte_fib.h>
#include <rte_memory.h>

#include "cp/policy_compiler.hpp"
#include "dp/dhcp.hpp"
#include "dp/local.hpp"
#include "dp/route.hpp"

namespace calyx::cp {
namespace {

using dp::NextHop;
using dp::NextHopKind;

struct Route {
    Ipv4Prefix prefix;
    uint32_t next_hop;
};

// Routes of the instance networks: the network itself leads nowhere (no instance has the
// address), the gateway and the broadcast address are calyx's own, each instance is a /32.
// With an uplink: its subnet is on-link, its address is calyx's own, and the default route
// (the FIB's default next hop) leads to its gateway. Routes imported from the site lead to
// their next hops (`site`: an index into snap.site_next_hops, which this fills); they may
// replace a network's own route (the rest of the network is on another host) but never the
// site's addresses on this host, added after them (rte_fib_add replaces a prefix's next hop).
std::vector<Route> routes_of(dp::Snapshot& snap, const std::vector<SiteRoute>* site_routes) {
    std::vector<Route> routes;
    if (snap.uplink) {
        routes.push_back({snap.uplink->subnet, NextHop::make(NextHopKind::uplink, dp::kUplinkOnLink)});
        routes.push_back({{snap.uplink->address, 32}, NextHop::make(NextHopKind::local, dp::kLocalUplinkAddress)});
        routes.push_back({{snap.uplink->subnet.broadcast(), 32}, NextHop::make(NextHopKind::local, dp::kLocalBroadcast)});
    }
    for (size_t i = 0; i < snap.networks.size(); ++i)
        routes.push_back({snap.networks[i].cidr, NextHop::make(NextHopKind::unassigned, static_cast<uint32_t>(i))});
    if (site_routes && snap.uplink) {
        std::map<std::vector<Ipv4Addr>, uint32_t> groups;  // equal next hops share an entry
        for (const SiteRoute& r : *site_routes) {
            auto [it, added] = groups.try_emplace(r.next_hops, static_cast<uint32_t>(snap.site_next_hops.size()));
            if (added) {
                dp::SiteNextHops hops;
                hops.count = static_cast<uint8_t>(std::min(r.next_hops.size(), hops.hops.size()));
                std::copy_n(r.next_hops.begin(), hops.count, hops.hops.begin());
                snap.site_next_hops.push_back(hops);
            }
            routes.push_back({r.prefix, NextHop::make(NextHopKind::site, it->second)});
            snap.site_routes.push_back({r.prefix, it->second, r.protocol});
        }
    }
    for (const auto& net : snap.networks) {
        routes.push_back({{net.gateway, 32}, NextHop::make(NextHopKind::local, dp::kLocalGatewayAddress)});
        routes.push_back({{net.cidr.broadcast(), 32}, NextHop::make(NextHopKind::local, dp::kLocalBroadcast)});
    }
    for (const auto& inst : snap.instances)
        routes.push_back({{inst.ipv4, 32}, NextHop::make(NextHopKind::instance, inst.port)});
    return routes;
}

// DIR24-8 needs one 256-entry tbl8 group per /24 that holds longer prefixes.
uint32_t tbl8_groups_for(const std::vector<Route>& routes) {
    std::set<uint32_t> deep;
    for (const auto& r : routes)
        if (r.prefix.length > 24) deep.insert(r.prefix.addr.value >> 8);
    return static_cast<uint32_t>(std::max<size_t>(256, deep.size() * 2));
}

std::expected<rte_fib*, std::string> build_fib(const std::vector<Route>& routes, uint32_t default_nh) {
    static std::atomic<uint64_t> serial{0};
    const std::string name = fmt::format("calyx_fib{}", serial++);
    rte_fib_conf conf{};
    conf.type = RTE_FIB_DIR24_8;
    conf.default_nh = default_nh;
    conf.max_routes = static_cast<int>(routes.size() + 16);
    conf.rib_ext_sz = 0;
    conf.dir24_8.nh_sz = RTE_FIB_DIR24_8_4B;
    conf.dir24_8.num_tbl8 = tbl8_groups_for(routes);
    rte_fib* fib = rte_fib_create(name.c_str(), SOCKET_ID_ANY, &conf);
    if (!fib) return std::unexpected(fmt::format("cannot create routing table: {}", rte_strerror(rte_errno)));
    for (const auto& r : routes) {
        if (int rc = rte_fib_add(fib, r.prefix.addr.value, r.prefix.length, r.next_hop); rc < 0) {
            rte_fib_free(fib);
            return std::unexpected(fmt::format("cannot add route {}: {}", r.prefix.to_string(), rte_strerror(-rc)));
        }
    }
    return fib;
}

}  // namespace

void warm_routing_table_memory() {
    if (auto fib = build_fib({}, 0)) rte_fib_free(*fib);
}

std::expected<std::unique_ptr<dp::Snapshot>, std::string> build_snapshot(
    const config::Config& cfg, const SnapshotInputs& in, uint64_t generation) {
    if (!in.conntrack) return std::unexpected("no connection table");
    auto snap = std::make_unique<dp::Snapshot>();
    snap->generation = generation;
    snap->gateway_mac = cfg.dataplane.gateway_mac;
    snap->icmp_errors_per_second = cfg.dataplane.icmp_errors_per_second;
    snap->icmp_errors_burst = cfg.dataplane.icmp_errors_burst;
    snap->ct_timeouts = cfg.dataplane.conntrack;  // its timeouts part
    snap->fragment_timeout_s = cfg.dataplane.conntrack.fragment;
    snap->idle_sleep_us = cfg.dataplane.idle_sleep_us;
    snap->conntrack = in.conntrack;

    for (const auto& net : cfg.networks) {
        dp::NetworkView v;
        v.name = net.name;
        v.zone = in.zone(net);
        v.kind = net.kind;
        v.cidr = net.cidr;
        v.gateway = net.gateway;
        v.mtu = net.mtu;
        const dp::DhcpNetworkSettings dhcp{.cidr = net.cidr,
                                           .gateway = net.gateway,
                                           .dns = net.dns,
                                           .domain = net.domain,
                                           .mtu = net.mtu,
                                           .lease_seconds = net.lease_seconds,
                                           .routes = net.routes};
        v.dhcp_lease_options = dp::encode_dhcp_network_options(dhcp, true);
        v.dhcp_inform_options = dp::encode_dhcp_network_options(dhcp, false);
        // Every DHCP client accepts a 576-byte datagram; a longer reply may be dropped.
        if (v.dhcp_lease_options.size() > dp::kDhcpMaxOptionBlob)
            return std::unexpected(fmt::format(
                "{}:{}:{}: network '{}': its DHCP options take {} bytes, more than the {} every "
                "client accepts; give it fewer dns servers or routes",
                net.where.file, net.where.line, net.where.column, net.name,
                v.dhcp_lease_options.size(), dp::kDhcpMaxOptionBlob));
        snap->networks.push_back(std::move(v));
    }
    const size_t workers = std::max<size_t>(1, cfg.dataplane.workers.size());
    snap->queues_by_worker.resize(workers);
    for (const config::InstanceConfig* local : cfg.local_instances()) {
        const config::InstanceConfig& inst = *local;
        const auto net = std::find_if(cfg.networks.begin(), cfg.networks.end(),
                                      [&](const auto& n) { return n.name == inst.network; });
        dp::InstanceView v;
        v.name = inst.name;
        v.mac = inst.mac;
        v.ipv4 = inst.ipv4;
        v.network = static_cast<uint16_t>(net - cfg.networks.begin());
        v.zone = snap->networks[v.network].zone;
        v.mtu = snap->networks[v.network].mtu;
        v.port = in.port_slot(inst);
        if (v.port >= dp::kMaxPorts) return std::unexpected(fmt::format("instance '{}': no port slot", inst.name));
        v.account = in.account ? in.account(inst) : v.port;
        if (v.account >= dp::kMaxAccounts) return std::unexpected(fmt::format("instance '{}': no account", inst.name));
        v.limits = {inst.limits.connections, inst.limits.new_connections_per_second, inst.limits.nat_ports};
        snap->instance_by_port[v.port] = static_cast<int32_t>(snap->instances.size());
        // Pair q of the port in slot s is polled by worker (s + q) mod workers, in every
        // snapshot for as long as the port lives: a reload that adds or removes other
        // instances never moves a ring, so no ring ever has two pollers, not even during a
        // grace period (calyx owns that, not rte_vhost's per-ring lock). A port's pairs land
        // on different workers; slots are handed out lowest first, so ports spread evenly.
        for (uint16_t q = 0; q < inst.port.queues; ++q)
            snap->queues_by_worker[(v.port + q) % workers].push_back({v.port, q});
        snap->instances.push_back(std::move(v));
    }
    if (cfg.uplink) {
        if (in.uplink_slot >= dp::kMaxPorts || !in.nat || !in.neighbors)
            return std::unexpected("the uplink port is not open");
        dp::UplinkView up;
        up.port = in.uplink_slot;
        up.mac = in.uplink_mac;
        up.address = cfg.uplink->address;
        up.subnet = cfg.uplink->subnet();
        up.gateway = cfg.uplink->gateway;
        // Uplink receive queue q is polled by worker q mod workers, the same in every snapshot:
        // unlike a vhost-user ring, an ethdev queue must never be polled by two workers at
        // once, as it could during a reload's grace period if the deal moved. (Worker w
        // transmits on uplink queue w.)
        for (uint16_t q = 0; q < cfg.uplink->queue_count(workers); ++q)
            snap->queues_by_worker[q % workers].push_back({in.uplink_slot, q});
        snap->uplink = up;
        snap->nat = in.nat;
        snap->neighbors = in.neighbors;
        // The host's tap: polled like the uplink, queue q by worker q mod workers.
        if (cfg.host_interface) {
            if (in.host_slot >= dp::kMaxPorts) return std::unexpected("the host interface is not open");
            snap->host_port = in.host_slot;
            for (uint16_t q = 0; q < workers; ++q) snap->queues_by_worker[q].push_back({in.host_slot, q});
        }
    }
    snap->policies = compile_policies(cfg);
    const uint32_t default_nh = snap->uplink ? NextHop::make(NextHopKind::uplink, dp::kUplinkViaGateway)
                                             : NextHop::make(NextHopKind::none);
    if (cfg.routing) snap->import_table = cfg.routing->import_table;
    auto fib = build_fib(routes_of(*snap, in.site_routes), default_nh);
    if (!fib) return std::unexpected(fib.error());
    snap->fib = *fib;
    return snap;
}

}  // namespace calyx::cp
