// networking-calico's keys -> the site model the YAML file also produces (calyx/config.hpp):
// subnets -> networks (with what DHCP hands out), NetworkPolicies ossg.default.<id> -> security
// groups, WorkloadEndpoints -> instances: this host's (spec.node is Config::host) with a
// vhost-user port, the other hosts' as remote instances that count for remote_group.
//
// Pure: strings in, model out, no etcd and no I/O, so every shape is tested on fixtures
// (tests/etcd/). The result is a valid site for the host's own configuration: every key that
// would make it invalid (bad JSON, a field calyx cannot apply, a selector outside the subset
// networking-calico writes, an address another key already holds) is left out and reported by
// its key, and never keeps the rest from applying. Where two keys collide, the older one (lower
// create revision) keeps its place, so a new key cannot take an address from a running VM.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "calyx/config.hpp"
#include "cp/datastore/keys.hpp"

namespace calyx::cp::datastore {

// One key as etcd holds it.
struct KeyValue {
    std::string value;
    int64_t create_revision = 0;
    int64_t mod_revision = 0;
};
// The keys of the site's trees (SiteTrees), by key.
using Store = std::map<std::string, KeyValue, std::less<>>;

// A key, or part of one, that calyx does not apply, and why.
struct Problem {
    std::string key;
    std::string message;
    bool left_out = true;  // the key is left out; false: it applies without the part named
    std::string to_string() const;
};

// A local endpoint, for the status Felix would report for it.
struct LocalEndpoint {
    std::string instance;    // the instance's name: the Neutron port id
    std::string status_key;  // endpoint_status_key()
};

struct Site {
    std::vector<config::NetworkConfig> networks;
    std::vector<config::SecurityGroupConfig> security_groups;
    std::vector<config::InstanceConfig> instances;
    std::vector<LocalEndpoint> local_endpoints;
    // This host's endpoints that were left out: Felix reports them as "error".
    std::vector<LocalEndpoint> refused_local_endpoints;
    std::vector<Problem> problems;
    // What was read, for status and logs: keys of each kind found (valid or not), and what was
    // skipped because calyx forwards IPv4 only (IPv6 subnets, IPv6-only rules and ports).
    struct Counts {
        size_t endpoints = 0, policies = 0, subnets = 0, ipv6_skipped = 0;
        bool operator==(const Counts&) const = default;
    } counts;
};

// What translate() keeps of each key between calls: its value read on its own (JSON parsed,
// rules translated), reused while the key holds the same value. A change re-reads only
// the keys it touched; the checks between keys and against the host's configuration run every
// time. One cache per store (the syncer's).
class TranslateCache {
  public:
    TranslateCache();
    ~TranslateCache();
    size_t size() const { return entries.size(); }

    struct Entry;  // translate.cpp's business
    std::map<std::string, std::shared_ptr<const Entry>, std::less<>> entries;  // by key
};

// `local`: the host's own configuration (its host name, datastore section, gateway MAC, uplink
// and control socket), which the site must fit. `cache`: see TranslateCache; none: every key is
// read anew.
Site translate(const Store& store, const config::Config& local, TranslateCache* cache = nullptr);

// `local` with the site's networks, security groups and instances.
config::Config with_site(config::Config local, const Site& site);

}  // namespace calyx::cp::datastore
