#include "cp/datastore/translate.hpp"

#include <algorithm>
#include <expected>
#include <optional>
#include <memory>
#include <set>
#include <string_view>
#include <variant>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "calyx/headers.hpp"
#include "cp/config/parser.hpp"
#include "cp/datastore/selector.hpp"
#include "dp/counters.hpp"
#include "dp/dhcp.hpp"

namespace calyx::cp::datastore {
namespace {

using Json = nlohmann::json;
template <typename T>
using Result = std::expected<T, std::string>;

constexpr std::string_view kPolicyPrefix = "ossg.default.";  // networking-calico's SG_NAME_PREFIX
constexpr std::string_view kNetworkIdAnnotation = "openstack.projectcalico.org/network-id";
constexpr size_t kMaxUnixSocketPath = 107;
constexpr size_t kMaxInterfaceName = 15;
constexpr uint8_t kIcmpv6 = 58;

bool is_name(std::string_view text) {
    return !text.empty() && std::ranges::all_of(text, [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
               c == '-';
    });
}

bool is_ipv6_text(std::string_view text) { return text.find(':') != std::string_view::npos; }

// The value of `key` in object `j` if it is there and not null.
const Json* member(const Json& j, std::string_view key) {
    if (!j.is_object()) return nullptr;
    const auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
}

Result<std::string> string_at(const Json& j, std::string_view key, std::string_view path) {
    const Json* v = member(j, key);
    if (!v) return std::unexpected(fmt::format("{}{} is missing", path, key));
    if (!v->is_string()) return std::unexpected(fmt::format("{}{} must be a string, got {}", path, key, v->dump()));
    return v->get<std::string>();
}

// An unsigned integer in [0, max], written as a JSON number or (numorstring) as digits.
std::optional<uint64_t> number_of(const Json& v, uint64_t max) {
    std::optional<uint64_t> n;
    if (v.is_number_unsigned())
        n = v.get<uint64_t>();
    else if (v.is_number_integer() && v.get<int64_t>() >= 0)
        n = static_cast<uint64_t>(v.get<int64_t>());
    else if (v.is_string())
        n = config::parse_unsigned(v.get<std::string>());
    if (!n || *n > max) return std::nullopt;
    return n;
}

// Keys of `store` under `prefix`, older first (create revision, then key).
std::vector<std::pair<std::string_view, const KeyValue*>> in_creation_order(const Store& store,
                                                                             std::string_view prefix) {
    std::vector<std::pair<std::string_view, const KeyValue*>> out;
    for (auto it = store.lower_bound(prefix); it != store.end() && it->first.starts_with(prefix); ++it)
        out.emplace_back(it->first, &it->second);
    std::ranges::stable_sort(out, [](const auto& a, const auto& b) {
        return a.second->create_revision < b.second->create_revision;
    });
    return out;
}

config::SourceLocation at_key(std::string_view key, std::string_view part = {}) {
    return {part.empty() ? std::string{key} : fmt::format("{} {}", key, part), 0, 0};
}

// --- Rules ----------------------------------------------------------------------------------

// Calico's protocol (numorstring.Protocol): a number, digits in a string, or a name
// (case-insensitively, as ProtocolFromString compares them).
Result<uint8_t> protocol_of(const Json& v, std::string_view path) {
    struct Named {
        std::string_view name;
        uint8_t number;
    };
    constexpr Named kNames[] = {{"tcp", ipproto::kTcp},  {"udp", ipproto::kUdp},     {"icmp", ipproto::kIcmp},
                                {"icmpv6", kIcmpv6},     {"sctp", 132},              {"udplite", 136}};
    if (const auto n = number_of(v, 255)) return static_cast<uint8_t>(*n);
    if (v.is_string()) {
        std::string lower = v.get<std::string>();
        std::ranges::transform(lower, lower.begin(), [](char c) { return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c; });
        for (const Named& n : kNames)
            if (lower == n.name) return n.number;
    }
    return std::unexpected(fmt::format("{}protocol {} is not a protocol (a number, or TCP, UDP, ICMP, ICMPv6, SCTP, "
                                       "UDPLite)",
                                       path, v.dump()));
}

struct PortRange {
    uint16_t min = 0, max = 65535;
};

// Calico's ports: numbers, or "min:max" ranges in strings. Named ports are for Kubernetes pods.
Result<std::vector<PortRange>> ports_of(const Json& v, std::string_view path) {
    if (!v.is_array()) return std::unexpected(fmt::format("{}ports must be a list, got {}", path, v.dump()));
    std::vector<PortRange> out;
    for (const Json& p : v) {
        if (const auto n = number_of(p, 65535)) {
            out.push_back({static_cast<uint16_t>(*n), static_cast<uint16_t>(*n)});
            continue;
        }
        const std::string text = p.is_string() ? p.get<std::string>() : std::string{};
        const size_t colon = text.find(':');
        const auto lo = colon == std::string::npos ? std::nullopt : config::parse_unsigned(text.substr(0, colon));
        const auto hi = colon == std::string::npos ? std::nullopt : config::parse_unsigned(text.substr(colon + 1));
        if (!lo || !hi || *lo > 65535 || *hi > 65535 || *lo > *hi)
            return std::unexpected(fmt::format("{}ports entry {} is not a port or a range like \"8000:8080\"", path,
                                               p.dump()));
        out.push_back({static_cast<uint16_t>(*lo), static_cast<uint16_t>(*hi)});
    }
    return out;
}

// A rule's source or destination, in the subset networking-calico writes: nets, a selector
// (a remote group), ports.
struct Entity {
    std::vector<Ipv4Prefix> nets;  // empty: any address, unless ipv6_nets_only
    bool ipv6_nets_only = false;   // every net was IPv6: matches no IPv4 address
    std::optional<std::string> group;
    std::optional<std::vector<PortRange>> ports;
};

Result<Entity> entity_of(const Json& e, std::string_view path, bool ipv4_rule) {
    Entity out;
    if (!e.is_object()) return std::unexpected(fmt::format("{} must be an object, got {}", path, e.dump()));
    for (const auto& [k, v] : e.items()) {
        if (v.is_null()) continue;
        if (k == "nets") {
            if (!v.is_array()) return std::unexpected(fmt::format("{}.nets must be a list, got {}", path, v.dump()));
            size_t ipv6 = 0;
            for (const Json& n : v) {
                const std::string text = n.is_string() ? n.get<std::string>() : n.dump();
                if (n.is_string() && is_ipv6_text(text)) {
                    if (ipv4_rule)
                        return std::unexpected(fmt::format("{}.nets has the IPv6 net {} in an IPv4 rule", path, text));
                    ++ipv6;
                    continue;
                }
                // Calico takes a bare address as its /32, and clears host bits (ParseCIDROrIP).
                auto prefix = Ipv4Prefix::parse(text, /*allow_host_bits=*/true);
                if (!prefix)
                    if (const auto addr = Ipv4Addr::parse(text)) prefix = Ipv4Prefix{*addr, 32};
                if (!prefix) return std::unexpected(fmt::format("{}.nets entry {} is not an IPv4 net", path, text));
                out.nets.push_back(*prefix);
            }
            out.ipv6_nets_only = ipv6 > 0 && out.nets.empty();
        } else if (k == "selector") {
            if (!v.is_string())
                return std::unexpected(fmt::format("{}.selector must be a string, got {}", path, v.dump()));
            auto group = security_group_of_selector(v.get<std::string>());
            if (!group) return std::unexpected(fmt::format("{}.{}", path, group.error()));
            if (!is_name(*group))
                return std::unexpected(fmt::format("{}.selector names security group '{}', which is not a valid id",
                                                   path, *group));
            out.group = std::move(*group);
        } else if (k == "ports") {
            auto ports = ports_of(v, fmt::format("{}.", path));
            if (!ports) return std::unexpected(ports.error());
            if (!ports->empty()) out.ports = std::move(*ports);
        } else {
            return std::unexpected(fmt::format(
                "{}.{} is not one calyx applies (networking-calico writes only nets, selector and ports)", path, k));
        }
    }
    if (!out.nets.empty() && out.group)
        return std::unexpected(fmt::format(
            "{} has both nets and a selector (Calico would need both to match); networking-calico writes one",
            path));
    return out;
}

struct RuleOutcome {
    std::vector<config::RuleConfig> rules;  // empty and ipv6_only: the rule matches IPv6 only
    bool ipv6_only = false;
};

// One rule of a policy (spec.ingress[i] or spec.egress[i]) -> the calyx rules it stands for:
// one per remote net and destination port range.
Result<RuleOutcome> rule_of(const Json& r, config::RuleDirection direction, std::string_view path,
                            const config::SourceLocation& where, std::set<std::string>& referenced) {
    const bool ingress = direction == config::RuleDirection::ingress;
    if (!r.is_object()) return std::unexpected(fmt::format("{} must be an object, got {}", path, r.dump()));
    for (const auto& [k, v] : r.items()) {
        static constexpr std::string_view kKnown[] = {"action", "ipVersion", "protocol", "icmp",
                                                      "source", "destination", "metadata"};
        if (!v.is_null() && std::ranges::find(kKnown, k) == std::end(kKnown))
            return std::unexpected(fmt::format("{}.{} is not one calyx applies", path, k));
    }
    const Json* action = member(r, "action");
    if (!action || *action != "Allow")
        return std::unexpected(fmt::format("{}.action is {}: security groups only allow (networking-calico writes "
                                           "\"Allow\")",
                                           path, action ? action->dump() : "missing"));
    RuleOutcome out;
    bool ipv4_rule = false;
    if (const Json* version = member(r, "ipVersion")) {
        const auto n = number_of(*version, 6);
        if (n == 6u) {
            out.ipv6_only = true;
            return out;
        }
        if (n != 4u) return std::unexpected(fmt::format("{}.ipVersion must be 4 or 6, got {}", path, version->dump()));
        ipv4_rule = true;
    }
    std::optional<uint8_t> protocol;
    if (const Json* p = member(r, "protocol")) {
        auto number = protocol_of(*p, fmt::format("{}.", path));
        if (!number) return std::unexpected(number.error());
        if (*number == kIcmpv6) {
            if (ipv4_rule) return std::unexpected(fmt::format("{}.protocol is ICMPv6 in an IPv4 rule", path));
            out.ipv6_only = true;
            return out;
        }
        if (*number != 0) protocol = *number;  // 0 is networking-calico's "any" (it omits it)
    }
    std::optional<uint8_t> icmp_type, icmp_code;
    if (const Json* icmp = member(r, "icmp")) {
        if (protocol != ipproto::kIcmp)
            return std::unexpected(fmt::format("{}.icmp needs protocol ICMP", path));
        for (const auto& [k, v] : icmp->items())
            if (k != "type" && k != "code")
                return std::unexpected(fmt::format("{}.icmp.{} is not an ICMP field (type, code)", path, k));
        if (const Json* t = member(*icmp, "type")) {
            const auto n = number_of(*t, 255);
            if (!n) return std::unexpected(fmt::format("{}.icmp.type must be 0 to 255, got {}", path, t->dump()));
            icmp_type = static_cast<uint8_t>(*n);
        }
        if (const Json* c = member(*icmp, "code")) {
            const auto n = number_of(*c, 255);
            if (!n) return std::unexpected(fmt::format("{}.icmp.code must be 0 to 255, got {}", path, c->dump()));
            if (!icmp_type) return std::unexpected(fmt::format("{}.icmp.code needs icmp.type", path));
            icmp_code = static_cast<uint8_t>(*n);
        }
    }
    Entity source, destination;
    if (const Json* s = member(r, "source")) {
        auto e = entity_of(*s, fmt::format("{}.source", path), ipv4_rule);
        if (!e) return std::unexpected(e.error());
        source = std::move(*e);
    }
    if (const Json* d = member(r, "destination")) {
        auto e = entity_of(*d, fmt::format("{}.destination", path), ipv4_rule);
        if (!e) return std::unexpected(e.error());
        destination = std::move(*e);
    }
    // The remote end is the source of an ingress rule and the destination of an egress rule; the
    // local end (the endpoint itself) carries at most the destination ports.
    Entity& remote = ingress ? source : destination;
    const Entity& local = ingress ? destination : source;
    const std::string local_path = fmt::format("{}.{}", path, ingress ? "destination" : "source");
    if (!local.nets.empty() || local.ipv6_nets_only || local.group)
        return std::unexpected(fmt::format("{} narrows the endpoint's own side; networking-calico never writes that",
                                           local_path));
    if (source.ports)
        return std::unexpected(fmt::format("{}.source.ports: calyx matches destination ports only", path));
    if (remote.ipv6_nets_only) {
        out.ipv6_only = true;
        return out;
    }
    const std::optional<std::vector<PortRange>>& ports = destination.ports;
    if (ports && !(protocol && dp::keyed_by_port(*protocol)))
        return std::unexpected(fmt::format("{}.destination.ports need protocol TCP or UDP", path));
    if (remote.group) referenced.insert(*remote.group);

    config::RuleConfig base;
    base.direction = direction;
    base.protocol = protocol;
    base.icmp_type = icmp_type;
    base.icmp_code = icmp_code;
    base.remote_group = remote.group;
    base.where = where;
    const std::vector<PortRange> port_list = ports ? *ports : std::vector<PortRange>{PortRange{}};
    std::vector<std::optional<Ipv4Prefix>> remotes;
    for (const Ipv4Prefix& net : remote.nets) remotes.emplace_back(net);
    if (remotes.empty()) remotes.emplace_back(std::nullopt);
    for (const auto& net : remotes) {
        for (const PortRange& range : port_list) {
            config::RuleConfig rule = base;
            rule.remote = net;
            rule.port_min = range.min;
            rule.port_max = range.max;
            out.rules.push_back(std::move(rule));
        }
    }
    return out;
}

// --- Each key on its own ----------------------------------------------------------------------
// What a key says, read from its value alone: the part of a translation that a change re-does
// only for the keys it touched (TranslateCache). Checks against other keys and against the
// host's configuration come after, in Translator.

struct ParsedSubnet {
    bool ipv6 = false;  // skipped: calyx forwards IPv4
    std::string network_id;
    Ipv4Prefix cidr;
    Ipv4Addr gateway;
    std::vector<Ipv4Addr> dns;
    std::vector<Ipv4Prefix> routes;
    std::vector<std::string> route_problems;  // routes left out, and why
};

struct ParsedPolicy {
    config::SecurityGroupConfig group;
    std::set<std::string> referenced;  // remote groups
    size_t ipv6_rules = 0;
};

struct ParsedEndpoint {
    std::optional<EndpointName> name;
    std::string node;      // known before any error after it: a refused local port is reported
    std::string instance;  // the Neutron port id
    bool without_addresses = false;  // passed over, as Felix and the DHCP agent do
    bool ipv6 = false;               // had IPv6 addresses (skipped)
    std::string interface, mac_text, network_id;
    MacAddr mac;
    Ipv4Addr ipv4;
    std::vector<std::string> groups;
    std::string allowed, nats;  // the parts not applied, as written; empty when none
};

}  // namespace

struct TranslateCache::Entry {
    // The value it was read from. Compared whole rather than by mod revision: a value is the
    // same whatever etcd did (a rewrite with the same bytes, a restored or a new cluster whose
    // revisions start again), and a comparison of equal sizes costs a memcmp.
    std::string value;
    std::string error;  // the key is refused for this
    std::variant<ParsedSubnet, ParsedPolicy, ParsedEndpoint> parsed;
};

namespace {

using Entry = TranslateCache::Entry;

Entry parse_subnet(std::string_view id, const std::string& value) {
    Entry e;
    ParsedSubnet& s = e.parsed.emplace<ParsedSubnet>();
    const auto refuse = [&](std::string why) {
        e.error = std::move(why);
        return std::move(e);
    };
    const Json j = Json::parse(value, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return refuse("the value is not a JSON object");
    auto cidr_text = string_at(j, "cidr", "");
    if (!cidr_text) return refuse(cidr_text.error());
    if (is_ipv6_text(*cidr_text)) {
        s.ipv6 = true;
        return e;
    }
    if (!is_name(id)) return refuse(fmt::format("subnet id '{}' is not a valid name", id));
    auto network_id = string_at(j, "network_id", "");
    if (!network_id) return refuse(network_id.error());
    s.network_id = std::move(*network_id);
    const auto cidr = Ipv4Prefix::parse(*cidr_text, /*allow_host_bits=*/true);
    if (!cidr) return refuse(fmt::format("cidr {} is not an IPv4 prefix", *cidr_text));
    if (cidr->length < 8 || cidr->length > 30)
        return refuse(fmt::format("cidr {} is not between /8 and /30", cidr->to_string()));
    for (const auto& reserved : config::kReserved)
        if (reserved.prefix.contains(*cidr) || cidr->contains(reserved.prefix))
            return refuse(fmt::format("cidr {} is inside {} ({})", cidr->to_string(), reserved.prefix.to_string(),
                                      reserved.what));
    s.cidr = *cidr;
    const Json* gateway_json = member(j, "gateway_ip");
    if (!gateway_json)
        return refuse("it has no gateway_ip: calyx answers as the gateway of every network, so the subnet needs one");
    const auto gateway = gateway_json->is_string() ? Ipv4Addr::parse(gateway_json->get<std::string>()) : std::nullopt;
    if (!gateway) return refuse(fmt::format("gateway_ip {} is not an IPv4 address", gateway_json->dump()));
    if (!cidr->contains(*gateway) || *gateway == cidr->addr || *gateway == cidr->broadcast())
        return refuse(fmt::format("gateway_ip {} is not a host address of {}", gateway->to_string(), cidr->to_string()));
    s.gateway = *gateway;
    if (const Json* dns = member(j, "dns_servers")) {
        if (!dns->is_array()) return refuse("dns_servers is not a list");
        for (const Json& d : *dns) {
            const std::string text = d.is_string() ? d.get<std::string>() : d.dump();
            if (is_ipv6_text(text)) continue;  // IPv4 DHCP carries IPv4 servers only
            const auto addr = Ipv4Addr::parse(text);
            if (!addr) return refuse(fmt::format("dns_servers entry {} is not an address", text));
            s.dns.push_back(*addr);
        }
    }
    if (const Json* routes = member(j, "host_routes")) {
        if (!routes->is_array()) return refuse("host_routes is not a list");
        // Every instance has its own link to the gateway, so a route via anything else could
        // never be followed: such a route is left out (and said so), the subnet still serves.
        for (size_t i = 0; i < routes->size(); ++i) {
            const Json& route = (*routes)[i];
            const auto destination = string_at(route, "destination", "");
            const auto nexthop = string_at(route, "nexthop", "");
            if (!destination || !nexthop) {
                s.route_problems.push_back(fmt::format("host_routes[{}] is not a destination and a nexthop", i));
                continue;
            }
            if (is_ipv6_text(*destination)) continue;
            const auto prefix = Ipv4Prefix::parse(*destination);
            const auto via = Ipv4Addr::parse(*nexthop);
            if (!prefix || !via)
                s.route_problems.push_back(
                    fmt::format("host_routes[{}] ({} via {}) is not an IPv4 route", i, *destination, *nexthop));
            else if (*via != s.gateway)
                s.route_problems.push_back(fmt::format(
                    "host_routes[{}] ({} via {}) is left out: every instance reaches only its gateway {}, so calyx "
                    "announces routes via the gateway only",
                    i, *destination, *nexthop, s.gateway.to_string()));
            else if (prefix->length > 0)  // the default route is always announced
                s.routes.push_back(*prefix);
        }
    }
    return e;
}

Entry parse_policy(std::string_view key, std::string_view name, const std::string& value) {
    Entry e;
    ParsedPolicy& p = e.parsed.emplace<ParsedPolicy>();
    const auto refuse = [&](std::string why) {
        e.error = std::move(why);
        return std::move(e);
    };
    if (!name.starts_with(kPolicyPrefix))
        return refuse(fmt::format("policy '{}' is not a security group of networking-calico ({}<id>); calyx applies "
                                  "only those",
                                  name, kPolicyPrefix));
    const std::string_view id = name.substr(kPolicyPrefix.size());
    p.group.name = std::string{id};
    p.group.where = at_key(key);
    // A refused policy still leaves its group, without rules (its members count, it allows nothing).
    const auto refuse_group = [&](std::string why) {
        return refuse(fmt::format("{}; its group allows nothing until it is fixed", why));
    };
    if (!is_name(id)) return refuse_group(fmt::format("security group id '{}' is not a valid name", id));
    const Json j = Json::parse(value, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return refuse_group("the value is not a JSON object");
    const Json* spec = member(j, "spec");
    if (!spec || !spec->is_object()) return refuse_group("it has no spec");
    for (const auto& [k, v] : spec->items()) {
        // `order` ranks policies whose rules could disagree; with allow rules only it changes nothing.
        static constexpr std::string_view kKnown[] = {"ingress", "egress", "selector", "order"};
        if (!v.is_null() && std::ranges::find(kKnown, k) == std::end(kKnown))
            return refuse_group(fmt::format(
                "spec.{} is not one calyx applies (networking-calico writes ingress, egress and selector)", k));
    }
    auto selector = string_at(*spec, "selector", "spec.");
    if (!selector) return refuse_group(selector.error());
    auto selected = security_group_of_selector(*selector);
    if (!selected) return refuse_group(fmt::format("spec.{}", selected.error()));
    if (*selected != id)
        return refuse_group(fmt::format("spec.selector selects security group {}, not {} whose policy this is",
                                        *selected, id));
    for (const auto direction : {config::RuleDirection::ingress, config::RuleDirection::egress}) {
        const std::string_view field = config::to_string(direction);
        const Json* rules = member(*spec, field);
        if (!rules) continue;
        if (!rules->is_array()) return refuse_group(fmt::format("spec.{} must be a list", field));
        for (size_t i = 0; i < rules->size(); ++i) {
            const std::string path = fmt::format("spec.{}[{}]", field, i);
            auto outcome = rule_of((*rules)[i], direction, path, at_key(key, path), p.referenced);
            if (!outcome) {
                p.group.rules.clear();
                p.referenced.clear();
                return refuse_group(outcome.error());
            }
            if (outcome->ipv6_only) ++p.ipv6_rules;
            for (auto& r : outcome->rules) p.group.rules.push_back(std::move(r));
        }
    }
    return e;
}

Entry parse_endpoint(std::string_view name, const std::string& value) {
    Entry e;
    ParsedEndpoint& p = e.parsed.emplace<ParsedEndpoint>();
    const auto refuse = [&](std::string why) {
        e.error = std::move(why);
        return std::move(e);
    };
    p.name = split_endpoint_name(name);
    if (!p.name)
        return refuse(fmt::format("'{}' is not an endpoint name <host>-<orchestrator>-<workload>-<port>", name));
    const Json j = Json::parse(value, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return refuse("the value is not a JSON object");
    const Json* spec = member(j, "spec");
    if (!spec || !spec->is_object()) return refuse("it has no spec");
    auto node = string_at(*spec, "node", "spec.");
    if (!node) return refuse(node.error());
    p.instance = p.name->endpoint;
    if (const Json* id = member(*spec, "endpoint"); id && id->is_string()) p.instance = id->get<std::string>();
    if (!is_name(p.instance)) return refuse(fmt::format("port id '{}' is not a valid name", p.instance));
    p.node = std::move(*node);
    auto mac_text = string_at(*spec, "mac", "spec.");
    if (!mac_text) return refuse(mac_text.error());
    p.mac_text = std::move(*mac_text);
    auto interface = string_at(*spec, "interfaceName", "spec.");
    if (!interface) return refuse(interface.error());
    p.interface = std::move(*interface);
    const Json* networks = member(*spec, "ipNetworks");
    if (!networks || !networks->is_array()) return refuse("spec.ipNetworks is missing or not a list");
    // networking-calico's DHCP agent and Felix both pass over an endpoint without addresses: a
    // resync meeting a port being deleted writes one.
    if (networks->empty()) {
        p.without_addresses = true;
        return e;
    }
    // The port's own addresses: ipNetworks without the allowed address pairs (which
    // networking-calico lists in both).
    std::set<std::string> allowed;
    const Json* allowed_json = member(*spec, "allowedIps");
    if (allowed_json && allowed_json->is_array()) {
        for (const Json& a : *allowed_json)
            if (a.is_string()) allowed.insert(a.get<std::string>());
        if (!allowed_json->empty()) p.allowed = allowed_json->dump();
    }
    if (const Json* n = member(*spec, "ipNATs"); n && n->is_array() && !n->empty()) p.nats = n->dump();
    std::vector<Ipv4Addr> own;
    for (const Json& n : *networks) {
        const std::string text = n.is_string() ? n.get<std::string>() : n.dump();
        if (allowed.contains(text)) continue;
        if (is_ipv6_text(text)) {
            p.ipv6 = true;
            continue;
        }
        const auto prefix = Ipv4Prefix::parse(text);
        if (!prefix || prefix->length != 32)
            return refuse(fmt::format("spec.ipNetworks entry {} is not an IPv4 address/32", text));
        own.push_back(prefix->addr);
    }
    if (own.empty())
        return refuse(p.ipv6 ? "the port has only IPv6 addresses; calyx forwards IPv4"
                             : "spec.ipNetworks has no address of the port's own");
    if (own.size() > 1) {
        std::string list;
        for (const auto& a : own) list += (list.empty() ? "" : ", ") + a.to_string();
        return refuse(fmt::format("the port has {} IPv4 addresses ({}); calyx gives a port one, as every instance has "
                                  "one interface and one address",
                                  own.size(), list));
    }
    p.ipv4 = own.front();
    const Json* metadata = member(j, "metadata");
    const Json* annotations = metadata ? member(*metadata, "annotations") : nullptr;
    const Json* network_id = annotations ? member(*annotations, kNetworkIdAnnotation) : nullptr;
    if (!network_id || !network_id->is_string())
        return refuse(fmt::format("metadata.annotations has no {}", kNetworkIdAnnotation));
    p.network_id = network_id->get<std::string>();
    const auto mac = MacAddr::parse(p.mac_text);
    if (!mac || mac->is_zero() || mac->is_multicast())
        return refuse(fmt::format("spec.mac {} is not a unicast MAC address", p.mac_text));
    p.mac = *mac;
    if (const Json* labels = metadata ? member(*metadata, "labels") : nullptr; labels && labels->is_object()) {
        for (const auto& [label, v] : labels->items()) {
            const std::string_view group = security_group_of_label(label);
            if (group.empty()) continue;
            if (!is_name(group)) return refuse(fmt::format("label {} names no valid security group id", label));
            p.groups.emplace_back(group);
        }
    }
    std::ranges::sort(p.groups);
    return e;
}

// --- The site -------------------------------------------------------------------------------

class Translator {
  public:
    Translator(const Store& store, const config::Config& local, TranslateCache& cache)
        : store_(store), local_(local), ds_(local.datastore), trees_(site_trees(local.datastore)), cache_(cache) {}

    Site run() {
        read_subnets();
        read_policies();
        read_endpoints();
        add_groups_without_policy();
        // What the store no longer holds is no longer needed.
        for (auto it = cache_.entries.begin(); it != cache_.entries.end();)
            it = store_.contains(it->first) ? std::next(it) : cache_.entries.erase(it);
        return std::move(site_);
    }

  private:
    void problem(std::string_view key, std::string message, bool left_out = true) {
        site_.problems.push_back(Problem{std::string{key}, std::move(message), left_out});
    }

    // The key's parsed form, from the cache while the key is unchanged.
    template <typename Parse>
    const Entry& parsed(std::string_view key, const KeyValue& kv, Parse parse) {
        auto it = cache_.entries.find(key);
        if (it != cache_.entries.end() && it->second->value == kv.value) return *it->second;
        auto entry = std::make_shared<Entry>(parse());
        entry->value = kv.value;
        if (it == cache_.entries.end())
            it = cache_.entries.emplace(std::string{key}, std::move(entry)).first;
        else
            it->second = std::move(entry);
        return *it->second;
    }

    // --- Subnets ---

    void read_subnets() {
        // The v2 tree first: a subnet in both trees is the v2 one (networking-calico deletes the
        // v1 tree once it has written v2, so both at once is an upgrade in progress).
        std::set<std::string, std::less<>> ids;
        std::vector<std::pair<std::string_view, const KeyValue*>> keys;
        for (const std::string* tree : {&trees_.subnets_v2, &trees_.subnets_v1}) {
            for (const auto& entry : in_creation_order(store_, *tree)) {
                ++site_.counts.subnets;
                const std::string id{entry.first.substr(tree->size())};
                if (ids.insert(id).second) keys.push_back(entry);
            }
        }
        std::ranges::stable_sort(keys, [](const auto& a, const auto& b) {
            return a.second->create_revision < b.second->create_revision;
        });
        for (const auto& [key, kv] : keys) {
            const std::string_view id =
                key.substr((key.starts_with(trees_.subnets_v2) ? trees_.subnets_v2 : trees_.subnets_v1).size());
            const Entry& e = parsed(key, *kv, [&] { return parse_subnet(id, kv->value); });
            if (auto ok = subnet(key, id, e); !ok) problem(key, ok.error());
        }
    }

    Result<void> subnet(std::string_view key, std::string_view id, const Entry& e) {
        if (!e.error.empty()) return std::unexpected(e.error);
        const ParsedSubnet& s = std::get<ParsedSubnet>(e.parsed);
        if (s.ipv6) {
            ++site_.counts.ipv6_skipped;
            return {};
        }
        const Ipv4Prefix& cidr = s.cidr;
        if (local_.uplink && (local_.uplink->subnet().contains(cidr) || cidr.contains(local_.uplink->subnet())))
            return std::unexpected(fmt::format("cidr {} overlaps the uplink subnet {}", cidr.to_string(),
                                               local_.uplink->subnet().to_string()));
        for (const config::NetworkConfig& other : site_.networks)
            if (other.cidr.contains(cidr) || cidr.contains(other.cidr))
                return std::unexpected(fmt::format("cidr {} overlaps {} of subnet {} ({})", cidr.to_string(),
                                                   other.cidr.to_string(), other.name, other.where.file));
        config::NetworkConfig net;
        net.name = std::string{id};
        net.cidr = cidr;
        net.gateway = s.gateway;
        net.dns = s.dns;
        net.routes = s.routes;
        net.where = at_key(key);
        const config::DatastoreNetwork* kind = ds_.find_network(s.network_id);
        net.kind = kind ? kind->kind : NetworkKind::private_;
        if (kind) net.mtu = kind->mtu;
        const dp::DhcpNetworkSettings dhcp{.cidr = net.cidr,
                                           .gateway = net.gateway,
                                           .dns = net.dns,
                                           .domain = net.domain,
                                           .mtu = net.mtu,
                                           .lease_seconds = net.lease_seconds,
                                           .routes = net.routes};
        if (const size_t size = dp::encode_dhcp_network_options(dhcp, true).size(); size > dp::kDhcpMaxOptionBlob)
            return std::unexpected(fmt::format("its DHCP options take {} bytes, more than the {} every client accepts "
                                               "(fewer dns_servers or host_routes)",
                                               size, dp::kDhcpMaxOptionBlob));
        for (const std::string& why : s.route_problems) problem(key, why, false);
        subnets_of_network_[s.network_id].push_back(site_.networks.size());
        site_.networks.push_back(std::move(net));
        return {};
    }

    // --- Policies ---

    void read_policies() {
        for (const auto& [key, kv] : in_creation_order(store_, trees_.policies)) {
            ++site_.counts.policies;
            const std::string_view name = key.substr(trees_.policies.size());
            const Entry& e = parsed(key, *kv, [&] { return parse_policy(key, name, kv->value); });
            const ParsedPolicy& p = std::get<ParsedPolicy>(e.parsed);
            if (!e.error.empty()) {
                problem(key, e.error);
                if (name.starts_with(kPolicyPrefix) && is_name(p.group.name)) refused_groups_.emplace(p.group.name, key);
                continue;
            }
            site_.counts.ipv6_skipped += p.ipv6_rules;
            referenced_groups_.insert(p.referenced.begin(), p.referenced.end());
            site_.security_groups.push_back(p.group);
        }
    }

    // A group that endpoints or rules name without a policy calyx applies (none written yet,
    // or one left out) allows nothing, and its members still count for remote_group.
    void add_groups_without_policy() {
        std::set<std::string> have;
        for (const auto& g : site_.security_groups) have.insert(g.name);
        for (const std::string& id : referenced_groups_) {
            if (have.contains(id)) continue;
            config::SecurityGroupConfig group;
            group.name = id;
            const auto refused = refused_groups_.find(id);
            group.where = at_key(refused != refused_groups_.end()
                                     ? refused->second
                                     : trees_.policies + std::string{kPolicyPrefix} + id + " (not written)");
            site_.security_groups.push_back(std::move(group));
        }
        std::ranges::sort(site_.security_groups, {}, &config::SecurityGroupConfig::name);
    }

    // --- Endpoints ---

    void read_endpoints() {
        for (const auto& [key, kv] : in_creation_order(store_, trees_.endpoints)) {
            ++site_.counts.endpoints;
            const std::string_view name = key.substr(trees_.endpoints.size());
            const Entry& e = parsed(key, *kv, [&] { return parse_endpoint(name, kv->value); });
            const ParsedEndpoint& p = std::get<ParsedEndpoint>(e.parsed);
            if (p.ipv6) ++site_.counts.ipv6_skipped;
            auto ok = e.error.empty() ? endpoint(key, p) : std::unexpected(e.error);
            if (ok) continue;
            problem(key, ok.error());
            // Felix reports a port it cannot serve as "error": networking-calico marks it so.
            if (p.name && !p.node.empty() && p.node == local_.host)
                site_.refused_local_endpoints.push_back({p.instance, endpoint_status_key(ds_, local_.host, *p.name)});
        }
    }

    Result<void> endpoint(std::string_view key, const ParsedEndpoint& p) {
        if (p.without_addresses) return {};
        config::InstanceConfig inst;
        inst.name = p.instance;
        inst.host = p.node;
        inst.where = at_key(key);
        inst.ipv4 = p.ipv4;
        inst.mac = p.mac;
        inst.security_groups = p.groups;
        inst.limits = local_.limits;  // the file's `limits:`, as for an instance of the file
        const bool local = inst.host == local_.host;

        // Its network: the subnet of its network that holds the address (as the DHCP agent finds it).
        const config::NetworkConfig* net = nullptr;
        if (const auto it = subnets_of_network_.find(p.network_id); it != subnets_of_network_.end())
            for (const size_t i : it->second)
                if (site_.networks[i].cidr.contains(inst.ipv4)) net = &site_.networks[i];
        if (!net)
            return std::unexpected(fmt::format("no subnet of network {} that calyx serves holds {} (networking-calico "
                                               "writes a subnet only when DHCP is enabled on it)",
                                               p.network_id, inst.ipv4.to_string()));
        if (inst.ipv4 == net->gateway || inst.ipv4 == net->cidr.addr || inst.ipv4 == net->cidr.broadcast())
            return std::unexpected(fmt::format("{} is the gateway, network or broadcast address of subnet {}",
                                               inst.ipv4.to_string(), net->name));
        inst.network = net->name;
        if (inst.mac == local_.dataplane.gateway_mac)
            return std::unexpected(fmt::format("spec.mac {} is the gateway MAC (dataplane.gateway_mac)", p.mac_text));
        if (local) {
            auto port = port_of(p.interface);
            if (!port) return std::unexpected(port.error());
            inst.port = std::move(*port);
        }

        // What the older keys hold stays theirs.
        if (const auto it = names_.find(inst.name); it != names_.end())
            return std::unexpected(fmt::format("port {} is already described by {}", inst.name, it->second));
        if (const auto it = macs_.find(inst.mac); it != macs_.end())
            return std::unexpected(fmt::format("spec.mac {} is already used by {}", p.mac_text, it->second));
        if (const auto it = addresses_.find(inst.ipv4); it != addresses_.end())
            return std::unexpected(fmt::format("{} is already used by {}", inst.ipv4.to_string(), it->second));
        if (local) {
            if (const auto it = sockets_.find(inst.port.socket); it != sockets_.end())
                return std::unexpected(fmt::format("socket {} (interfaceName {}) is already used by {}",
                                                   inst.port.socket, p.interface, it->second));
            if (site_.local_endpoints.size() >= dp::kMaxPorts - 1u)
                return std::unexpected(fmt::format("this host already serves {} ports, as many as calyx can",
                                                   dp::kMaxPorts - 1));
        }
        names_.emplace(inst.name, std::string{key});
        macs_.emplace(inst.mac, std::string{key});
        addresses_.emplace(inst.ipv4, std::string{key});
        if (local) {
            sockets_.emplace(inst.port.socket, std::string{key});
            site_.local_endpoints.push_back({inst.name, endpoint_status_key(ds_, local_.host, *p.name)});
        }
        referenced_groups_.insert(inst.security_groups.begin(), inst.security_groups.end());
        if (!p.allowed.empty())
            problem(key,
                    fmt::format("spec.allowedIps {} are not forwarded: calyx lets a port send from its own address only",
                                p.allowed),
                    false);
        if (!p.nats.empty())
            problem(key,
                    fmt::format("spec.ipNATs {} are not applied: calyx has no floating IPs (the seed's networks are "
                                "public, nat or private)",
                                p.nats),
                    false);
        site_.instances.push_back(std::move(inst));
        return {};
    }

    Result<config::PortConfig> port_of(const std::string& interface) const {
        if (interface.empty() || interface.size() > kMaxInterfaceName ||
            std::ranges::any_of(interface, [](char c) { return c == '/' || c == ' ' || c == '\0' || c == ':'; }))
            return std::unexpected(fmt::format("spec.interfaceName '{}' is not a Linux interface name", interface));
        config::PortConfig port;
        port.socket = ds_.port_socket;
        port.socket.replace(port.socket.find("{interface}"), std::string_view{"{interface}"}.size(), interface);
        if (port.socket.size() > kMaxUnixSocketPath)
            return std::unexpected(fmt::format("socket {} is longer than a unix socket path holds", port.socket));
        if (port.socket == local_.control.socket)
            return std::unexpected(fmt::format("socket {} is the control socket (control.socket)", port.socket));
        if (local_.uplink && std::holds_alternative<config::VhostUserPort>(local_.uplink->port) &&
            std::get<config::VhostUserPort>(local_.uplink->port).socket == port.socket)
            return std::unexpected(fmt::format("socket {} is the uplink's", port.socket));
        port.where = {ds_.where.file, ds_.where.line, ds_.where.column};
        return port;
    }

    const Store& store_;
    const config::Config& local_;
    const config::DatastoreConfig& ds_;
    const SiteTrees trees_;
    TranslateCache& cache_;
    Site site_;
    std::map<std::string, std::vector<size_t>, std::less<>> subnets_of_network_;  // -> site_.networks
    std::set<std::string> referenced_groups_;
    std::map<std::string, std::string, std::less<>> refused_groups_;  // id -> key of the refused policy
    std::map<std::string, std::string, std::less<>> names_, sockets_;  // -> the key that holds it
    std::map<MacAddr, std::string> macs_;
    std::map<Ipv4Addr, std::string> addresses_;
};

}  // namespace

std::string Problem::to_string() const {
    return fmt::format("{}: {}; {}", key, message, left_out ? "the key is left out" : "the rest of the key applies");
}

TranslateCache::TranslateCache() = default;
TranslateCache::~TranslateCache() = default;

Site translate(const Store& store, const config::Config& local, TranslateCache* cache) {
    TranslateCache once;
    return Translator{store, local, cache ? *cache : once}.run();
}

config::Config with_site(config::Config local, const Site& site) {
    local.networks = site.networks;
    local.security_groups = site.security_groups;
    local.instances = site.instances;
    return local;
}

}  // namespace calyx::cp::datastore
