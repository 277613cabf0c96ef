// What the libFuzzer targets share: EAL (rte_fib needs its memory), the seed's site with all
// three kinds of network and an uplink, built through the real parser and snapshot builder, and
// the pipeline run on frames in exactly sized heap buffers (so AddressSanitizer sees any access
// past a frame's buffer), with the invariants every verdict must keep.
#pragma once

#include <rte_eal.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "calyx/config.hpp"
#include "cp/snapshot_builder.hpp"
#include "dp/batch.hpp"
#include "dp/conntrack.hpp"
#include "dp/nat.hpp"
#include "dp/neighbor.hpp"
#include "dp/pipeline.hpp"

namespace calyx::fuzz {

// A broken invariant: print it and abort, which libFuzzer reports as a crash with the input.
#define CALYX_FUZZ_CHECK(cond, what)                                                \
    do {                                                                            \
        if (!(cond)) {                                                              \
            std::fprintf(stderr, "invariant broken: %s (%s)\n", what, #cond);       \
            std::abort();                                                           \
        }                                                                           \
    } while (0)

inline constexpr uint16_t kWebPort = 0, kAppPort = 1, kDbPort = 2, kUplinkPort = 3;
inline constexpr uint32_t kHeadroom = 128;   // RTE_PKTMBUF_HEADROOM
inline constexpr uint32_t kDataRoom = 2048;  // RTE_MBUF_DEFAULT_DATAROOM
inline const MacAddr kUplinkMac{{0x02, 0xca, 0x1e, 0x00, 0x00, 0x01}};
inline const MacAddr kUpstreamMac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}};

// The seed after frame 7 with an uplink: web-1 public, app-1 nat, db-1 private.
inline constexpr const char* kSiteYaml = R"(
dataplane:
  workers: [1]
  icmp_errors_per_second: 1000
  icmp_errors_burst: 50
  conntrack: {capacity: 4096}
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
  nat_ports: "20000-20999"
security_groups:
  - name: public-sg
    rules:
      - {direction: egress, protocol: any, remote: 0.0.0.0/0}
      - {direction: ingress, protocol: tcp, ports: 443, remote: 0.0.0.0/0}
      - {direction: ingress, protocol: icmp, remote: 0.0.0.0/0}
  - name: everywhere
    rules:
      - {direction: egress, protocol: any, remote: 0.0.0.0/0}
      - {direction: ingress, protocol: any, remote: 0.0.0.0/0}
networks:
  - {name: public, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1, dns: [203.0.113.53]}
  - {name: nat, kind: nat, cidr: 10.10.0.0/24, gateway: 10.10.0.1, mtu: 1400}
  - {name: private, kind: private, cidr: 10.20.0.0/24, gateway: 10.20.0.1, routes: [10.30.0.0/16]}
instances:
  - {name: web-1, network: public, mac: "52:54:00:00:01:01", ipv4: 203.0.113.10, security_groups: [public-sg],
     port: {type: vhost-user, socket: /tmp/calyx-fuzz/web-1.sock}}
  - {name: app-1, network: nat, mac: "52:54:00:00:02:01", ipv4: 10.10.0.5, security_groups: [everywhere],
     port: {type: vhost-user, socket: /tmp/calyx-fuzz/app-1.sock}}
  - {name: db-1, network: private, mac: "52:54:00:00:03:01", ipv4: 10.20.0.7, security_groups: [everywhere],
     port: {type: vhost-user, socket: /tmp/calyx-fuzz/db-1.sock}}
)";

inline void init_eal() {
    const char* argv[] = {"calyx_fuzz", "--no-huge", "-m", "256", "--no-pci", "--no-shconf", "--no-telemetry",
                          "-l", "0", "--log-level", "error"};
    if (rte_eal_init(static_cast<int>(std::size(argv)), const_cast<char**>(argv)) < 0) {
        std::fprintf(stderr, "calyx_fuzz: EAL initialisation failed\n");
        std::abort();
    }
}

// The running site: connection table, NAT, ARP cache and snapshot live across inputs, as in
// the router (a fuzzer's earlier frames open connections that later ones hit).
struct Site {
    config::Config config;
    std::unique_ptr<dp::NatPortAllocator> nat;
    dp::NeighborTable neighbors;
    std::unique_ptr<dp::ConnTable> conntrack;
    std::unique_ptr<dp::Snapshot> snap;
    std::unique_ptr<dp::WorkerCounters> counters = std::make_unique<dp::WorkerCounters>();
    std::unique_ptr<dp::FragmentVerdicts> fragments = std::make_unique<dp::FragmentVerdicts>(0x5eed);
    dp::WorkerContext ctx{*counters, 1'000'000'000, {}, fragments.get()};

    Site() {
        auto cfg = config::parse_config(kSiteYaml, "fuzz.yaml");
        CALYX_FUZZ_CHECK(cfg.has_value(), "the fuzz site parses");
        config = *cfg;
        auto table = dp::ConnTable::create(config.dataplane.conntrack.capacity, -1);
        CALYX_FUZZ_CHECK(table.has_value(), "connection table");
        conntrack = std::move(*table);
        auto n = dp::NatPortAllocator::create({config.uplink->nat_port_min, config.uplink->nat_port_max},
                                              dp::NatPortAllocator::kDefaultPartitions, 0x5eed);
        CALYX_FUZZ_CHECK(n.has_value(), "NAT allocator");
        nat = std::make_unique<dp::NatPortAllocator>(std::move(*n));
        conntrack->set_nat(nat.get());
        std::map<std::string, uint16_t> slots{{"web-1", kWebPort}, {"app-1", kAppPort}, {"db-1", kDbPort}};
        cp::SnapshotInputs in;
        in.port_slot = [&](const config::InstanceConfig& i) { return slots.at(i.name); };
        in.zone = [](const config::NetworkConfig& net) -> uint16_t { return net.name == "public" ? 1 : net.name == "nat" ? 2 : 3; };
        in.conntrack = conntrack.get();
        in.uplink_slot = kUplinkPort;
        in.uplink_mac = kUplinkMac;
        in.nat = nat.get();
        in.neighbors = &neighbors;
        auto s = cp::build_snapshot(config, in, 1);
        CALYX_FUZZ_CHECK(s.has_value(), "the fuzz site's snapshot");
        snap = std::move(*s);
        neighbors.learn(config.uplink->gateway, kUpstreamMac, ctx.now_ns, true);
    }

    uint64_t drops(uint16_t port) const {
        uint64_t n = 0;
        for (uint64_t d : counters->ports[port].drops) n += d;
        return n;
    }

    // Runs `frames` (each arriving on its port) through the pipeline as one batch and checks
    // what must hold whatever the bytes: every packet ends with exactly one final verdict,
    // stays inside its buffer, is counted once if dropped, and a forwarded packet has a port.
    void run(const std::vector<std::pair<uint16_t, std::vector<uint8_t>>>& frames) {
        dp::Batch batch;
        std::vector<std::unique_ptr<uint8_t[]>> buffers;
        uint64_t drops_before = 0;
        for (uint16_t p : {kWebPort, kAppPort, kDbPort, kUplinkPort}) drops_before += drops(p);
        batch.count = 0;
        for (const auto& [port, bytes] : frames) {
            if (batch.count == dp::kBurstSize) break;
            const uint32_t len = static_cast<uint32_t>(std::min<size_t>(bytes.size(), kDataRoom));
            buffers.push_back(std::make_unique<uint8_t[]>(kHeadroom + kDataRoom));
            if (len) std::memcpy(buffers.back().get() + kHeadroom, bytes.data(), len);
            const uint16_t i = batch.count++;
            batch.frames[i] = dp::Frame{buffers.back().get(), kHeadroom + kDataRoom, kHeadroom, len};
            batch.admit(i, port);
            batch.handles[i] = nullptr;
        }
        dp::run_pipeline(batch, *snap, ctx);
        uint64_t dropped = 0, errors = 0;
        for (uint16_t i = 0; i < batch.count; ++i) {
            const dp::PacketMeta& m = batch.meta[i];
            const dp::Frame& f = batch.frames[i];
            CALYX_FUZZ_CHECK(m.verdict != dp::Verdict::pending, "every packet gets a verdict");
            CALYX_FUZZ_CHECK(uint64_t{f.off} + f.len <= f.buf_len, "a frame stays inside its buffer");
            if (m.verdict == dp::Verdict::drop) ++dropped;
            if (m.verdict == dp::Verdict::forward)
                CALYX_FUZZ_CHECK(m.out_port != dp::kNoPort && m.out_port != m.in_port, "a forwarded packet has another port");
            if (m.verdict == dp::Verdict::reply) ++errors;  // an ICMP error may replace a counted drop
        }
        uint64_t drops_after = 0;
        for (uint16_t p : {kWebPort, kAppPort, kDbPort, kUplinkPort}) drops_after += drops(p);
        CALYX_FUZZ_CHECK(drops_after - drops_before >= dropped && drops_after - drops_before <= dropped + errors,
                         "every drop is counted exactly once");
        // Time moves on, so entries expire and rate limits refill as they would.
        ctx.now_ns += 10'000'000;
        if (ctx.now_ns % 1'000'000'000 == 0) conntrack->sweep(ctx.now_ns, 4096, nullptr);
    }
};

}  // namespace calyx::fuzz
