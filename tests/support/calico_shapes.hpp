// The keys and values networking-calico writes to etcd, built in C++ for the tests and
// benchmarks that need many of them (the integration test plays the seed's frames with them; the
// datastore benchmark writes 10,000 endpoints). Byte for byte the shapes of
// tests/etcd/networking_calico_shapes.py, which says where each comes from; a unit test
// (calico_shapes_test.cpp) checks these against its fixtures.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace calyx::test::calico {

using Ordered = nlohmann::ordered_json;

inline constexpr const char* kCreated = "2026-12-04T20:00:00Z";
inline constexpr const char* kSgLabel = "sg.projectcalico.org/openstack-";
inline constexpr const char* kSgNameLabel = "sg-name.projectcalico.org/openstack-";
inline constexpr const char* kProject = "5f1e8c2d9a7b4c3e8f6a1b2c3d4e5f60";

// Python's json.dumps with its default separators (", " and ": "), as networking-calico encodes.
inline void dump_python(const Ordered& j, std::string& out) {
    if (j.is_object()) {
        out += '{';
        bool first = true;
        for (const auto& [k, v] : j.items()) {
            out += first ? "" : ", ";
            first = false;
            out += Ordered(k).dump();
            out += ": ";
            dump_python(v, out);
        }
        out += '}';
    } else if (j.is_array()) {
        out += '[';
        for (size_t i = 0; i < j.size(); ++i) {
            out += i ? ", " : "";
            dump_python(j[i], out);
        }
        out += ']';
    } else {
        out += j.dump();
    }
}
inline std::string python_json(const Ordered& j) {
    std::string out;
    dump_python(j, out);
    return out;
}

// Python's text[-12:]: the last 12 characters, or all of a shorter text.
inline std::string last12(const std::string& text) { return text.substr(text.size() > 12 ? text.size() - 12 : 0); }

inline std::string escape_dashes(std::string s) {
    std::string out;
    for (char c : s) out += c == '-' ? std::string("--") : std::string(1, c);
    return out;
}

inline std::string resource_key(const std::string& prefix, const std::string& plural, const std::string& name,
                                const std::string& ns = "openstack") {
    return fmt::format("{}/resources/v3/projectcalico.org/{}/{}/{}", prefix, plural, ns, name);
}

inline Ordered resource(const char* kind, const std::string& name, const std::string& uid, Ordered spec,
                        Ordered annotations = Ordered::object(), Ordered labels = Ordered::object(),
                        const std::string& ns = "openstack") {
    Ordered value;
    value["kind"] = kind;
    value["apiVersion"] = "projectcalico.org/v3";
    value["metadata"]["name"] = name;
    value["metadata"]["namespace"] = ns;
    value["metadata"]["creationTimestamp"] = kCreated;
    value["metadata"]["uid"] = uid;
    if (!annotations.empty()) value["metadata"]["annotations"] = std::move(annotations);
    if (!labels.empty()) value["metadata"]["labels"] = std::move(labels);
    value["spec"] = std::move(spec);
    return value;
}

struct Endpoint {
    std::string host;
    std::string device;  // the VM (Nova instance uuid)
    std::string port;    // the Neutron port id
    std::string mac;
    std::string ip;
    std::string gateway;
    std::string network;                                    // the Neutron network id
    std::vector<std::pair<std::string, std::string>> groups;  // (security group id, name)
    std::vector<std::string> allowed{};
};

inline std::string endpoint_name(const Endpoint& e) {
    return fmt::format("{}-openstack-{}-{}", escape_dashes(e.host), escape_dashes(e.device), escape_dashes(e.port));
}

// (key, value) of a WorkloadEndpoint, as endpoints.py and datamodel_v3.put write it.
inline std::pair<std::string, std::string> workload_endpoint(const Endpoint& e, const std::string& prefix = "/calico") {
    const std::string name = endpoint_name(e);
    Ordered spec;
    spec["orchestrator"] = "openstack";
    spec["workload"] = e.device;
    spec["node"] = e.host;
    spec["endpoint"] = e.port;
    spec["interfaceName"] = "tap" + e.port.substr(0, 11);
    spec["mac"] = e.mac;
    spec["ipv4Gateway"] = e.gateway;
    spec["ipNetworks"] = Ordered::array({e.ip + "/32"});
    spec["allowedIps"] = Ordered::array();
    for (const auto& a : e.allowed) {
        spec["ipNetworks"].push_back(a + "/32");
        spec["allowedIps"].push_back(a + "/32");
    }
    Ordered labels = Ordered::object();
    for (const auto& [id, group_name] : e.groups) {
        labels[kSgLabel + id] = group_name;
        if (!group_name.empty()) labels[kSgNameLabel + group_name] = id;
    }
    labels["projectcalico.org/namespace"] = "openstack";
    labels["projectcalico.org/orchestrator"] = "openstack";
    labels["projectcalico.org/openstack-project-id"] = kProject;
    labels["projectcalico.org/openstack-project-name"] = "seed";
    labels["projectcalico.org/openstack-project-parent-id"] = "default";
    Ordered annotations;
    annotations["openstack.projectcalico.org/network-id"] = e.network;
    const std::string uid = fmt::format("0000{}-0000-4000-8000-{}", e.port.substr(0, 4), last12(e.port));
    return {resource_key(prefix, "workloadendpoints", name),
            python_json(resource("WorkloadEndpoint", name, uid, std::move(spec), std::move(annotations),
                                 std::move(labels)))};
}

// A Neutron security group rule, as _neutron_rule_to_etcd_rule translates it.
struct Rule {
    std::string direction;           // "ingress" or "egress"
    std::optional<Ordered> protocol{};  // 6, 17, "ICMP", ...; none: any
    std::optional<Ordered> ports{};     // e.g. [443] or ["8000:8080"]
    std::optional<Ordered> icmp{};      // e.g. {"type": 8, "code": 0}
    std::optional<std::string> remote_ip{};
    std::optional<std::string> remote_group{};
    int ip_version = 4;
};

inline Ordered rule_json(const Rule& r) {
    Ordered out;
    out["action"] = "Allow";
    out["ipVersion"] = r.ip_version;
    if (r.protocol) out["protocol"] = *r.protocol;
    if (r.icmp) out["icmp"] = *r.icmp;
    Ordered entity = Ordered::object();
    if (r.remote_group) entity["selector"] = fmt::format("has({}{})", kSgLabel, *r.remote_group);
    if (r.remote_ip) entity["nets"] = Ordered::array({*r.remote_ip});
    const bool ingress = r.direction == "ingress";
    if (r.ports) {
        if (ingress)
            out["destination"]["ports"] = *r.ports;
        else
            entity["ports"] = *r.ports;
    }
    if (!entity.empty()) out[ingress ? "source" : "destination"] = std::move(entity);
    return out;
}

// (key, value) of the NetworkPolicy of security group `id`, as policy.py writes it.
inline std::pair<std::string, std::string> network_policy(const std::string& id, const std::vector<Rule>& rules,
                                                          const std::string& prefix = "/calico") {
    const std::string name = "ossg.default." + id;
    Ordered spec;
    spec["ingress"] = Ordered::array();
    spec["egress"] = Ordered::array();
    for (const Rule& r : rules) spec[r.direction == "ingress" ? "ingress" : "egress"].push_back(rule_json(r));
    spec["selector"] = fmt::format("has({}{})", kSgLabel, id);
    const std::string uid = fmt::format("0000{}-0000-4000-8000-{}", id.substr(0, 4), last12(id));
    return {resource_key(prefix, "networkpolicies", name), python_json(resource("NetworkPolicy", name, uid, std::move(spec)))};
}

struct Subnet {
    std::string id;
    std::string network;
    std::string cidr;
    std::string gateway;
    std::vector<std::string> dns{};
    std::vector<std::pair<std::string, std::string>> routes{};  // (destination, nexthop)
};

// (key, value) of a DHCP subnet, as subnets.py writes it (v2 tree; `v1`: the older tree).
inline std::pair<std::string, std::string> subnet(const Subnet& s, bool v1 = false, const std::string& prefix = "/calico") {
    Ordered data;
    data["network_id"] = s.network;
    data["cidr"] = s.cidr;
    data["host_routes"] = Ordered::array();
    for (const auto& [d, n] : s.routes) data["host_routes"].push_back(Ordered{{"destination", d}, {"nexthop", n}});
    data["gateway_ip"] = s.gateway;
    if (!s.dns.empty()) data["dns_servers"] = s.dns;
    const std::string key = v1 ? fmt::format("{}/dhcp/v1/subnet/{}", prefix, s.id)
                               : fmt::format("{}/dhcp/v2/no-region/subnet/{}", prefix, s.id);
    return {key, python_json(data)};
}

}  // namespace calyx::test::calico
