// A large site as networking-calico writes it, for the datastore benchmarks: `endpoints` ports
// spread over hosts of `per_host` each (host compute-000 is the one calyx serves), `groups`
// security groups of five rules each (one naming another group, one its own), every port in
// three groups, 20 subnets of /18, 10.<n>.0.0 (public, nat and private in turn).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "support/calico_shapes.hpp"

namespace calyx::perf {

struct SiteSize {
    int endpoints = 10000;
    int groups = 1000;
    int per_host = 100;  // endpoints per compute host; compute-000 is calyx's
};

inline constexpr int kSubnets = 20;
inline std::string network_id(int n) { return fmt::format("00000000-0000-4000-8000-{:012}", n); }
inline std::string group_id(int g) { return fmt::format("5a000000-0000-4000-8000-{:012}", g); }
inline std::string port_id(int i) { return fmt::format("{:08x}-0000-4000-8000-000000000000", i); }
inline std::string host_of(int i, const SiteSize& size) { return fmt::format("compute-{:03}", i / size.per_host); }

// The rules of group g; `variant` changes one port, as a user editing a rule would.
inline std::vector<test::calico::Rule> group_rules(int g, int groups, int variant = 0) {
    using test::calico::Ordered;
    using test::calico::Rule;
    return {Rule{"ingress", 6, Ordered::array({8000 + g % 1000 + variant}), {}, "0.0.0.0/0"},
            Rule{"ingress", 6, Ordered::array({"9000:9100"}), {}, {}, group_id((g + 1) % groups)},
            Rule{"ingress", "ICMP", {}, Ordered{{"type", 8}}, {}, group_id(g)},
            Rule{"egress"},
            Rule{"egress", 17, Ordered::array({53}), {}, "10.0.0.0/8"}};
}

inline test::calico::Endpoint endpoint(int i, const SiteSize& size) {
    const int net = i % kSubnets;
    const int host = i / kSubnets + 2;  // .0 is the network, .1 the gateway
    const std::string ip = fmt::format("10.{}.{}.{}", net, host / 256, host % 256);
    return {host_of(i, size),
            fmt::format("{:08x}-1111-4222-8333-944455556666", i),
            port_id(i),
            fmt::format("fa:16:3e:{:02x}:{:02x}:{:02x}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff),
            ip,
            fmt::format("10.{}.0.1", net),
            network_id(net),
            {{group_id(i % size.groups), "a"}, {group_id(i * 7 % size.groups), "b"}, {group_id(i * 13 % size.groups), "c"}}};
}

inline std::vector<std::pair<std::string, std::string>> big_site(const SiteSize& size) {
    std::vector<std::pair<std::string, std::string>> keys;
    for (int n = 0; n < kSubnets; ++n)
        keys.push_back(test::calico::subnet({fmt::format("5b000000-0000-4000-8000-{:012}", n), network_id(n),
                                             fmt::format("10.{}.0.0/18", n), fmt::format("10.{}.0.1", n),
                                             {"10.255.0.53"}}));
    for (int g = 0; g < size.groups; ++g) keys.push_back(test::calico::network_policy(group_id(g), group_rules(g, size.groups)));
    for (int i = 0; i < size.endpoints; ++i) keys.push_back(test::calico::workload_endpoint(endpoint(i, size)));
    return keys;
}

// The networks' kinds for datastore.networks, as YAML flow entries.
inline std::string network_kinds_yaml() {
    std::string y;
    constexpr const char* kKinds[] = {"public", "nat", "private"};
    for (int n = 0; n < kSubnets; ++n) y += fmt::format("    - {{id: {}, kind: {}}}\n", network_id(n), kKinds[n % 3]);
    return y;
}

}  // namespace calyx::perf
