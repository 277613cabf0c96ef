// The masquerade fast path in the whole pipeline (no ports, no vhost), against routing the
// same traffic to the uplink untranslated, in the same run. Run: build/perf/uplink_bench
//
//   BM_PublicOut/N        established UDP connections of a public instance to the Internet:
//                         classify, route (LPM), conntrack lookup, forward with ARP-cache
//                         lookup; the baseline
//   BM_MasqueradedOut/N   the same from a nat instance: plus the source rewrite (nat_out)
//   BM_MasqueradedIn/N    the replies: plus the alias-key lookup and rewrite before routing
//                         (nat_in), then the connection lookup
//   BM_NewMasqueraded     first packets: rule evaluation, port allocation, two conntrack
//                         inserts, rewrite
// Every run restores the frames the pipeline rewrote (a 60-byte copy per packet, included in
// every figure alike), so the difference between two figures is the work that differs.
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <cstring>
#include <memory>

#include "bench_main.hpp"
#include "calyx/config.hpp"
#include "cp/snapshot_builder.hpp"
#include "dp/conntrack.hpp"
#include "dp/nat.hpp"
#include "dp/neighbor.hpp"
#include "dp/pipeline.hpp"
#include "support/frame_builder.hpp"

namespace calyx {
namespace {

using perf::fail;

const MacAddr kGw{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}};
const MacAddr kUplinkMac{{0x02, 0xca, 0x1e, 0, 0, 1}};
const MacAddr kUpstreamMac{{0x02, 0, 0, 0, 0, 1}};
const MacAddr kWebMac{{0x52, 0x54, 0, 0, 1, 1}};
const MacAddr kAppMac{{0x52, 0x54, 0, 0, 2, 1}};
const Ipv4Addr kWebIp = Ipv4Addr::from_octets(203, 0, 113, 10);
const Ipv4Addr kAppIp = Ipv4Addr::from_octets(10, 10, 0, 5);
const Ipv4Addr kHostAddr = Ipv4Addr::from_octets(198, 51, 100, 10);
const Ipv4Addr kUpstream = Ipv4Addr::from_octets(198, 51, 100, 1);
const Ipv4Addr kServer = Ipv4Addr::from_octets(192, 0, 2, 80);
constexpr uint16_t kWebPort = 0, kAppPort = 1, kUplinkPort = 2;

std::string site(uint32_t capacity) {
    return fmt::format(R"(
dataplane: {{conntrack: {{capacity: {}}}}}
uplink: {{port: {{type: tap, name: bench-up}}, address: 198.51.100.10/24, gateway: 198.51.100.1, nat_ports: "1024-65535"}}
security_groups:
  - name: open
    rules: [{{direction: ingress, protocol: any}}, {{direction: egress, protocol: any}}]
networks:
  - {{name: public, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}}
  - {{name: nat, kind: nat, cidr: 10.10.0.0/24, gateway: 10.10.0.1}}
instances:
  - {{name: web-1, network: public, mac: "52:54:00:00:01:01", ipv4: 203.0.113.10, security_groups: [open],
     port: {{type: vhost-user, socket: /tmp/b/web.sock}}}}
  - {{name: app-1, network: nat, mac: "52:54:00:00:02:01", ipv4: 10.10.0.5, security_groups: [open],
     port: {{type: vhost-user, socket: /tmp/b/app.sock}}}}
)",
                       capacity);
}

// A site with an uplink whose gateway is resolved, ready to run batches.
struct Bench {
    config::Config cfg;
    std::unique_ptr<dp::NatPortAllocator> nat;
    dp::NeighborTable neighbors;
    std::unique_ptr<dp::ConnTable> table;
    std::unique_ptr<dp::Snapshot> snap;
    std::unique_ptr<dp::WorkerCounters> counters = std::make_unique<dp::WorkerCounters>();
    dp::FragmentVerdicts fragments;
    dp::WorkerContext ctx{*counters, 1'000'000'000, {}, &fragments};

    explicit Bench(uint32_t capacity) {
        cfg = *config::parse_config(site(capacity), "bench.yaml");
        nat = std::make_unique<dp::NatPortAllocator>(*dp::NatPortAllocator::create(
            {cfg.uplink->nat_port_min, cfg.uplink->nat_port_max}, dp::NatPortAllocator::kDefaultPartitions, 42));
        table = std::move(*dp::ConnTable::create(capacity, -1));
        table->set_nat(nat.get());
        neighbors.learn(kUpstream, kUpstreamMac, ctx.now_ns, true);
        cp::SnapshotInputs in;
        in.port_slot = [](const config::InstanceConfig& i) { return i.name == "web-1" ? kWebPort : kAppPort; };
        in.zone = [](const config::NetworkConfig& n) { return uint16_t(n.name == "public" ? 1 : 2); };
        in.conntrack = table.get();
        in.uplink_slot = kUplinkPort;
        in.uplink_mac = kUplinkMac;
        in.nat = nat.get();
        in.neighbors = &neighbors;
        snap = std::move(*cp::build_snapshot(cfg, in, 1));
    }
};

std::vector<uint8_t> outbound(MacAddr mac, Ipv4Addr from, uint16_t sport) {
    return test::FrameBuilder().eth(mac, kGw).ipv4(from, kServer, ipproto::kUdp, 64).udp(sport, 53, std::vector<uint8_t>(18)).build();
}
std::vector<uint8_t> inbound(Ipv4Addr to, uint16_t dport) {
    return test::FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, to, ipproto::kUdp, 64).udp(53, dport, std::vector<uint8_t>(18)).build();
}

// Runs batches of 32 packets from a set of frames, restoring each frame after the run.
struct BatchRunner {
    std::vector<std::vector<uint8_t>> pristine;
    std::vector<std::unique_ptr<test::TestFrame>> frames;
    dp::Batch batch;
    uint16_t port = 0;

    void load(std::vector<std::vector<uint8_t>> bytes, uint16_t in_port) {
        pristine = std::move(bytes);
        frames.clear();
        for (const auto& b : pristine) frames.push_back(std::make_unique<test::TestFrame>(b));
        port = in_port;
    }
    void run(Bench& b, size_t first) {
        batch.count = dp::kBurstSize;
        for (uint16_t i = 0; i < dp::kBurstSize; ++i) {
            auto& f = *frames[(first + i) % frames.size()];
            batch.frames[i] = f.frame;
            batch.meta[i] = dp::PacketMeta{};
            batch.meta[i].in_port = port;
        }
        dp::run_pipeline(batch, *b.snap, b.ctx);
        for (uint16_t i = 0; i < dp::kBurstSize; ++i) {
            const size_t k = (first + i) % frames.size();
            std::memcpy(frames[k]->frame.data(), pristine[k].data(), pristine[k].size());
        }
    }
    bool all(dp::Verdict v) const {
        for (uint16_t i = 0; i < batch.count; ++i)
            if (batch.meta[i].verdict != v) return false;
        return true;
    }
};

// Opens `n` UDP connections from `mac`/`from` (source ports 1024 + i) to the server; returns
// the inbound replies' frames (to the external ports the connections got).
std::vector<std::vector<uint8_t>> open_connections(Bench& b, MacAddr mac, Ipv4Addr from, uint16_t port,
                                                   uint32_t n, std::vector<std::vector<uint8_t>>& out) {
    std::vector<std::vector<uint8_t>> replies;
    for (uint32_t c = 0; c < n; ++c) out.push_back(outbound(mac, from, static_cast<uint16_t>(1024 + c)));
    for (uint32_t c = 0; c < n; ++c) {
        test::TestFrame f(out[c]);
        dp::Batch batch;
        batch.count = 1;
        batch.frames[0] = f.frame;
        batch.meta[0].in_port = port;
        dp::run_pipeline(batch, *b.snap, b.ctx);
        const auto* ip = f.at<Ipv4Hdr>(sizeof(EtherHdr));
        const auto* udp = f.at<UdpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr));
        replies.push_back(inbound(Ipv4Addr::from_be(ip->src), udp->src_port.host()));
    }
    return replies;
}

void run_established(benchmark::State& state, bool masqueraded, bool replies) {
    const auto connections = static_cast<uint32_t>(state.range(0));
    Bench b(std::max<uint32_t>(connections * 4, 4096));
    std::vector<std::vector<uint8_t>> out;
    auto back = masqueraded ? open_connections(b, kAppMac, kAppIp, kAppPort, connections, out)
                            : open_connections(b, kWebMac, kWebIp, kWebPort, connections, out);
    BatchRunner runner;
    auto& frames = replies ? back : out;
    if (frames.size() > 4096) frames.resize(4096);
    runner.load(frames, replies ? kUplinkPort : (masqueraded ? kAppPort : kWebPort));
    size_t next = 0;
    for (auto _ : state) {
        runner.run(b, next);
        next += dp::kBurstSize;
    }
    if (!runner.all(dp::Verdict::forward)) fail(state, "packets were not forwarded");
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * dp::kBurstSize);
    state.counters["table_keys"] = static_cast<double>(b.table->size());
}

void BM_PublicOut(benchmark::State& state) { run_established(state, false, false); }
void BM_MasqueradedOut(benchmark::State& state) { run_established(state, true, false); }
void BM_MasqueradedIn(benchmark::State& state) { run_established(state, true, true); }
BENCHMARK(BM_PublicOut)->Arg(1000)->Arg(10000);
BENCHMARK(BM_MasqueradedOut)->Arg(1000)->Arg(10000);
BENCHMARK(BM_MasqueradedIn)->Arg(1000)->Arg(10000);

void BM_NewMasqueraded(benchmark::State& state) {
    Bench b(1 << 20);
    BatchRunner runner;
    std::vector<std::vector<uint8_t>> frames;
    for (uint32_t c = 0; c < 60000; ++c) frames.push_back(outbound(kAppMac, kAppIp, static_cast<uint16_t>(1024 + c)));
    runner.load(frames, kAppPort);
    size_t next = 0;
    for (auto _ : state) {
        if (next + dp::kBurstSize > frames.size()) {
            state.PauseTiming();
            b.table->remove_if([](int32_t, const dp::CtEntry&) { return true; }, nullptr);
            next = 0;
            state.ResumeTiming();
        }
        runner.run(b, next);
        next += dp::kBurstSize;
    }
    if (!runner.all(dp::Verdict::forward)) fail(state, "first packets were not forwarded");
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * dp::kBurstSize);
}
BENCHMARK(BM_NewMasqueraded);

}  // namespace
}  // namespace calyx

int main(int argc, char** argv) { return calyx::perf::run_benchmarks("uplink_bench", argc, argv); }
