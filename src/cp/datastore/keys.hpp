// Where networking-calico and Felix keep things in etcd (doc/datastore.md has the table), for a
// datastore configuration (its prefix, usually /calico, and region):
//
//   endpoints   <prefix>/resources/v3/projectcalico.org/workloadendpoints/<namespace>/<name>
//   policies    <prefix>/resources/v3/projectcalico.org/networkpolicies/<namespace>/<name>
//   subnets     <prefix>/dhcp/v2/<region>/subnet/<id>, and the older <prefix>/dhcp/v1/subnet/<id>
//   host status <prefix>/felix/v2/<region>/host/<host>/status (with a lease) and
//               .../last_reported_status
//   port status <prefix>/felix/v2/<region>/host/<host>/workload/<orchestrator>/<workload>/
//               endpoint/<endpoint>
//
// <namespace> is "openstack" ("openstack-region-<region>" with a region), <region> "no-region"
// ("region-<region>"). Sources: networking-calico's datamodel_v1/v2/v3.py and libcalico-go's
// backend/model (workloadendpointstatus.go, statusreports.go, keys.go's escapeName).
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "calyx/config.hpp"

namespace calyx::cp::datastore {

// The four subtrees calyx reads, each listed and watched on its own.
struct SiteTrees {
    std::string endpoints;  // each ends in '/': a prefix of its keys and nothing else's
    std::string policies;
    std::string subnets_v2;
    std::string subnets_v1;

    std::array<const std::string*, 4> all() const { return {&endpoints, &policies, &subnets_v2, &subnets_v1}; }
};
SiteTrees site_trees(const config::DatastoreConfig& ds);

// The four parts of a WorkloadEndpoint name "<host>-<orchestrator>-<workload>-<endpoint>", each
// with "--" standing for '-' (networking-calico's endpoint_name, libcalico-go's
// names.ExtractDashSeparatedParms).
struct EndpointName {
    std::string host, orchestrator, workload, endpoint;
};
std::optional<EndpointName> split_endpoint_name(std::string_view name);

// libcalico-go's escapeName for key segments: '%' -> "%25", '/' -> "%2f".
std::string escape_segment(std::string_view name);

// Felix's status keys for `host` (this calyx's host name).
std::string host_status_key(const config::DatastoreConfig& ds, std::string_view host);
std::string host_last_status_key(const config::DatastoreConfig& ds, std::string_view host);
// The status key of a local endpoint: its workload is "<namespace>/<workload>", as Felix's
// v1 WorkloadEndpointKey has it.
std::string endpoint_status_key(const config::DatastoreConfig& ds, std::string_view host, const EndpointName& name);
// The prefix of every endpoint status key of `host`, to find stale ones.
std::string endpoint_status_prefix(const config::DatastoreConfig& ds, std::string_view host);

// The smallest key after every key that starts with `prefix` (etcd's range_end for a prefix).
std::string prefix_end(std::string_view prefix);

}  // namespace calyx::cp::datastore
