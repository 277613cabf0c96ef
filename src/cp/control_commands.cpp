#include "cp/control_commands.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <initializer_list>
#include <string_view>

#include <fmt/format.h>
#include <rte_fib.h>

#include "calyx/drop_reason.hpp"
#include "calyx/headers.hpp"
#include "cp/policy_compiler.hpp"
#include "dp/conntrack_state.hpp"
#include "dp/nat.hpp"
#include "dp/policy.hpp"
#include "dp/route.hpp"
#include "dp/rules.hpp"

namespace calyx::cp {
namespace {

using dp::InstanceView;
using dp::NetworkView;
using dp::Snapshot;

CommandError usage(std::string message) {
    return {std::move(message), true, {}};
}

// --- Argument checks ----------------------------------------------------------------------

// Unknown argument names are refused rather than ignored: a misspelt filter must not
// silently list everything.
std::expected<void, CommandError> only(const Json& args,
                                       std::initializer_list<std::string_view> known) {
    for (const auto& [key, value] : args.items()) {
        if (std::find(known.begin(), known.end(), key) != known.end()) continue;
        std::string list;
        for (auto k : known) list += fmt::format("{}{}", list.empty() ? "" : ", ", k);
        return std::unexpected(usage(
            list.empty() ? fmt::format("unexpected argument '{}' (this command takes none)", key)
                         : fmt::format("unexpected argument '{}' (expected: {})", key, list)));
    }
    return {};
}

std::expected<std::optional<std::string>, CommandError> string_arg(const Json& args,
                                                                   const char* name) {
    const auto it = args.find(name);
    if (it == args.end() || it->is_null()) return std::nullopt;
    if (!it->is_string() || it->get_ref<const std::string&>().empty())
        return std::unexpected(usage(fmt::format("'{}' must be a non-empty string", name)));
    return it->get<std::string>();
}

std::expected<std::optional<uint64_t>, CommandError> uint_arg(const Json& args, const char* name,
                                                              uint64_t max) {
    const auto it = args.find(name);
    if (it == args.end() || it->is_null()) return std::nullopt;
    // A client may send 80 as a signed or an unsigned JSON integer; both are fine.
    const bool whole =
        it->is_number_unsigned() || (it->is_number_integer() && it->get<int64_t>() >= 0);
    if (!whole || it->get<uint64_t>() > max)
        return std::unexpected(
            usage(fmt::format("'{}' must be a whole number from 0 to {}", name, max)));
    return it->get<uint64_t>();
}

std::expected<uint32_t, CommandError> limit_arg(const Json& args) {
    const auto limit = uint_arg(args, "limit", kMaxListLimit);
    if (!limit) return std::unexpected(limit.error());
    return static_cast<uint32_t>(limit->value_or(kDefaultListLimit));
}

// --- Text ---------------------------------------------------------------------------------

std::string protocol_name(uint8_t proto) {
    switch (proto) {
        case ipproto::kTcp:
            return "tcp";
        case ipproto::kUdp:
            return "udp";
        case ipproto::kIcmp:
            return "icmp";
        default:
            return fmt::format("proto {}", proto);
    }
}

// "tcp/80", "icmp type 8 code 0": what a rule would have to allow.
std::string service_text(const ExplainQuery& q) {
    if (q.protocol == ipproto::kIcmp)
        return fmt::format("icmp type {} code {}", q.icmp_type, q.icmp_code);
    return fmt::format("{}/{}", protocol_name(q.protocol), q.port);
}

std::string ports_text(const dp::NatPortRange& r) {
    return fmt::format("{}-{}", r.first, r.last);
}

const NetworkView* network_of(const Snapshot& snap, const InstanceView& inst) {
    return inst.network < snap.networks.size() ? &snap.networks[inst.network] : nullptr;
}

const NetworkView* network_by_zone(const Snapshot& snap, uint16_t zone) {
    for (const auto& n : snap.networks)
        if (n.zone == zone) return &n;
    return nullptr;
}

const NetworkView* network_containing(const Snapshot& snap, Ipv4Addr a) {
    for (const auto& n : snap.networks)
        if (n.cidr.contains(a)) return &n;
    return nullptr;
}

const InstanceView* instance_by_name(const Snapshot& snap, std::string_view name) {
    for (const auto& i : snap.instances)
        if (i.name == name) return &i;
    return nullptr;
}

const InstanceView* instance_by_address(const Snapshot& snap, Ipv4Addr a) {
    for (const auto& i : snap.instances)
        if (i.ipv4 == a) return &i;
    return nullptr;
}

const config::InstanceConfig* instance_config(const config::Config& cfg, std::string_view name) {
    return cfg.find_instance(name);
}

const RouterSample::Port* sample_port(const RouterSample& s, std::string_view name) {
    for (const auto& p : s.ports)
        if (p.name == name) return &p;
    return nullptr;
}

const RouterSample::Instance* sample_instance(const RouterSample& s, std::string_view name) {
    for (const auto& i : s.instances)
        if (i.name == name) return &i;
    return nullptr;
}

uint64_t drop_total(const dp::PortCounters& c) {
    uint64_t n = 0;
    for (uint64_t d : c.drops) n += d;
    return n;
}

Json uplink_json(const Snapshot& snap) {
    if (!snap.uplink) return nullptr;
    const dp::UplinkView& u = *snap.uplink;
    Json j;
    j["address"] = u.address.to_string();
    j["subnet"] = u.subnet.to_string();
    j["gateway"] = u.gateway.to_string();
    j["mac"] = u.mac.to_string();
    j["mtu"] = u.mtu;
    j["port_slot"] = u.port;
    return j;
}

Json nat_ports_json(const Snapshot& snap) {
    if (!snap.nat) return nullptr;
    const dp::NatPortAllocator& a = *snap.nat;
    Json j;
    j["range"] = ports_text(a.range());
    j["first"] = a.range().first;
    j["last"] = a.range().last;
    j["partitions"] = a.partitions();
    j["in_use"] = {{"tcp", a.in_use(ipproto::kTcp)},
                   {"udp", a.in_use(ipproto::kUdp)},
                   {"icmp", a.in_use(ipproto::kIcmp)}};
    return j;
}

// --- Routes -------------------------------------------------------------------------------

// The next hop the data plane's FIB holds for `a`: the same table the route stage reads.
uint32_t fib_next_hop(const Snapshot& snap, Ipv4Addr a) {
    if (!snap.fib) return dp::NextHop::make(dp::NextHopKind::none);
    uint32_t ip = a.value;
    uint64_t nh = 0;
    rte_fib_lookup_bulk(snap.fib, &ip, &nh, 1);
    return static_cast<uint32_t>(nh);
}

// What a next hop means, for humans and scripts.
Json next_hop_json(const Snapshot& snap, uint32_t nh, Ipv4Addr dst) {
    using dp::NextHop;
    using dp::NextHopKind;
    Json j;
    const uint32_t index = NextHop::index(nh);
    switch (NextHop::kind(nh)) {
        case NextHopKind::none:
            j["kind"] = "unreachable";
            j["text"] = "no route: ICMP net unreachable";
            break;
        case NextHopKind::local: {
            j["kind"] = "local";
            std::string what = "calyx itself";
            for (const auto& n : snap.networks) {
                if (n.gateway == dst) what = fmt::format("calyx: gateway of {}", n.name);
                if (n.cidr.broadcast() == dst) what = fmt::format("calyx: broadcast of {}", n.name);
            }
            if (snap.uplink && snap.uplink->address == dst) what = "calyx: the uplink address";
            j["text"] = what;
            break;
        }
        case NextHopKind::instance: {
            j["kind"] = "instance";
            const InstanceView* inst = snap.instance_on_port(static_cast<uint16_t>(index));
            j["instance"] = inst ? Json(inst->name) : Json(nullptr);
            j["text"] = inst ? fmt::format("instance {} (port slot {})", inst->name, index)
                             : fmt::format("port slot {}", index);
            break;
        }
        case NextHopKind::unassigned:
            j["kind"] = "unassigned";
            j["text"] = "no instance has the address: ICMP host unreachable";
            break;
        case NextHopKind::uplink:
            j["kind"] = "uplink";
            if (index == dp::kUplinkOnLink || !snap.uplink)
                j["text"] = "uplink, on-link (ARP)";
            else
                j["text"] = fmt::format("uplink via {}", snap.uplink->gateway.to_string());
            break;
        case NextHopKind::site: {
            j["kind"] = "site";
            Json hops = Json::array();
            std::string text;
            if (index < snap.site_next_hops.size()) {
                const dp::SiteNextHops& h = snap.site_next_hops[index];
                for (uint8_t k = 0; k < h.count; ++k) {
                    hops.push_back(h.hops[k].to_string());
                    text += fmt::format("{}{}", k ? ", " : "", h.hops[k].to_string());
                }
            }
            j["next_hops"] = std::move(hops);
            j["text"] = fmt::format("another host of the site via {}", text);
            break;
        }
        default:
            j["kind"] = "other";
            j["text"] = fmt::format("next hop kind {} index {}",
                                    static_cast<uint32_t>(NextHop::kind(nh)), index);
            break;
    }
    return j;
}

// --- Connections --------------------------------------------------------------------------

// A copy of a live entry. Workers change a connection's state only under its lock, so the
// copy taken under the same lock is never half of an update; the unlocked pre-check (an
// atomic load, as the sweeper does) skips the many empty slots without touching their locks.
// The lock byte is the only thing written: the table is otherwise read-only here.
std::optional<dp::CtEntry> copy_entry(const dp::ConnTable& table, int32_t pos) {
    auto& e = const_cast<dp::CtEntry&>(table.entry(pos));
    if (std::atomic_ref<uint32_t>(e.state.expires_s).load(std::memory_order_relaxed) == 0)
        return std::nullopt;
    e.lock_entry();
    const dp::CtEntry copy = e;
    e.unlock_entry();
    if (copy.dead()) return std::nullopt;
    return copy;
}

struct Side {
    uint16_t zone;
    Ipv4Addr ip;
    uint16_t port;
};

Json endpoint_json(const Snapshot& snap, const Side& s, uint8_t proto) {
    Json j;
    const NetworkView* net = s.zone == 0 ? nullptr : network_by_zone(snap, s.zone);
    const InstanceView* inst = nullptr;
    if (net)
        for (const auto& i : snap.instances)
            if (i.ipv4 == s.ip && &snap.networks[i.network] == net) inst = &i;
    j["instance"] = inst ? Json(inst->name) : Json(nullptr);
    j["network"] = net ? Json(net->name) : Json(nullptr);  // null: outside the site
    j["address"] = s.ip.to_string();
    if (proto == ipproto::kTcp || proto == ipproto::kUdp) j["port"] = s.port;
    return j;
}

bool side_is(const Snapshot& snap, const Side& s, const InstanceView& inst) {
    const NetworkView* net = network_of(snap, inst);
    return net && s.zone == net->zone && s.ip == inst.ipv4;
}

std::string state_text(const dp::CtEntry& e) {
    if (e.state.proto == ipproto::kTcp) return std::string(dp::to_string(e.state.tcp_state));
    return e.state.replied() ? "REPLIED" : "UNREPLIED";
}

Json connection_json(const Snapshot& snap, const dp::CtKey& key, const dp::CtEntry& e,
                     uint64_t now_ns) {
    const uint8_t o = e.orig_side & 1;
    const Side from{key.zone[o], Ipv4Addr{key.ip[o]}, key.port[o]};
    const Side to{key.zone[1 - o], Ipv4Addr{key.ip[1 - o]}, key.port[1 - o]};
    Json j;
    j["protocol"] = protocol_name(key.proto);
    j["state"] = state_text(e);
    j["replied"] = e.state.replied();
    const uint64_t expires_ns = dp::ct_expires_ns(e.state);
    j["expires_in_s"] =
        expires_ns > now_ns ? (expires_ns - now_ns + 999'999'999) / 1'000'000'000 : 0;
    j["from"] = endpoint_json(snap, from, key.proto);
    j["to"] = endpoint_json(snap, to, key.proto);
    if (key.proto == ipproto::kIcmp) j["icmp_id"] = key.port[0];  // the echo id, on both sides
    const dp::NatBinding b = dp::load_nat_binding(e);
    if (b.role == dp::NatRole::primary)
        j["nat"] = {{"address", b.addr.to_string()}, {"port", b.port}};
    else
        j["nat"] = nullptr;
    return j;
}

// Connections of the table as calyxctl lists them: live, not expired.
Json list_connections(const Snapshot& snap, const dp::ConnTable& table, const InstanceView* only,
                      bool translated_only, uint32_t limit, uint64_t now_ns) {
    Json entries = Json::array();
    uint64_t total = 0;
    for (uint32_t pos = 0; pos < table.slots(); ++pos) {
        const auto e = copy_entry(table, static_cast<int32_t>(pos));
        if (!e || dp::ct_expired(e->state, now_ns)) continue;
        const dp::NatBinding b = dp::load_nat_binding(*e);
        if (translated_only && b.role != dp::NatRole::primary) continue;
        dp::CtKey key;
        if (!table.key_at(static_cast<int32_t>(pos), key)) continue;
        if (only) {
            const Side a{key.zone[0], Ipv4Addr{key.ip[0]}, key.port[0]};
            const Side z{key.zone[1], Ipv4Addr{key.ip[1]}, key.port[1]};
            if (!side_is(snap, a, *only) && !side_is(snap, z, *only)) continue;
        }
        ++total;
        if (entries.size() < limit) entries.push_back(connection_json(snap, key, *e, now_ns));
    }
    Json j;
    j["total"] = total;
    j["shown"] = entries.size();
    j["truncated"] = entries.size() < total;
    j["entries"] = std::move(entries);
    return j;
}

// --- Explain ------------------------------------------------------------------------------

struct Endpoint {
    const InstanceView* inst = nullptr;  // an instance of this host
    Ipv4Addr ip;
    const config::InstanceConfig* remote = nullptr;  // an instance of another host of the site
};

const NetworkView* network_of(const Snapshot& snap, const Endpoint& e) {
    if (e.inst) return network_of(snap, *e.inst);
    return e.remote ? network_containing(snap, e.ip) : nullptr;
}

Json endpoint_summary(const Snapshot& snap, const Endpoint& e) {
    Json j;
    const NetworkView* net = network_of(snap, e);
    j["instance"] = e.inst ? Json(e.inst->name) : e.remote ? Json(e.remote->name) : Json(nullptr);
    j["host"] = e.remote ? Json(e.remote->host) : Json(nullptr);  // null: this host, or outside
    j["address"] = e.ip.to_string();
    j["network"] = net ? Json(net->name) : Json(nullptr);
    j["kind"] = net ? Json(std::string(to_string(net->kind))) : Json(nullptr);
    return j;
}

std::string endpoint_text(const Snapshot& snap, const Endpoint& e) {
    if (!e.inst && !e.remote) return fmt::format("{} (outside)", e.ip.to_string());
    const NetworkView* net = network_of(snap, e);
    return fmt::format("{} ({} in {}, a {} network{})", e.inst ? e.inst->name : e.remote->name, e.ip.to_string(),
                       net ? net->name : "?", net ? to_string(net->kind) : "?",
                       e.remote ? fmt::format(", on {}", e.remote->host) : "");
}

std::string instance_names(const Snapshot& snap) {
    std::string names;
    for (const auto& i : snap.instances)
        names += fmt::format("{}{}", names.empty() ? "" : ", ", i.name);
    return names.empty() ? std::string("none") : names;
}

// An instance name (of this host or another), an instance's address, or an address outside
// the site. Addresses inside the site that belong to no instance, and calyx's own addresses,
// are not endpoints of a connection through calyx.
std::expected<Endpoint, CommandError> resolve(const config::Config& cfg, const Snapshot& snap,
                                              const std::string& text, std::string_view option) {
    if (const InstanceView* i = instance_by_name(snap, text)) return Endpoint{i, i->ipv4};
    if (const config::InstanceConfig* i = cfg.find_instance(text); i && !cfg.is_local(*i))
        return Endpoint{nullptr, i->ipv4, i};
    const auto a = Ipv4Addr::parse(text);
    if (!a)
        return std::unexpected(
            usage(fmt::format("--{} {}: neither an instance nor an IPv4 address (instances: {})",
                              option, text, instance_names(snap))));
    if (const InstanceView* i = instance_by_address(snap, *a)) return Endpoint{i, *a};
    for (const config::InstanceConfig& i : cfg.instances)
        if (i.ipv4 == *a && !cfg.is_local(i)) return Endpoint{nullptr, *a, &i};
    if (a->is_zero() || a->is_multicast() || a->is_limited_broadcast())
        return std::unexpected(usage(fmt::format("--{} {}: not a unicast address", option, text)));
    if (snap.uplink && snap.uplink->address == *a)
        return std::unexpected(usage(fmt::format(
            "--{} {}: the uplink address is calyx's own; give the instance or outside address "
            "a connection runs between",
            option, text)));
    if (const NetworkView* n = network_containing(snap, *a)) {
        const bool own = n->gateway == *a || n->cidr.broadcast() == *a || n->cidr.addr == *a;
        return std::unexpected(
            usage(own ? fmt::format("--{} {}: an address of network {} that calyx keeps for itself "
                                    "(gateway, network or broadcast address)",
                                    option, text, n->name)
                      : fmt::format("--{} {}: in network {} ({}), but no instance has it", option,
                                    text, n->name, n->cidr.to_string())));
    }
    return Endpoint{nullptr, *a};
}

}  // namespace

// --- Arguments ----------------------------------------------------------------------------

std::expected<void, CommandError> no_args(const Json& args) {
    return only(args, {});
}

std::expected<ConntrackQuery, CommandError> conntrack_query(const Json& args) {
    if (auto ok = only(args, {"instance", "limit"}); !ok) return std::unexpected(ok.error());
    ConntrackQuery q;
    const auto instance = string_arg(args, "instance");
    if (!instance) return std::unexpected(instance.error());
    q.instance = *instance;
    const auto limit = limit_arg(args);
    if (!limit) return std::unexpected(limit.error());
    q.limit = *limit;
    return q;
}

std::expected<uint32_t, CommandError> nat_query(const Json& args) {
    if (auto ok = only(args, {"limit"}); !ok) return std::unexpected(ok.error());
    return limit_arg(args);
}

std::expected<bool, CommandError> drops_query(const Json& args) {
    if (auto ok = only(args, {"all"}); !ok) return std::unexpected(ok.error());
    const auto it = args.find("all");
    if (it == args.end() || it->is_null()) return false;
    if (!it->is_boolean()) return std::unexpected(usage("'all' must be true or false"));
    return it->get<bool>();
}

std::expected<ExplainQuery, CommandError> explain_query(const Json& args) {
    if (auto ok = only(args, {"from", "to", "proto", "port", "type", "code"}); !ok)
        return std::unexpected(ok.error());
    ExplainQuery q;
    for (auto [name, field] : {std::pair{"from", &q.from}, std::pair{"to", &q.to}}) {
        const auto v = string_arg(args, name);
        if (!v) return std::unexpected(v.error());
        if (!*v)
            return std::unexpected(
                usage(fmt::format("--{} is needed: an instance or an address", name)));
        *field = **v;
    }
    const auto proto = string_arg(args, "proto");
    if (!proto) return std::unexpected(proto.error());
    if (!*proto) return std::unexpected(usage("--proto is needed: tcp, udp or icmp"));
    if (**proto == "tcp")
        q.protocol = ipproto::kTcp;
    else if (**proto == "udp")
        q.protocol = ipproto::kUdp;
    else if (**proto == "icmp")
        q.protocol = ipproto::kIcmp;
    else
        return std::unexpected(
            usage(fmt::format("--proto {}: expected tcp, udp or icmp", **proto)));
    const auto port = uint_arg(args, "port", 65535);
    const auto type = uint_arg(args, "type", 255);
    const auto code = uint_arg(args, "code", 255);
    for (const auto* r : {&port, &type, &code})
        if (!*r) return std::unexpected(r->error());
    if (q.protocol == ipproto::kIcmp) {
        if (*port)
            return std::unexpected(
                usage("--port is for tcp and udp; icmp takes --type and --code"));
        if (!*type && *code) return std::unexpected(usage("--code needs --type"));
        q.icmp_type = static_cast<uint8_t>(type->value_or(8));  // echo request
        q.icmp_code = static_cast<uint8_t>(code->value_or(0));
    } else {
        if (*type || *code) return std::unexpected(usage("--type and --code are for icmp"));
        if (!*port || **port == 0)
            return std::unexpected(
                usage(fmt::format("--proto {} needs --port (1-65535)", **proto)));
        q.port = static_cast<uint16_t>(**port);
    }
    return q;
}

// --- Handlers -----------------------------------------------------------------------------

Json status_result(const config::Config& cfg, const Snapshot& snap, const RouterSample& s,
                   const DaemonInfo& info, std::chrono::steady_clock::time_point now) {
    Json j;
    j["version"] = info.version;
    j["pid"] = info.pid;
    j["uptime_s"] = std::chrono::duration_cast<std::chrono::seconds>(now - info.started).count();
    j["config"] = cfg.source_file;
    j["generation"] = s.config_generation;
    j["reloads"] = {{"ok", s.reloads_ok}, {"failed", s.reloads_failed}};
    j["networks"] = snap.networks.size();
    j["instances"] = snap.instances.size();
    size_t up = 0;
    for (const auto& p : s.ports) up += p.up ? 1 : 0;
    j["ports"] = {{"total", s.ports.size()}, {"up", up}};
    Json workers = Json::array();
    for (const auto& l : s.lcores) {
        const double busy = l.total_cycles ? 100.0 * static_cast<double>(l.busy_cycles) /
                                                 static_cast<double>(l.total_cycles)
                                           : 0.0;
        const double asleep = l.total_cycles ? 100.0 * static_cast<double>(l.sleep_cycles) /
                                                   static_cast<double>(l.total_cycles)
                                             : 0.0;
        // The router's own work per packet: busy cycles outside the ports' I/O calls.
        const double own = l.packets ? static_cast<double>(l.busy_cycles - l.io_cycles) /
                                           static_cast<double>(l.packets)
                                     : 0.0;
        workers.push_back({{"lcore", l.lcore},
                           {"busy_cycles", l.busy_cycles},
                           {"total_cycles", l.total_cycles},
                           {"io_cycles", l.io_cycles},
                           {"sleep_cycles", l.sleep_cycles},
                           {"asleep_percent", std::round(asleep * 10) / 10},
                           {"packets", l.packets},
                           {"cycles_per_packet", std::round(own * 10) / 10},
                           {"busy_percent", std::round(busy * 10) / 10}});
    }
    j["workers"] = std::move(workers);
    j["conntrack"] = {{"entries", s.conntrack_entries},
                      {"capacity", s.conntrack_capacity},
                      {"created", s.conntrack_created},
                      {"expired", s.conntrack_expired}};
    j["uplink"] = uplink_json(snap);
    j["nat"] = nat_ports_json(snap);
    if (s.nat && j["nat"].is_object()) j["nat"]["exhausted"] = s.nat_exhausted;
    j["control_socket"] = cfg.control.socket;
    j["metrics_listen"] = cfg.metrics.listen;
    j["datastore"] = nullptr;
    if (const auto& d = s.datastore) {
        j["datastore"] = {{"type", d->type},
                          {"endpoint", d->endpoint},
                          {"up", d->up},
                          {"revision", d->revision},
                          {"sync_lag_s", d->last_sync_age_s < 0 ? Json(nullptr)
                                                                 : Json(std::round(d->last_sync_age_s * 10) / 10)},
                          {"keys", d->keys},
                          {"endpoints", d->endpoints},
                          {"local_endpoints", d->local_endpoints},
                          {"policies", d->policies},
                          {"subnets", d->subnets},
                          {"problems", d->problems},
                          {"first_problems", d->first_problems},
                          {"lists", d->lists_total},
                          {"applies", d->applies_total},
                          {"apply_failures", d->apply_failures_total},
                          {"last_error", d->last_error.empty() ? Json(nullptr) : Json(d->last_error)}};
    }
    return j;
}

// "tap calyx-up", "af_packet eth1", "pci 0000:01:00.0": the uplink's device.
std::string uplink_device(const config::UplinkConfig& u) {
    return fmt::format("{} {}", config::type_name(u.port), config::device_name(u.port));
}

Json ports_result(const config::Config& cfg, const RouterSample& s) {
    Json ports = Json::array();
    for (const auto& p : s.ports) {
        const config::InstanceConfig* inst = instance_config(cfg, p.name);
        // The sample names the uplink's port "uplink" (no instance may be called that).
        const bool uplink = !inst && p.name == "uplink" && cfg.uplink;
        // And the host interface's tap "host_interface".
        const bool host = !inst && p.name == "host_interface" && cfg.host_interface;
        const dp::PortCounters& c = p.counters;
        ports.push_back(
            {{"name", p.name},
             {"up", p.up},
             {"type", inst     ? "vhost-user"
                      : uplink ? "uplink"
                      : host   ? "host_interface"
                               : "other"},
             {"socket", inst ? Json(inst->port.socket) : Json(nullptr)},
             {"mode", inst ? Json(std::string(config::to_string(inst->port.mode))) : Json(nullptr)},
             {"device", uplink ? Json(uplink_device(*cfg.uplink))
                        : host ? Json("tap " + cfg.host_interface->name)
                               : Json(nullptr)},
             {"rx_packets", c.rx_packets},
             {"rx_bytes", c.rx_bytes},
             {"tx_packets", c.tx_packets},
             {"tx_bytes", c.tx_bytes},
             {"drops", drop_total(c)}});
    }
    return {{"ports", std::move(ports)}};
}

Json instances_result(const config::Config& cfg, const Snapshot& snap, const RouterSample& s) {
    Json list = Json::array();
    for (size_t i = 0; i < snap.instances.size(); ++i) {
        const InstanceView& inst = snap.instances[i];
        const NetworkView* net = network_of(snap, inst);
        const config::InstanceConfig* ic = instance_config(cfg, inst.name);
        const RouterSample::Port* port = sample_port(s, inst.name);
        Json j;
        j["name"] = inst.name;
        j["network"] = net ? Json(net->name) : Json(nullptr);
        j["kind"] = net ? Json(std::string(to_string(net->kind))) : Json(nullptr);
        j["address"] = inst.ipv4.to_string();
        j["mac"] = inst.mac.to_string();
        j["port_slot"] = inst.port;
        j["up"] = port && port->up;
        j["security_groups"] = ic ? Json(ic->security_groups) : Json::array();
        if (i < snap.policies.size())
            j["rules"] = {{"ingress", snap.policies[i]->ingress.size()},
                          {"egress", snap.policies[i]->egress.size()}};
        const RouterSample::Instance* held = sample_instance(s, inst.name);
        j["connections"] = held ? held->connections : 0;
        j["nat_ports"] = held ? held->nat_ports : 0;
        j["limits"] = {{"connections", inst.limits.connections},
                       {"new_connections_per_second", inst.limits.new_connections_per_second},
                       {"nat_ports", inst.limits.nat_ports}};
        list.push_back(std::move(j));
    }
    return {{"instances", std::move(list)}};
}

// The name iproute2 gives a route protocol number (rt_protos), for the usual writers of an
// import table; others by number.
std::string route_protocol_name(uint8_t protocol) {
    switch (protocol) {
        case 2: return "kernel";
        case 3: return "boot";
        case 4: return "static";
        case 12: return "bird";
        case 186: return "bgp";
        case 196: return "zebra";
        default: return std::to_string(protocol);
    }
}

Json routes_result(const Snapshot& snap) {
    struct Row {
        Ipv4Prefix prefix;
        std::string network;
        const Snapshot::SiteRouteView* imported = nullptr;  // learnt from the site
    };
    std::vector<Row> rows;
    for (const auto& n : snap.networks) {
        rows.push_back({n.cidr, n.name});
        rows.push_back({{n.gateway, 32}, n.name});
        rows.push_back({{n.cidr.broadcast(), 32}, n.name});
    }
    for (const auto& i : snap.instances)
        rows.push_back({{i.ipv4, 32}, network_of(snap, i) ? network_of(snap, i)->name : ""});
    if (snap.uplink) {
        rows.push_back({snap.uplink->subnet, "uplink"});
        rows.push_back({{snap.uplink->address, 32}, "uplink"});
    }
    for (const auto& r : snap.site_routes) {
        const auto net = std::ranges::find_if(snap.networks, [&](const auto& n) { return n.cidr.contains(r.prefix); });
        rows.push_back({r.prefix, net == snap.networks.end() ? "" : net->name, &r});
    }
    std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
        return std::pair(a.prefix.addr.value, a.prefix.length) <
               std::pair(b.prefix.addr.value, b.prefix.length);
    });
    // An imported route for one of this host's own addresses loses (the FIB says so): the row
    // keeps no origin then.
    rows.erase(std::unique(rows.begin(), rows.end(),
                           [](const Row& a, const Row& b) { return a.prefix == b.prefix; }),
               rows.end());
    Json list = Json::array();
    for (const auto& r : rows) {
        Json j;
        j["prefix"] = r.prefix.to_string();
        j["network"] = r.network.empty() ? Json(nullptr) : Json(r.network);
        j["next_hop"] = next_hop_json(snap, fib_next_hop(snap, r.prefix.addr), r.prefix.addr);
        if (r.imported && j["next_hop"]["kind"] == "site")
            j["origin"] = {{"table", snap.import_table}, {"protocol", route_protocol_name(r.imported->protocol)}};
        else
            j["origin"] = {{"table", nullptr}, {"protocol", "calyx"}};
        list.push_back(std::move(j));
    }
    // 0.0.0.0 is in no network, so the FIB answers it with the default route.
    Json def;
    def["prefix"] = "0.0.0.0/0";
    def["network"] = nullptr;
    def["next_hop"] = next_hop_json(snap, fib_next_hop(snap, Ipv4Addr{}), Ipv4Addr{});
    def["origin"] = {{"table", nullptr}, {"protocol", "calyx"}};
    list.push_back(std::move(def));
    return {{"routes", std::move(list)}};
}

std::expected<Json, CommandError> conntrack_result(const Snapshot& snap, const dp::ConnTable& table,
                                                   const ConntrackQuery& q, uint64_t now_ns) {
    const InstanceView* only = nullptr;
    if (q.instance) {
        only = instance_by_name(snap, *q.instance);
        if (!only)
            return std::unexpected(usage(fmt::format("no instance '{}' (instances: {})",
                                                     *q.instance, instance_names(snap))));
    }
    Json j = list_connections(snap, table, only, q.translated_only, q.limit, now_ns);
    j["capacity"] = table.capacity();
    return j;
}

Json nat_result(const Snapshot& snap, const dp::ConnTable& table, uint32_t limit, uint64_t now_ns) {
    Json j;
    j["uplink"] = uplink_json(snap);
    Json nets = Json::array();
    for (const auto& n : snap.networks)
        if (n.kind == NetworkKind::nat)
            nets.push_back({{"name", n.name}, {"cidr", n.cidr.to_string()}});
    j["nat_networks"] = std::move(nets);
    j["ports"] = nat_ports_json(snap);
    j["connections"] = list_connections(snap, table, nullptr, true, limit, now_ns);
    return j;
}

Json leases_result(const config::Config& cfg, const Snapshot& snap, const RouterSample& s) {
    Json list = Json::array();
    for (const auto& inst : snap.instances) {
        const config::InstanceConfig* ic = instance_config(cfg, inst.name);
        const config::NetworkConfig* nc = ic ? cfg.find_network(ic->network) : nullptr;
        const RouterSample::Port* port = sample_port(s, inst.name);
        Json j;
        j["instance"] = inst.name;
        j["mac"] = inst.mac.to_string();
        j["address"] = inst.ipv4.to_string();
        j["network"] = nc ? Json(nc->name) : Json(nullptr);
        if (nc) {
            j["prefix_length"] = nc->cidr.length;
            j["gateway"] = nc->gateway.to_string();
            Json dns = Json::array();
            for (const auto& d : nc->dns) dns.push_back(d.to_string());
            j["dns"] = std::move(dns);
            j["mtu"] = nc->mtu;
            j["lease_seconds"] = nc->lease_seconds;
        }
        j["port_up"] = port && port->up;
        list.push_back(std::move(j));
    }
    Json j;
    j["leases"] = std::move(list);
    j["dhcp_replies"] = {
        {"offer", s.dhcp_replies[0]}, {"ack", s.dhcp_replies[1]}, {"nak", s.dhcp_replies[2]}};
    return j;
}

Json drops_result(const RouterSample& s, bool all) {
    Json list = Json::array();
    uint64_t total = 0;
    for (const auto& p : s.ports) {
        for (size_t r = 0; r < kDropReasonCount; ++r) {
            const uint64_t n = p.counters.drops[r];
            total += n;
            if (n == 0 && !all) continue;
            list.push_back({{"port", p.name},
                            {"reason", std::string(kDropReasons[r].name)},
                            {"packets", n},
                            {"text", std::string(kDropReasons[r].text)}});
        }
    }
    return {{"total", total}, {"drops", std::move(list)}};
}

std::expected<Json, CommandError> explain_result(const config::Config& cfg, const Snapshot& snap,
                                                 const ExplainQuery& q) {
    const auto from = resolve(cfg, snap, q.from, "from");
    if (!from) return std::unexpected(from.error());
    const auto to = resolve(cfg, snap, q.to, "to");
    if (!to) return std::unexpected(to.error());
    if (!from->inst && !to->inst)
        return std::unexpected(usage(fmt::format(
            "neither {} nor {} is an instance of this calyx: explain covers connections from or "
            "to its instances",
            q.from, q.to)));

    const std::string service = service_text(q);
    std::vector<std::string> why;
    std::optional<DropReason> reason;
    std::optional<std::string> reason_name;  // a reason that is no drop reason (no uplink)
    Json egress = nullptr, ingress = nullptr, masquerade = nullptr;
    const auto rule_json = [&](const dp::RuleTable& t, uint32_t idx) {
        const dp::RuleOrigin& o = t.origin(idx);
        return Json{{"group", cfg.security_groups.at(o.group).name},
                    {"rule", o.rule + 1},
                    {"text", describe_rule(cfg, o)}};
    };

    // The route stage runs before the policy stage: without a route nothing is evaluated.
    const uint32_t nh = fib_next_hop(snap, to->ip);
    // Another host's instance is reached (and heard from, by the reverse-path check) only by
    // the route its host announced.
    const auto unrouted_remote = [&](const Endpoint& e) {
        return e.remote && dp::NextHop::kind(fib_next_hop(snap, e.ip)) != dp::NextHopKind::site;
    };
    if (unrouted_remote(*to) || unrouted_remote(*from)) {
        const Endpoint& e = unrouted_remote(*to) ? *to : *from;
        reason = unrouted_remote(*to) ? DropReason::no_route : DropReason::site_source_unrouted;
        why.push_back(fmt::format("{} runs on {}, but calyx has imported no route to {} from it{}", e.remote->name,
                                  e.remote->host, e.ip.to_string(),
                                  cfg.routing ? fmt::format(" (import table {}: is BIRD up there and here?)",
                                                            cfg.routing->import_table)
                                              : " (no routing: section)"));
    } else if (!to->inst && dp::NextHop::kind(nh) == dp::NextHopKind::none) {
        reason = DropReason::no_route;
        why.push_back(snap.uplink
                          ? fmt::format("calyx has no route to {}", to->ip.to_string())
                          : fmt::format("calyx has no route to {}: it has no uplink, so its "
                                        "instances reach only each other",
                                        to->ip.to_string()));
    } else if (!from->inst && !snap.uplink) {
        reason_name = "no_uplink";
        why.push_back(
            fmt::format("nothing from {} reaches {}: calyx has no uplink, so only its "
                        "own instances reach each other",
                        from->ip.to_string(), to->inst->name));
    } else {
        const uint16_t key = dp::rule_key(q.protocol, q.port, q.icmp_type, q.icmp_code);
        // An address the imported routes lead to another host of the site is inside the site.
        const auto on_other_host = [&](const auto& end) {
            return !end.inst && dp::NextHop::kind(fib_next_hop(snap, end.ip)) == dp::NextHopKind::site;
        };
        const dp::SiteEnds site{on_other_host(*from), on_other_host(*to)};
        const dp::PolicyDecision d = dp::evaluate_new_connection(snap, from->inst, to->inst,
                                                                 from->ip, to->ip, q.protocol, key, site);
        const auto policy_of = [&](const InstanceView* i) -> const dp::InstancePolicy& {
            return *snap.policies.at(static_cast<size_t>(i - snap.instances.data()));
        };
        // Who is at the far end, when it is no instance of this host.
        const auto far = [](const Endpoint& e) {
            return e.remote ? fmt::format("{} on {}", e.remote->name, e.remote->host)
                            : fmt::format("{} (another host of the site)", e.ip.to_string());
        };
        if (!from->inst)
            why.push_back(site.from ? fmt::format("{}: its egress rules are checked there, {}'s ingress rules here",
                                                  far(*from), to->inst->name)
                                    : fmt::format("{} is outside the site: only {}'s rules apply",
                                                  from->ip.to_string(), to->inst->name));
        if (!to->inst)
            why.push_back(site.to ? fmt::format("{}: its ingress rules are checked there, {}'s egress rules here",
                                                far(*to), from->inst->name)
                                  : fmt::format("{} is outside the site: only {}'s rules apply",
                                                to->ip.to_string(), from->inst->name));
        if (d.egress_rule != dp::kNoRule && from->inst) {
            egress = rule_json(policy_of(from->inst).egress, d.egress_rule);
            why.push_back(fmt::format("{} may send it: {}", from->inst->name,
                                      egress["text"].get<std::string>()));
        }
        if (d.ingress_rule != dp::kNoRule && to->inst) {
            ingress = rule_json(policy_of(to->inst).ingress, d.ingress_rule);
            why.push_back(fmt::format("{} accepts it: {}", to->inst->name,
                                      ingress["text"].get<std::string>()));
        }
        if (!d.allowed) {
            reason = d.reason;
            if (d.reason == DropReason::sg_no_egress_rule && from->inst)
                why.push_back(fmt::format("{} has no egress rule that allows {} to {}",
                                          from->inst->name, service, to->ip.to_string()));
            else if (d.reason == DropReason::sg_no_ingress_rule && to->inst)
                why.push_back(fmt::format("{} has no ingress rule that allows {} from {}",
                                          to->inst->name, service, from->ip.to_string()));
        } else if (from->inst && to->inst && from->inst == to->inst) {
            // Allowed by the rules, yet forward never sends a packet back out of its port.
            reason = DropReason::hairpin;
        } else {
            if (d.masquerade && from->inst) {
                masquerade = {
                    {"address",
                     snap.uplink ? Json(snap.uplink->address.to_string()) : Json(nullptr)},
                    {"ports", snap.nat ? Json(ports_text(snap.nat->range())) : Json(nullptr)}};
                why.push_back(fmt::format(
                    "{}'s source {} is masqueraded to the uplink address {}{}", from->inst->name,
                    from->ip.to_string(), snap.uplink ? snap.uplink->address.to_string() : "?",
                    snap.nat ? fmt::format(", with a port of {}", ports_text(snap.nat->range()))
                             : ""));
            }
            why.push_back("replies pass by connection tracking, without rules");
        }
    }
    if (reason) {
        const DropReasonInfo& info = drop_reason_info(*reason);
        reason_name = std::string(info.name);
        why.push_back(fmt::format("dropped as {}: {}", info.name, info.text));
    }
    const bool allowed = !reason_name;

    Json j;
    j["allowed"] = allowed;
    j["from"] = endpoint_summary(snap, *from);
    j["to"] = endpoint_summary(snap, *to);
    j["protocol"] = protocol_name(q.protocol);
    if (q.protocol == ipproto::kIcmp) {
        j["icmp_type"] = q.icmp_type;
        j["icmp_code"] = q.icmp_code;
    } else {
        j["port"] = q.port;
    }
    j["egress_rule"] = std::move(egress);
    j["ingress_rule"] = std::move(ingress);
    j["reason"] = reason_name ? Json(*reason_name) : Json(nullptr);
    j["masquerade"] = std::move(masquerade);
    why.insert(why.begin(),
               fmt::format("{}: {} -> {} {}", allowed ? "allowed" : "denied",
                           endpoint_text(snap, *from), endpoint_text(snap, *to), service));
    j["explanation"] = why;
    return j;
}

CommandResult reload_result(const ReloadResult& r) {
    if (!r.ok) return std::unexpected(CommandError{r.message, false, r.errors});
    return Json{{"generation", r.generation}, {"message", r.message}};
}

}  // namespace calyx::cp
