#include "cp/datastore/keys.hpp"

#include <fmt/format.h>

namespace calyx::cp::datastore {

SiteTrees site_trees(const config::DatastoreConfig& ds) {
    const std::string resources = ds.prefix + "/resources/v3/projectcalico.org/";
    return {resources + "workloadendpoints/" + ds.namespace_name() + "/",
            resources + "networkpolicies/" + ds.namespace_name() + "/",
            fmt::format("{}/dhcp/v2/{}/subnet/", ds.prefix, ds.region_string()), ds.prefix + "/dhcp/v1/subnet/"};
}

std::optional<EndpointName> split_endpoint_name(std::string_view name) {
    std::array<std::string, 4> parts;
    size_t part = 0;
    for (size_t i = 0; i < name.size(); ++i) {
        if (name[i] != '-') {
            parts[part] += name[i];
        } else if (i + 1 < name.size() && name[i + 1] == '-') {
            parts[part] += '-';
            ++i;
        } else if (++part == parts.size()) {
            return std::nullopt;
        }
    }
    if (part != parts.size() - 1) return std::nullopt;
    for (const std::string& p : parts)
        if (p.empty()) return std::nullopt;
    return EndpointName{parts[0], parts[1], parts[2], parts[3]};
}

std::string escape_segment(std::string_view name) {
    std::string out;
    for (char c : name) {
        if (c == '%')
            out += "%25";
        else if (c == '/')
            out += "%2f";
        else
            out += c;
    }
    return out;
}

namespace {
std::string host_dir(const config::DatastoreConfig& ds, std::string_view host) {
    return fmt::format("{}/felix/v2/{}/host/{}", ds.prefix, ds.region_string(), host);
}
}  // namespace

std::string host_status_key(const config::DatastoreConfig& ds, std::string_view host) {
    return host_dir(ds, host) + "/status";
}

std::string host_last_status_key(const config::DatastoreConfig& ds, std::string_view host) {
    return host_dir(ds, host) + "/last_reported_status";
}

std::string endpoint_status_key(const config::DatastoreConfig& ds, std::string_view host, const EndpointName& name) {
    return fmt::format("{}/workload/{}/{}/endpoint/{}", host_dir(ds, host), escape_segment(name.orchestrator),
                       escape_segment(ds.namespace_name() + "/" + name.workload), escape_segment(name.endpoint));
}

std::string endpoint_status_prefix(const config::DatastoreConfig& ds, std::string_view host) {
    return host_dir(ds, host) + "/workload/";
}

std::string prefix_end(std::string_view prefix) {
    std::string end{prefix};
    while (!end.empty()) {
        if (static_cast<unsigned char>(end.back()) < 0xff) {
            end.back() = static_cast<char>(end.back() + 1);
            return end;
        }
        end.pop_back();
    }
    return std::string(1, '\0');  // every key: etcd's "range_end \0" means to the end
}

}  // namespace calyx::cp::datastore
