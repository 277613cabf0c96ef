// Prometheus metrics (prometheus-cpp's pull exposer on `metrics.listen`).
//
// A scrape asks the control plane for a RouterSample: counters that workers write per lcore,
// summed with relaxed loads. Scraping never touches a worker or stops one.
#pragma once

#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dp/counters.hpp"

namespace prometheus {
class Collectable;
class Exposer;
}  // namespace prometheus

namespace calyx::cp {

// The datastore (cp/datastore/syncer.hpp), when the site comes from etcd.
struct DatastoreSample {
    std::string type;      // "etcd"
    std::string endpoint;  // the etcd client URL in use
    bool up = false;       // etcd answers and every watch runs
    int64_t revision = 0;  // etcd's revision of the site applied last
    double last_sync_age_s = -1;  // seconds since calyx was last known in step with etcd; -1: never
    uint64_t keys = 0;            // keys of the site's trees held
    uint64_t problems = 0;        // keys, or parts of keys, the last translation refused
    uint64_t endpoints = 0, local_endpoints = 0, policies = 0, subnets = 0;
    uint64_t lists_total = 0;    // full lists: at start, after a compaction, error or reconnect
    uint64_t applies_total = 0;  // sites applied (each one reload)
    uint64_t apply_failures_total = 0;
    std::string last_error;  // the last etcd error, empty when none since the last list
    std::vector<std::string> first_problems;  // the first kMaxListedProblems, "key: message; ..."
    static constexpr size_t kMaxListedProblems = 20;
};

struct RouterSample {
    struct Port {
        std::string name;  // the instance's name, or "uplink"
        bool up = false;
        dp::PortCounters counters;
    };
    struct Lcore {
        unsigned lcore = 0;
        uint64_t busy_cycles = 0;
        uint64_t total_cycles = 0;
        uint64_t io_cycles = 0;  // of busy_cycles: inside port rx/tx calls
        uint64_t packets = 0;    // received
        uint64_t sleep_cycles = 0;  // of total_cycles: asleep while idle
    };
    // What each instance holds of what all share (dp/limits.hpp): who fills the table.
    struct Instance {
        std::string name;
        uint64_t connections = 0;  // tracked connections charged to it
        uint64_t nat_ports = 0;    // masquerade ports it holds, all protocols and remotes
    };
    std::vector<Port> ports;
    std::vector<Lcore> lcores;
    std::vector<Instance> instances;
    uint64_t conntrack_entries = 0, conntrack_capacity = 0, conntrack_created = 0,
             conntrack_expired = 0, conntrack_evicted = 0;
    uint64_t arp_replies = 0, icmp_echo_replies = 0, icmp_errors_sent = 0,
             icmp_errors_rate_limited = 0;
    std::array<uint64_t, 3> dhcp_replies{};  // offer, ack, nak
    uint64_t config_generation = 0, reloads_ok = 0, reloads_failed = 0;
    // Masquerade (with an uplink): ports bound to connections, per protocol.
    bool nat = false;
    uint64_t nat_ports_tcp = 0, nat_ports_udp = 0, nat_ports_icmp = 0, nat_ports_capacity = 0;
    uint64_t nat_exhausted = 0;  // connections refused for want of a port (all ports' drops)
    uint64_t neighbor_unresolved = 0;
    // A site (`routing:`): the kernel tables calyx meets BIRD in. Zero without one.
    uint64_t site_exported_routes = 0;  // /32s calyx keeps in export_table
    uint64_t site_imported_routes = 0;  // routes of import_table calyx routes by
    uint64_t site_refused_routes = 0;   // routes of import_table it refused (logged)
    uint64_t site_route_events = 0, site_route_dumps = 0, site_route_overflows = 0;
    std::optional<DatastoreSample> datastore;  // with a datastore (the daemon fills it in)
};

// The warning to log when `listen` ("host:port") is not a loopback address: what anyone who
// reaches the endpoint learns. nullopt for 127.0.0.0/8 and localhost.
std::optional<std::string> exposure_warning(const std::string& listen);

// The Prometheus text a sample becomes is built by prometheus-cpp; this class only maps the
// sample to metric families and serves them.
class MetricsServer {
public:
    // Listens on "host:port" (port 0: any free port). Errors (bad address, port in use) are
    // returned, never thrown.
    static std::expected<std::unique_ptr<MetricsServer>, std::string> start(
        const std::string& listen, std::function<RouterSample()> sample);
    ~MetricsServer();
    uint16_t port() const;

private:
    MetricsServer() = default;
    std::shared_ptr<prometheus::Collectable> collector_;
    std::unique_ptr<prometheus::Exposer> exposer_;
    std::string knock_host_;  // the listening address, to wake civetweb when stopping
};

}  // namespace calyx::cp
