#include "cp/policy_compiler.hpp"

#include <algorithm>
#include <map>

#include <fmt/format.h>

#include "calyx/headers.hpp"

namespace calyx::cp {

std::vector<std::shared_ptr<const dp::InstancePolicy>> compile_policies(const config::Config& cfg) {
    // Members of each group, by address, on every host of the site: remote_group rules allow
    // exactly these.
    std::map<std::string, std::vector<Ipv4Prefix>, std::less<>> members;
    for (const auto& inst : cfg.instances)
        for (const auto& g : inst.security_groups) members[g].push_back({inst.ipv4, 32});

    // A policy depends only on the instance's list of groups: instances that share the list
    // (typically most of a tenant's) share one compiled policy.
    std::map<std::vector<std::string>, std::shared_ptr<const dp::InstancePolicy>> compiled;
    std::vector<std::shared_ptr<const dp::InstancePolicy>> out;
    for (const config::InstanceConfig* local : cfg.local_instances()) {
        const config::InstanceConfig& inst = *local;
        auto& shared = compiled[inst.security_groups];
        if (shared) {
            out.push_back(shared);
            continue;
        }
        std::vector<dp::RuleSpec> ingress, egress;
        for (const auto& group_name : inst.security_groups) {
            const auto g = std::find_if(cfg.security_groups.begin(), cfg.security_groups.end(),
                                        [&](const auto& sg) { return sg.name == group_name; });
            if (g == cfg.security_groups.end()) continue;  // validation rejects this earlier
            for (uint32_t r = 0; r < g->rules.size(); ++r) {
                const config::RuleConfig& rule = g->rules[r];
                dp::RuleSpec spec;
                spec.origin = {static_cast<uint32_t>(g - cfg.security_groups.begin()), r};
                spec.protocol = rule.protocol;
                if (rule.protocol && dp::keyed_by_port(*rule.protocol)) {
                    spec.key_min = rule.port_min;
                    spec.key_max = rule.port_max;
                } else if (rule.protocol == ipproto::kIcmp && rule.icmp_type) {
                    const uint16_t base = static_cast<uint16_t>(*rule.icmp_type << 8);
                    spec.key_min = rule.icmp_code ? static_cast<uint16_t>(base | *rule.icmp_code) : base;
                    spec.key_max = rule.icmp_code ? spec.key_min : static_cast<uint16_t>(base | 0xff);
                }
                if (rule.remote) {
                    spec.remotes = {*rule.remote};
                } else if (rule.remote_group) {
                    auto m = members.find(*rule.remote_group);
                    if (m != members.end()) spec.remotes = m->second;
                } else {
                    spec.remotes = {Ipv4Prefix{}};  // 0.0.0.0/0
                }
                (rule.direction == config::RuleDirection::ingress ? ingress : egress).push_back(std::move(spec));
            }
        }
        shared = std::make_shared<const dp::InstancePolicy>(dp::InstancePolicy{dp::RuleTable(ingress), dp::RuleTable(egress)});
        out.push_back(shared);
    }
    return out;
}

std::string describe_rule(const config::Config& cfg, const dp::RuleOrigin& origin) {
    const auto& g = cfg.security_groups.at(origin.group);
    const auto& r = g.rules.at(origin.rule);
    std::string what = !r.protocol                     ? std::string("any protocol")
                       : *r.protocol == ipproto::kTcp  ? std::string("tcp")
                       : *r.protocol == ipproto::kUdp  ? std::string("udp")
                       : *r.protocol == ipproto::kIcmp ? std::string("icmp")
                                                       : fmt::format("protocol {}", *r.protocol);
    if (r.protocol && dp::keyed_by_port(*r.protocol) && !(r.port_min == 0 && r.port_max == 65535))
        what += r.port_min == r.port_max ? fmt::format("/{}", r.port_min)
                                         : fmt::format("/{}-{}", r.port_min, r.port_max);
    if (r.icmp_type) what += fmt::format(" type {}", *r.icmp_type);
    if (r.icmp_code) what += fmt::format(" code {}", *r.icmp_code);
    const std::string remote = r.remote         ? r.remote->to_string()
                               : r.remote_group ? fmt::format("members of group {}", *r.remote_group)
                                                : std::string("anywhere");
    const bool in = r.direction == config::RuleDirection::ingress;
    return fmt::format("{} {} {} {} (group {}, rule {} at {})", in ? "ingress" : "egress", what,
                       in ? "from" : "to", remote, g.name, origin.rule + 1, r.where.to_string());
}

}  // namespace calyx::cp
