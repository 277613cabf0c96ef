// The configuration model's own functions (calyx/config.hpp): names of its enums, lookups.
#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "calyx/config.hpp"
#include "calyx/overloaded.hpp"

namespace calyx::config {

std::string SourceLocation::to_string() const {
    return line == 0 ? file : fmt::format("{}:{}:{}", file, line, column);
}

std::string Error::to_string() const {
    return fmt::format("{}:{}:{}: {}", where.file, where.line, where.column, message);
}

std::string_view to_string(VhostMode mode) {
    switch (mode) {
        case VhostMode::server:
            return "server";
        case VhostMode::client:
            return "client";
    }
    return "?";
}

std::string_view type_name(const UplinkPort& port) {
    return std::visit([](const auto& p) { return std::decay_t<decltype(p)>::kType; }, port);
}

const std::string& device_name(const UplinkPort& port) {
    return std::visit(
        Overloaded{[](const TapPort& p) -> const std::string& { return p.name; },
                   [](const AfPacketPort& p) -> const std::string& { return p.iface; },
                   [](const PciPort& p) -> const std::string& { return p.address; },
                   [](const VhostUserPort& p) -> const std::string& { return p.socket; }},
        port);
}

std::string_view to_string(DatastoreType type) {
    switch (type) {
        case DatastoreType::none:
            return "none";
        case DatastoreType::etcd:
            return "etcd";
    }
    return "?";
}

const DatastoreNetwork* DatastoreConfig::find_network(std::string_view id) const {
    auto it = std::ranges::find(networks, id, &DatastoreNetwork::id);
    return it == networks.end() ? nullptr : &*it;
}

std::string DatastoreConfig::region_string() const {
    return region ? "region-" + *region : std::string{"no-region"};
}

std::string DatastoreConfig::namespace_name() const {
    return region ? "openstack-region-" + *region : std::string{"openstack"};
}

const NetworkConfig* Config::find_network(std::string_view name) const {
    auto it = std::ranges::find(networks, name, &NetworkConfig::name);
    return it == networks.end() ? nullptr : &*it;
}

std::string_view to_string(RuleDirection direction) {
    switch (direction) {
        case RuleDirection::ingress:
            return "ingress";
        case RuleDirection::egress:
            return "egress";
    }
    return "?";
}

std::vector<const InstanceConfig*> Config::local_instances() const {
    std::vector<const InstanceConfig*> out;
    for (const InstanceConfig& inst : instances)
        if (is_local(inst)) out.push_back(&inst);
    return out;
}

const InstanceConfig* Config::find_instance(std::string_view name) const {
    auto it = std::ranges::find(instances, name, &InstanceConfig::name);
    return it == instances.end() ? nullptr : &*it;
}

std::string Config::state_path() const {
    if (!dataplane.state_file.empty()) return dataplane.state_file;
    return std::filesystem::path(control.socket).replace_extension(".state").string();
}

const SecurityGroupConfig* Config::find_security_group(std::string_view name) const {
    auto it = std::ranges::find(security_groups, name, &SecurityGroupConfig::name);
    return it == security_groups.end() ? nullptr : &*it;
}

}  // namespace calyx::config
