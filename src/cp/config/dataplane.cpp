// dataplane: workers, EAL arguments, the gateway MAC, ICMP error budget, buffers, conntrack.
#include "cp/config/sections.hpp"

#include <algorithm>
#include <array>

namespace calyx::config {
namespace {

constexpr std::string_view kDataplaneKeys[] = {
    "workers",           "eal_args", "gateway_mac",  "icmp_errors_per_second",
    "icmp_errors_burst", "mbufs",    "conntrack",    "idle_sleep_us", "state_file"};

// The per-state lifetimes of dataplane.conntrack, each keyed by its ConntrackConfig field name.
struct ConntrackTimeout {
    std::string_view key;
    uint32_t ConntrackConfig::*field;
};
constexpr ConntrackTimeout kConntrackTimeouts[] = {
    {"tcp_syn_sent", &ConntrackConfig::tcp_syn_sent},
    {"tcp_syn_recv", &ConntrackConfig::tcp_syn_recv},
    {"tcp_established", &ConntrackConfig::tcp_established},
    {"tcp_fin_wait", &ConntrackConfig::tcp_fin_wait},
    {"tcp_close_wait", &ConntrackConfig::tcp_close_wait},
    {"tcp_last_ack", &ConntrackConfig::tcp_last_ack},
    {"tcp_time_wait", &ConntrackConfig::tcp_time_wait},
    {"tcp_close", &ConntrackConfig::tcp_close},
    {"tcp_unacknowledged", &ConntrackConfig::tcp_unacknowledged},
    {"udp_unreplied", &ConntrackConfig::udp_unreplied},
    {"udp_replied", &ConntrackConfig::udp_replied},
    {"icmp", &ConntrackConfig::icmp},
    {"generic", &ConntrackConfig::generic},
    {"fragment", &ConntrackConfig::fragment},
};
constexpr auto kConntrackKeys = [] {
    std::array<std::string_view, std::size(kConntrackTimeouts) + 1> keys{"capacity"};
    for (size_t i = 0; i < std::size(kConntrackTimeouts); ++i)
        keys[i + 1] = kConntrackTimeouts[i].key;
    return keys;
}();

constexpr unsigned kMaxLcore = 128;
// A sleep longer than 10 ms would let a vhost-user ring (256 descriptors) overflow at a mere
// 25,000 packets/s before the worker wakes; Open vSwitch caps pmd-maxsleep the same way.
constexpr uint64_t kMaxIdleSleepUs = 10'000;  // RTE_MAX_LCORE of the Debian DPDK build
// The connection table is preallocated: below 1024 entries it is useless, above 2^27 its
// memory (about 128 bytes a connection) is more than a host should give it by accident.
constexpr uint64_t kMinConntrackCapacity = 1024;
constexpr uint64_t kMaxConntrackCapacity = uint64_t{1} << 27;

// The EAL's PCI allow-list options, spelled alone ("-a", "--allow") or joined to their value
// ("-a0000:01:00.0", "--allow=0000:01:00.0").
bool is_pci_allow_arg(std::string_view arg) {
    if (arg.starts_with("--"))
        return arg == "--allow" || arg.starts_with("--allow=") || arg == "--pci-whitelist" ||
               arg.starts_with("--pci-whitelist=");
    return arg.starts_with("-a") || arg.starts_with("-w");
}

void conntrack(Parser& parser, const Field& field) {
    const auto m = parser.mapping(field, "'conntrack'", "in conntrack", kConntrackKeys);
    if (!m) return;
    parser.report_duplicates(*m, "in conntrack");
    ConntrackConfig& ct = parser.config().dataplane.conntrack;
    if (const Field* f = m->get("capacity"))
        if (const auto v =
                parser.integer(*f, "'capacity'", kMinConntrackCapacity, kMaxConntrackCapacity))
            ct.capacity = static_cast<uint32_t>(*v);
    for (const ConntrackTimeout& timeout : kConntrackTimeouts) {
        const Field* f = m->get(timeout.key);
        if (!f) continue;
        if (const auto v = parser.integer(*f, fmt::format("'{}'", timeout.key), 1, kMaxU32))
            ct.*timeout.field = static_cast<uint32_t>(*v);
    }
}

}  // namespace

void read_dataplane(Parser& parser, const Field& field) {
    const auto m = parser.mapping(field, "'dataplane'", "in dataplane", kDataplaneKeys);
    if (!m) return;
    parser.report_duplicates(*m, "in dataplane");
    DataplaneConfig& dp = parser.config().dataplane;

    if (const Field* f = m->get("workers")) {
        if (const auto items = parser.list(*f, "'workers'")) {
            dp.workers.clear();
            if (items->empty()) parser.error(*f, "'workers' must list at least one lcore");
            for (const Field& item : *items) {
                const auto lcore = parser.integer(item, "entry of 'workers'", 0, kMaxU32);
                if (!lcore) continue;
                if (*lcore == 0) {
                    parser.error(item,
                                 "lcore 0 is the main lcore, which does control only; workers "
                                 "must be other lcores");
                } else if (*lcore >= kMaxLcore) {
                    parser.error(item, "lcore {} is out of range: lcore ids are below {}", *lcore,
                                 kMaxLcore);
                } else if (std::ranges::find(dp.workers, *lcore) != dp.workers.end()) {
                    parser.error(item, "lcore {} is listed twice in 'workers'", *lcore);
                } else {
                    dp.workers.push_back(static_cast<unsigned>(*lcore));
                }
            }
        }
    }
    if (const Field* f = m->get("eal_args")) {
        if (const auto items = parser.list(*f, "'eal_args'")) {
            for (const Field& item : *items) {
                const auto arg = parser.scalar(item, "entry of 'eal_args'", "a string");
                if (!arg) continue;
                if (is_pci_allow_arg(*arg)) {
                    parser.error(item,
                                 "eal_args must not contain '{}': PCI devices are given to calyx "
                                 "as the uplink port, never via eal_args (calyx passes -a with the "
                                 "address of a pci uplink, and --no-pci otherwise)",
                                 *arg);
                    continue;
                }
                dp.eal_args.push_back(*arg);
            }
        }
    }
    if (const Field* f = m->get("gateway_mac")) {
        parser.known().gateway_mac = parser.unicast_mac(*f, "'gateway_mac'");
        if (parser.known().gateway_mac) dp.gateway_mac = *parser.known().gateway_mac;
    }
    if (const Field* f = m->get("icmp_errors_per_second"))
        if (const auto v = parser.integer(*f, "'icmp_errors_per_second'", 0, kMaxU32))
            dp.icmp_errors_per_second = static_cast<uint32_t>(*v);
    if (const Field* f = m->get("icmp_errors_burst"))
        if (const auto v = parser.integer(*f, "'icmp_errors_burst'", 1, kMaxU32))
            dp.icmp_errors_burst = static_cast<uint32_t>(*v);
    // DPDK sizes each port's queues from the pool; fewer than 1023 buffers cannot fill even one
    // default-sized ring pair.
    if (const Field* f = m->get("mbufs"))
        if (const auto v = parser.integer(*f, "'mbufs'", 1023, kMaxU32))
            dp.mbufs = static_cast<uint32_t>(*v);
    if (const Field* f = m->get("conntrack")) conntrack(parser, *f);
    if (const Field* f = m->get("state_file")) {
        if (const auto path = parser.scalar(*f, "'state_file'", "an absolute path")) {
            if (path->empty() || path->front() != '/' || path->back() == '/')
                parser.error(*f, "'state_file' must be an absolute path of a file, e.g. /dev/hugepages/calyx.state");
            else
                dp.state_file = *path;
        }
    }
    if (const Field* f = m->get("idle_sleep_us"))
        if (const auto v = parser.integer(*f, "'idle_sleep_us'", 0, kMaxIdleSleepUs))
            dp.idle_sleep_us = static_cast<uint32_t>(*v);
}

}  // namespace calyx::config
