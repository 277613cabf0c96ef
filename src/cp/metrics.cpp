#include "cp/metrics.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <fmt/format.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/metric_family.h>

#include "calyx/drop_reason.hpp"
#include "calyx/net.hpp"

namespace calyx::cp {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily family(std::string name, std::string help, MetricType type) {
    MetricFamily f;
    f.name = std::move(name);
    f.help = std::move(help);
    f.type = type;
    return f;
}

void add(MetricFamily& f, double value, std::vector<ClientMetric::Label> labels = {}) {
    ClientMetric m;
    m.label = std::move(labels);
    if (f.type == MetricType::Counter)
        m.counter.value = value;
    else
        m.gauge.value = value;
    f.metric.push_back(std::move(m));
}

class SampleCollector : public prometheus::Collectable {
public:
    explicit SampleCollector(std::function<RouterSample()> sample) : sample_(std::move(sample)) {}

    std::vector<MetricFamily> Collect() const override {
        const RouterSample s = sample_();
        using C = MetricType;
        auto rx_p = family("calyx_port_rx_packets_total", "Packets received from the port.", C::Counter);
        auto tx_p = family("calyx_port_tx_packets_total", "Packets sent to the port.", C::Counter);
        auto rx_b = family("calyx_port_rx_bytes_total", "Bytes received from the port (Ethernet frames without FCS).", C::Counter);
        auto tx_b = family("calyx_port_tx_bytes_total", "Bytes sent to the port (Ethernet frames without FCS).", C::Counter);
        auto drops = family("calyx_port_drops_total",
                            "Packets dropped, by reason: at the port they arrived on; tx_full and port_down at the port they were to leave by; limit_* at the port of the instance whose limit refused them.", C::Counter);
        auto up = family("calyx_port_up", "1 when the port is connected (a VM attached; the uplink's link up).", C::Gauge);
        for (const auto& p : s.ports) {
            const std::vector<ClientMetric::Label> port{{"port", p.name}};
            add(rx_p, static_cast<double>(p.counters.rx_packets), port);
            add(tx_p, static_cast<double>(p.counters.tx_packets), port);
            add(rx_b, static_cast<double>(p.counters.rx_bytes), port);
            add(tx_b, static_cast<double>(p.counters.tx_bytes), port);
            add(up, p.up ? 1 : 0, port);
            for (size_t r = 0; r < kDropReasonCount; ++r)
                add(drops, static_cast<double>(p.counters.drops[r]),
                    {{"port", p.name}, {"reason", std::string(kDropReasons[r].name)}});
        }
        auto busy = family("calyx_lcore_busy_cycles_total", "TSC cycles of poll-loop iterations that moved packets.", C::Counter);
        auto cycles = family("calyx_lcore_cycles_total", "TSC cycles of all poll-loop iterations.", C::Counter);
        auto io = family("calyx_lcore_io_cycles_total",
                         "Of the busy cycles, those inside port receive and transmit calls (vhost-user copies, PMDs).",
                         C::Counter);
        auto packets = family("calyx_lcore_packets_total", "Packets the worker received, all ports.", C::Counter);
        auto sleep = family("calyx_lcore_sleep_cycles_total",
                            "Of all cycles, those the worker slept while idle (dataplane.idle_sleep_us).", C::Counter);
        for (const auto& l : s.lcores) {
            const std::vector<ClientMetric::Label> lcore{{"lcore", std::to_string(l.lcore)}};
            add(busy, static_cast<double>(l.busy_cycles), lcore);
            add(cycles, static_cast<double>(l.total_cycles), lcore);
            add(io, static_cast<double>(l.io_cycles), lcore);
            add(packets, static_cast<double>(l.packets), lcore);
            add(sleep, static_cast<double>(l.sleep_cycles), lcore);
        }
        auto ct_entries = family("calyx_conntrack_entries", "Tracked connections.", C::Gauge);
        add(ct_entries, static_cast<double>(s.conntrack_entries));
        auto ct_capacity = family("calyx_conntrack_capacity", "Connections the table can hold.", C::Gauge);
        add(ct_capacity, static_cast<double>(s.conntrack_capacity));
        auto ct_created = family("calyx_conntrack_created_total", "Connections created.", C::Counter);
        add(ct_created, static_cast<double>(s.conntrack_created));
        auto ct_expired = family("calyx_conntrack_expired_total", "Connections removed after their timeout.", C::Counter);
        add(ct_expired, static_cast<double>(s.conntrack_expired));
        auto ct_evicted = family("calyx_conntrack_evicted_total",
                                 "Unanswered connections evicted to make room in a full table.", C::Counter);
        add(ct_evicted, static_cast<double>(s.conntrack_evicted));
        auto inst_conns = family("calyx_instance_connections",
                                 "Tracked connections charged to the instance (opened by it, or from outside to it).", C::Gauge);
        auto inst_nat = family("calyx_instance_nat_ports", "Masquerade ports the instance holds, all protocols and destinations.",
                               C::Gauge);
        for (const auto& i : s.instances) {
            add(inst_conns, static_cast<double>(i.connections), {{"instance", i.name}});
            add(inst_nat, static_cast<double>(i.nat_ports), {{"instance", i.name}});
        }
        auto dhcp = family("calyx_dhcp_replies_total", "DHCP replies sent, by message type.", C::Counter);
        for (size_t t = 0; t < s.dhcp_replies.size(); ++t)
            add(dhcp, static_cast<double>(s.dhcp_replies[t]), {{"type", dp::kDhcpReplyTypeNames[t]}});
        auto arp = family("calyx_arp_replies_total", "ARP replies sent (proxy-ARP).", C::Counter);
        add(arp, static_cast<double>(s.arp_replies));
        auto echo = family("calyx_icmp_echo_replies_total", "Pings to a gateway answered.", C::Counter);
        add(echo, static_cast<double>(s.icmp_echo_replies));
        auto errors = family("calyx_icmp_errors_total", "ICMP errors calyx sent or held back by the rate limit.", C::Counter);
        add(errors, static_cast<double>(s.icmp_errors_sent), {{"result", "sent"}});
        add(errors, static_cast<double>(s.icmp_errors_rate_limited), {{"result", "rate_limited"}});
        auto generation = family("calyx_config_generation", "Generation of the running configuration.", C::Gauge);
        add(generation, static_cast<double>(s.config_generation));
        auto reloads = family("calyx_config_reloads_total", "Configuration reloads, by result.", C::Counter);
        add(reloads, static_cast<double>(s.reloads_ok), {{"result", "success"}});
        add(reloads, static_cast<double>(s.reloads_failed), {{"result", "failure"}});
        // Masquerade: zero without an uplink, so dashboards need no special case.
        auto nat_ports = family("calyx_nat_ports_in_use", "Masquerade ports bound to connections, by protocol.", C::Gauge);
        add(nat_ports, static_cast<double>(s.nat_ports_tcp), {{"protocol", "tcp"}});
        add(nat_ports, static_cast<double>(s.nat_ports_udp), {{"protocol", "udp"}});
        add(nat_ports, static_cast<double>(s.nat_ports_icmp), {{"protocol", "icmp"}});
        auto nat_range = family("calyx_nat_port_range_size", "Masquerade ports per protocol and destination (uplink.nat_ports).", C::Gauge);
        add(nat_range, static_cast<double>(s.nat_ports_capacity));
        auto nat_exhausted = family("calyx_nat_port_exhaustion_total",
                                    "New connections refused because no masquerade port was free.", C::Counter);
        add(nat_exhausted, static_cast<double>(s.nat_exhausted));
        auto unresolved = family("calyx_uplink_neighbor_unresolved_total",
                                 "Packets dropped because the uplink next hop had no ARP answer yet.", C::Counter);
        add(unresolved, static_cast<double>(s.neighbor_unresolved));
        std::vector<MetricFamily> all{rx_p, tx_p, rx_b, tx_b, drops, up, busy, cycles, io, packets, sleep,
                                      ct_entries, ct_capacity, ct_created, ct_expired, ct_evicted, inst_conns,
                                      inst_nat, dhcp, arp, echo, errors,
                                      generation, reloads, nat_ports, nat_range, nat_exhausted, unresolved};
        // A site (`routing:`): zero without one, so dashboards need no special case. The host
        // interface's packets are the port "host_interface".
        auto exported = family("calyx_site_exported_routes", "Routes (a /32 per local instance) calyx keeps in routing.export_table.", C::Gauge);
        add(exported, static_cast<double>(s.site_exported_routes));
        auto imported = family("calyx_site_imported_routes", "Routes of routing.import_table, by whether calyx routes by them or refused them.", C::Gauge);
        add(imported, static_cast<double>(s.site_imported_routes), {{"result", "accepted"}});
        add(imported, static_cast<double>(s.site_refused_routes), {{"result", "refused"}});
        auto reads = family("calyx_site_route_reads_total",
                            "Reads of routing.import_table: route events, full dumps (start, overflow, periodic reconcile), socket overflows.",
                            C::Counter);
        add(reads, static_cast<double>(s.site_route_events), {{"kind", "event"}});
        add(reads, static_cast<double>(s.site_route_dumps), {{"kind", "dump"}});
        add(reads, static_cast<double>(s.site_route_overflows), {{"kind", "overflow"}});
        all.insert(all.end(), {exported, imported, reads});
        // The site's source. Without a datastore it is the file: up, in step, type "none".
        DatastoreSample none;
        none.type = "none";
        none.up = true;
        none.last_sync_age_s = 0;
        const DatastoreSample& d = s.datastore ? *s.datastore : none;
        const std::vector<ClientMetric::Label> type{{"type", d.type}};
        auto ds_up = family("calyx_datastore_up",
                            "1 when the site's datastore answers and calyx follows it (always 1 for type none, the file).",
                            C::Gauge);
        add(ds_up, d.up ? 1 : 0, type);
        auto ds_age = family("calyx_datastore_sync_age_seconds",
                             "Seconds since calyx was last known in step with the datastore (its last list, or a liveness "
                             "check with every watch running).",
                             C::Gauge);
        add(ds_age, std::max(0.0, d.last_sync_age_s), type);
        auto ds_revision = family("calyx_datastore_revision", "etcd revision of the site applied last.", C::Gauge);
        add(ds_revision, static_cast<double>(d.revision), type);
        auto ds_keys = family("calyx_datastore_keys", "Keys of the site's trees that calyx holds.", C::Gauge);
        add(ds_keys, static_cast<double>(d.keys), type);
        auto ds_refused = family("calyx_datastore_refused_keys",
                                 "Keys, or parts of keys, that the last translation refused (calyxctl status lists them).",
                                 C::Gauge);
        add(ds_refused, static_cast<double>(d.problems), type);
        auto ds_lists = family("calyx_datastore_lists_total",
                               "Full lists of the site: at start, and after a compaction, error or reconnection.", C::Counter);
        add(ds_lists, static_cast<double>(d.lists_total), type);
        auto ds_applies = family("calyx_datastore_applies_total",
                                 "Sites from the datastore handed to the reload path, by result (each success is a reload).",
                                 C::Counter);
        add(ds_applies, static_cast<double>(d.applies_total), {{"type", d.type}, {"result", "success"}});
        add(ds_applies, static_cast<double>(d.apply_failures_total), {{"type", d.type}, {"result", "failure"}});
        all.insert(all.end(), {ds_up, ds_age, ds_revision, ds_keys, ds_refused, ds_lists, ds_applies});
        return all;
    }

private:
    std::function<RouterSample()> sample_;
};

}  // namespace

std::optional<std::string> exposure_warning(const std::string& listen) {
    const std::string host = listen.substr(0, listen.rfind(':'));
    const auto addr = Ipv4Addr::parse(host);
    if (host == "localhost" || (addr && addr->value >> 24 == 127)) return std::nullopt;
    return fmt::format(
        "warning: metrics.listen {} is not a loopback address: anyone who can reach it reads, without "
        "authentication, every instance's name and traffic and drop counters, the connection table's and "
        "NAT ports' fill, the configuration generation and reload outcomes; keep it on 127.0.0.1 and let a "
        "local Prometheus (or a TLS proxy) scrape it, or firewall the port",
        listen);
}

std::expected<std::unique_ptr<MetricsServer>, std::string> MetricsServer::start(
    const std::string& listen, std::function<RouterSample()> sample) {
    std::unique_ptr<MetricsServer> server(new MetricsServer());
    try {
        // civetweb's listening_ports syntax: "127.0.0.1:9469".
        server->exposer_ = std::make_unique<prometheus::Exposer>(listen, 2);
        server->knock_host_ = listen.substr(0, listen.rfind(':'));
    } catch (const std::exception& e) {
        return std::unexpected(fmt::format("metrics: cannot listen on {}: {}", listen, e.what()));
    }
    // The exposer holds only a weak reference: the server keeps the collector alive.
    server->collector_ = std::make_shared<SampleCollector>(std::move(sample));
    server->exposer_->RegisterCollectable(server->collector_);
    return server;
}

MetricsServer::~MetricsServer() {
    // civetweb's master thread sees the stop request only when its poll on the listening
    // socket returns, which without scrapes takes up to its 2 s quantum (fixed at compile
    // time): knock on the socket until the exposer is gone, so calyx stops promptly.
    if (!exposer_) return;  // start() failed
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port());
    const std::string host = knock_host_ == "0.0.0.0" ? "127.0.0.1" : knock_host_;
    const bool knock = to.sin_port != 0 && inet_pton(AF_INET, host.c_str(), &to.sin_addr) == 1;
    std::atomic<bool> stopped{false};
    std::thread knocker;
    if (knock)
        knocker = std::thread([&] {
            while (!stopped.load()) {
                const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd >= 0) {
                    ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to));
                    ::close(fd);
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
        });
    exposer_.reset();
    stopped = true;
    if (knocker.joinable()) knocker.join();
}

uint16_t MetricsServer::port() const {
    const auto ports = exposer_->GetListeningPorts();
    return ports.empty() ? 0 : static_cast<uint16_t>(ports.front());
}

}  // namespace calyx::cp
