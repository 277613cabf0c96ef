// The masquerade fast path in the whole pipeline (no ports, no vhost), against routing the
// same traffic to the uplink untranslated, in the same run. Run: build/perf/uplink_bench
//
//   BM_PublicOut/N        established UDP connections of a public instance to the Internet:
//                         classify, route (LPM), conntrack lookup, forward with ARP-cache
//                         lookup; the baseline
//   BM_MasqueradedOut/N   the same from a nat instance: plus the source rewrite (nat_out)
//   BM_MasqueradedIn/N    the replies: plus the NAT connection map's lookup and rewrite before routing
//                         (nat_in), then the connection lookup
//   BM_NewMasqueraded     first packets: rule evaluation, port allocation, two conntrack
//                         inserts, rewrite
// Every run restores the frames the pipeline rewrote (a 60-byte copy per packet, included in
// every figure alike), so the difference between two figures is the work that differs.
// Every benchmark checks what it measures and fails the run otherwise (perf/bench_main.hpp):
// the verdict and egress port of every packet of every batch, and on the first batch and
// every 256th one every frame byte for byte against what it should have become (MACs, TTL,
// the translated address and port, reference checksums: support/frame_check.hpp).
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <cstring>
#include <functional>
#include <memory>

#include "bench_main.hpp"
#include "calyx/config.hpp"
#include "cp/snapshot_builder.hpp"
#include "dp/conntrack.hpp"
#include "dp/nat.hpp"
#include "dp/neighbor.hpp"
#include "dp/pipeline.hpp"
#include "support/frame_builder.hpp"
#include "support/frame_check.hpp"

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
# limits that never refuse here (up to 1M connections of one instance, 60000 first packets to
# one server, the clock stopped): the benchmarks pay for checking them, not for refusals
limits: {{connections: 2000000, new_connections_per_second: 1000000000, nat_ports: 65535}}
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

// What a frame (given as it was sent) should be after the pipeline forwarded it.
using Expect = std::function<std::vector<uint8_t>(size_t frame, const std::vector<uint8_t>& sent)>;

// Runs batches of 32 packets from a set of frames, checks them (every packet forwarded out of
// `out_port`; on sampled batches every frame equal to `expect`'s), and restores each frame.
struct BatchRunner {
    static constexpr uint64_t kSampleEvery = 256;
    std::vector<std::vector<uint8_t>> pristine;
    std::vector<std::unique_ptr<test::TestFrame>> frames;
    dp::Batch batch;
    uint16_t port = 0, out_port = 0;
    Expect expect;
    uint64_t batches = 0;
    perf::BatchChecks checks;

    void load(std::vector<std::vector<uint8_t>> bytes, uint16_t in_port, uint16_t egress, Expect e) {
        pristine = std::move(bytes);
        frames.clear();
        for (const auto& b : pristine) frames.push_back(std::make_unique<test::TestFrame>(b));
        port = in_port;
        out_port = egress;
        expect = std::move(e);
    }
    void run(Bench& b, size_t first) {
        batch.count = dp::kBurstSize;
        for (uint16_t i = 0; i < dp::kBurstSize; ++i) {
            auto& f = *frames[(first + i) % frames.size()];
            batch.frames[i] = f.frame;
            batch.admit(i, port);
        }
        dp::run_pipeline(batch, *b.snap, b.ctx);
        checks.verdicts(batch, out_port);
        if (batches++ % kSampleEvery == 0) compare(first);
        for (uint16_t i = 0; i < dp::kBurstSize; ++i) {
            const size_t k = (first + i) % frames.size();
            std::memcpy(frames[k]->frame.data(), pristine[k].data(), pristine[k].size());
        }
    }
    // Fails the benchmark if any batch was wrong.
    void check(benchmark::State& state) const { checks.report(state); }

private:
    void compare(size_t first) {
        for (uint16_t i = 0; i < dp::kBurstSize && checks.wrong_bytes.empty(); ++i) {
            const size_t k = (first + i) % frames.size();
            checks.frame(test::frame_mismatch(frames[k]->frame.data(), frames[k]->frame.len, expect(k, pristine[k])));
        }
    }
};

// Routed to the uplink's gateway: the uplink's MAC to the upstream router's, one hop.
test::FrameEdit to_upstream(const std::vector<uint8_t>& sent) {
    return std::move(test::FrameEdit{sent}.macs(kUplinkMac, kUpstreamMac).hops(1));
}

// Opens `n` UDP connections from `mac`/`from` (source ports 1024 + i) to the server, each
// checked to leave; returns the external source port each one got (its own when not
// masqueraded). `out` receives the outbound frames.
std::vector<uint16_t> open_connections(benchmark::State& state, Bench& b, MacAddr mac, Ipv4Addr from, uint16_t port,
                                       uint32_t n, std::vector<std::vector<uint8_t>>& out) {
    std::vector<uint16_t> external;
    for (uint32_t c = 0; c < n; ++c) out.push_back(outbound(mac, from, static_cast<uint16_t>(1024 + c)));
    for (uint32_t c = 0; c < n; ++c) {
        test::TestFrame f(out[c]);
        dp::Batch batch;
        batch.count = 1;
        batch.frames[0] = f.frame;
        batch.meta[0].in_port = port;
        dp::run_pipeline(batch, *b.snap, b.ctx);
        if (batch.meta[0].verdict != dp::Verdict::forward || batch.meta[0].out_port != kUplinkPort) {
            fail(state, "a first packet did not leave through the uplink");
            return {};
        }
        external.push_back(f.at<UdpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr))->src_port.host());
    }
    return external;
}

void run_established(benchmark::State& state, bool masqueraded, bool replies) {
    const auto connections = static_cast<uint32_t>(state.range(0));
    Bench b(std::max<uint32_t>(connections * 4, 4096));
    std::vector<std::vector<uint8_t>> out;
    const auto external = masqueraded ? open_connections(state, b, kAppMac, kAppIp, kAppPort, connections, out)
                                      : open_connections(state, b, kWebMac, kWebIp, kWebPort, connections, out);
    if (external.size() != connections) return;
    std::vector<std::vector<uint8_t>> back;
    for (uint16_t p : external) back.push_back(inbound(masqueraded ? kHostAddr : kWebIp, p));
    auto& frames = replies ? back : out;
    if (frames.size() > 4096) frames.resize(4096);
    BatchRunner runner;
    if (replies)  // translated back to the instance, routed to it
        runner.load(std::move(frames), kUplinkPort, kAppPort, [](size_t c, const std::vector<uint8_t>& sent) {
            return test::FrameEdit{sent}.macs(kGw, kAppMac).hops(1).destination(kAppIp).destination_port(
                static_cast<uint16_t>(1024 + c)).bytes;
        });
    else if (masqueraded)  // the uplink address and the connection's external port
        runner.load(std::move(frames), kAppPort, kUplinkPort, [&](size_t c, const std::vector<uint8_t>& sent) {
            return to_upstream(sent).source(kHostAddr).source_port(external[c]).bytes;
        });
    else
        runner.load(std::move(frames), kWebPort, kUplinkPort,
                    [](size_t, const std::vector<uint8_t>& sent) { return to_upstream(sent).bytes; });
    size_t next = 0;
    for (auto _ : state) {
        runner.run(b, next);
        next += dp::kBurstSize;
    }
    runner.check(state);
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * dp::kBurstSize);
    state.counters["table_keys"] = static_cast<double>(b.table->size());
    if (b.table->size() != connections) fail(state, "connections gained or lost keys (one each)");
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
    // The instance's own port is in the range and free: it is kept (port preservation).
    runner.load(frames, kAppPort, kUplinkPort, [](size_t, const std::vector<uint8_t>& sent) {
        return to_upstream(sent).source(kHostAddr).bytes;
    });
    size_t next = 0;
    uint64_t wrong_resets = 0;
    for (auto _ : state) {
        if (next + dp::kBurstSize > frames.size()) {
            state.PauseTiming();
            // One key per connection, and every port given back with it.
            wrong_resets += b.table->remove_if([](int32_t, const dp::CtEntry&) { return true; }, nullptr) != next;
            wrong_resets += b.table->size() != 0;
            wrong_resets += b.nat->in_use(ipproto::kUdp) != 0;
            next = 0;
            state.ResumeTiming();
        }
        runner.run(b, next);
        next += dp::kBurstSize;
    }
    runner.check(state);
    if (wrong_resets != 0 || b.table->size() != next || b.nat->in_use(ipproto::kUdp) != next)
        fail(state, "not one mapping (one key, one port) per first packet");
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * dp::kBurstSize);
}
BENCHMARK(BM_NewMasqueraded);

}  // namespace
}  // namespace calyx

int main(int argc, char** argv) { return calyx::perf::run_benchmarks("uplink_bench", argc, argv); }
