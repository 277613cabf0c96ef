// Per-stage benchmarks of the data plane on plain buffers (no ports, no vhost): what a packet
// costs in the pipeline itself. Run: build/perf/stage_bench
//
// Each figure is reported per packet; compare them within one run (this machine is noisy):
//   BM_OneHotFlow             the whole pipeline for one established flow (cache-hot entry)
//   BM_Established/N/all      the whole pipeline for packets of established connections,
//                             with N connections in the table; all=0: the packets use 4096
//                             of them (cache-warm), all=1: every one in turn. Also reports the
//                             table's bytes per connection it can hold.
//   BM_NewConnection          the whole pipeline for first packets: rule evaluation,
//                             conntrack insert
//   BM_RawHashLookup/N        rte_hash bulk lookup alone: the floor under conntrack lookups
//   BM_SharedInsertDelete/shared  a key's insert and delete in a multi-writer table (shared
//                             by workers, as calyx's) or a single-writer one
//   BM_EntryLock/locked       a connection entry's update with or without its lock
// Every benchmark checks what it measures and fails the run otherwise (perf/bench_main.hpp):
// the verdict and egress port of every packet of every batch; on the first batch and every
// 256th one every rewritten frame byte for byte (MACs, TTL, reference checksums:
// support/frame_check.hpp), which costs well under a cycle per packet; the connection table
// holding exactly the connections made; every raw lookup hitting its key's own slot.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <rte_cycles.h>
#include <rte_hash.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "bench_main.hpp"
#include "calyx/config.hpp"
#include "cp/snapshot_builder.hpp"
#include "dp/conntrack.hpp"
#include "dp/pipeline.hpp"
#include "support/frame_builder.hpp"
#include "support/frame_check.hpp"

namespace calyx {
namespace {

using perf::fail;

const MacAddr kGw{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}};
const MacAddr kWebMac{{0x52, 0x54, 0, 0, 1, 1}};
const MacAddr kAppMac{{0x52, 0x54, 0, 0, 2, 1}};
const Ipv4Addr kWebIp = Ipv4Addr::from_octets(203, 0, 113, 10);
const Ipv4Addr kAppIp = Ipv4Addr::from_octets(10, 10, 0, 5);

std::string site(uint32_t capacity) {
    return fmt::format(R"(
dataplane: {{conntrack: {{capacity: {}}}}}
# limits that never refuse here (up to 1M connections of one instance, 60000 first packets to
# one server, the clock stopped): the benchmarks pay for checking them, not for refusals
limits: {{connections: 2000000, new_connections_per_second: 1000000000, nat_ports: 65535}}
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

// A site, its connection table and a worker context, ready to run batches.
struct Bench {
    config::Config cfg;
    std::unique_ptr<dp::ConnTable> table;
    std::unique_ptr<dp::Snapshot> snap;
    std::unique_ptr<dp::WorkerCounters> counters = std::make_unique<dp::WorkerCounters>();
    dp::FragmentVerdicts fragments;
    dp::WorkerContext ctx{*counters, 1'000'000'000, {}, &fragments};

    explicit Bench(uint32_t capacity) {
        cfg = *config::parse_config(site(capacity), "bench.yaml");
        table = std::move(*dp::ConnTable::create(capacity, -1));
        cp::SnapshotInputs in;
        in.port_slot = [](const config::InstanceConfig& i) { return uint16_t(i.name == "web-1" ? 0 : 1); };
        in.zone = [](const config::NetworkConfig& n) { return uint16_t(n.name == "public" ? 1 : 2); };
        in.conntrack = table.get();
        snap = std::move(*cp::build_snapshot(cfg, in, 1));
    }
};

std::vector<uint8_t> udp_frame(uint16_t sport, bool reply, uint16_t dport = 5000) {
    test::FrameBuilder b;
    if (reply)
        b.eth(kAppMac, kGw).ipv4(kAppIp, kWebIp, ipproto::kUdp, 255).udp(dport, sport, std::vector<uint8_t>(18));
    else
        b.eth(kWebMac, kGw).ipv4(kWebIp, kAppIp, ipproto::kUdp, 255).udp(sport, dport, std::vector<uint8_t>(18));
    return b.build();
}

// Connection c of a table benchmark: 64000 source ports per destination port.
std::vector<uint8_t> connection_frame(uint32_t c, bool reply) {
    return udp_frame(static_cast<uint16_t>(1024 + c % 64000), reply, static_cast<uint16_t>(5000 + c / 64000));
}

// Runs batches of 32 packets from `frames` (cycling from `first`) through the pipeline, and
// checks each: every packet forwarded out of `out_port`; on sampled batches every frame
// routed to `out_mac` (one TTL less per time it was in the batch), byte for byte.
struct BatchRunner {
    static constexpr uint64_t kSampleEvery = 256;
    std::vector<std::unique_ptr<test::TestFrame>> frames;
    dp::Batch batch;
    uint16_t port = 0;
    uint16_t out_port = 0;
    MacAddr out_mac;
    uint64_t batches = 0;
    perf::BatchChecks checks;
    std::vector<std::pair<size_t, std::vector<uint8_t>>> before;  // sampled: frame, its bytes

    void load(const std::vector<std::vector<uint8_t>>& bytes, uint16_t in_port) {
        frames.clear();
        for (const auto& b : bytes) frames.push_back(std::make_unique<test::TestFrame>(b));
        port = in_port;
        out_port = in_port == 0 ? 1 : 0;
        out_mac = in_port == 0 ? kAppMac : kWebMac;
    }
    void run(Bench& b, size_t first) {
        const bool sample = batches++ % kSampleEvery == 0;
        if (sample) remember(first);
        batch.count = dp::kBurstSize;
        for (uint16_t i = 0; i < dp::kBurstSize; ++i) {
            auto& f = *frames[(first + i) % frames.size()];
            batch.frames[i] = f.frame;
            batch.admit(i, port);
        }
        dp::run_pipeline(batch, *b.snap, b.ctx);
        checks.verdicts(batch, out_port);
        if (sample) compare();
        // The pipeline rewrote the MACs in place: put the VM's back so the next run sees
        // the same packets (TTLs start at 255; restore_ttl() resets them now and then).
        for (uint16_t i = 0; i < dp::kBurstSize; ++i) {
            auto* eth = reinterpret_cast<EtherHdr*>(frames[(first + i) % frames.size()]->frame.data());
            eth->dst = kGw;
            eth->src = port == 0 ? kWebMac : kAppMac;
        }
    }
    void restore_ttl() {
        for (auto& f : frames) {
            auto* ip = reinterpret_cast<Ipv4Hdr*>(f->frame.data() + sizeof(EtherHdr));
            ip->ttl = 255;
            ip->checksum = 0;
            ip->checksum = internet_checksum(ip, sizeof(Ipv4Hdr));
        }
    }
    // Fails the benchmark if any batch was wrong.
    void check(benchmark::State& state) const { checks.report(state); }

private:
    void remember(size_t first) {
        before.clear();
        for (uint16_t i = 0; i < dp::kBurstSize; ++i) {
            const size_t k = (first + i) % frames.size();
            if (std::ranges::none_of(before, [&](const auto& p) { return p.first == k; }))
                before.emplace_back(k, frames[k]->bytes());
        }
    }
    void compare() {
        for (const auto& [k, bytes] : before) {
            const auto times = static_cast<unsigned>(std::ranges::count_if(
                batch.frames, batch.frames + batch.count,
                [&](const dp::Frame& f) { return f.buf == frames[k]->frame.buf; }));
            const auto expected = test::FrameEdit{bytes}.macs(kGw, out_mac).hops(times).bytes;
            const std::string wrong = test::frame_mismatch(frames[k]->frame.data(), frames[k]->frame.len, expected);
            if (!wrong.empty()) checks.frame(wrong);
        }
    }
};

// Every connection of the table is used in turn (`range(1)` = 1), or only the first 4096
// (cache-warm entries).
void BM_Established(benchmark::State& state) {
    const auto connections = static_cast<uint32_t>(state.range(0));
    const bool all = state.range(1) != 0;
    Bench b(std::max<uint32_t>(connections * 2, 4096));
    BatchRunner out;
    std::vector<std::vector<uint8_t>> first, replies;
    for (uint32_t c = 0; c < connections; ++c) first.push_back(connection_frame(c, false));
    // Establish: one request and one reply per connection.
    BatchRunner setup;
    setup.load(first, 0);
    for (size_t i = 0; i < first.size(); i += dp::kBurstSize) setup.run(b, i);
    for (uint32_t c = 0; c < connections; ++c) replies.push_back(connection_frame(c, true));
    setup.load(replies, 1);
    for (size_t i = 0; i < replies.size(); i += dp::kBurstSize) setup.run(b, i);
    setup.check(state);

    replies.clear();
    if (!all && first.size() > 4096) first.resize(4096);
    out.load(first, 0);
    first.clear();
    size_t next = 0;
    const uint64_t start = rte_rdtsc();
    for (auto _ : state) {
        out.run(b, next);
        next += dp::kBurstSize;
        if (next % (out.frames.size() * 128) == 0) {
            state.PauseTiming();
            out.restore_ttl();
            state.ResumeTiming();
        }
    }
    out.check(state);
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * dp::kBurstSize);
    state.counters["connections"] = static_cast<double>(b.table->size());
    // TSC cycles per packet of the whole loop (the pipeline plus this benchmark's resets).
    state.counters["cycles_per_packet"] =
        static_cast<double>(rte_rdtsc() - start) / (static_cast<double>(state.iterations()) * dp::kBurstSize);
    if (b.table->size() != connections) fail(state, "not every connection was established");
    // The table's memory (index, keys, entries) per connection it can hold.
    state.counters["table_bytes_per_connection"] =
        static_cast<double>(b.table->memory_bytes()) / b.table->capacity();
}
BENCHMARK(BM_Established)->Args({1000, 0})->Args({10000, 0})->Args({10000, 1})->Args({1000000, 1});

void BM_NewConnection(benchmark::State& state) {
    Bench b(1 << 20);
    BatchRunner runner;
    std::vector<std::vector<uint8_t>> frames;
    for (uint32_t c = 0; c < 60000; ++c) frames.push_back(udp_frame(static_cast<uint16_t>(1024 + c), false));
    runner.load(frames, 0);
    size_t next = 0;
    uint64_t wrong_resets = 0;
    for (auto _ : state) {
        if (next + dp::kBurstSize > frames.size()) {
            state.PauseTiming();
            // Every first packet made its connection, and only one.
            wrong_resets += b.table->remove_if([](int32_t, const dp::CtEntry&) { return true; }, nullptr) != next;
            runner.restore_ttl();
            next = 0;
            state.ResumeTiming();
        }
        runner.run(b, next);
        next += dp::kBurstSize;
    }
    runner.check(state);
    if (wrong_resets != 0 || b.table->size() != next) fail(state, "not one connection per first packet");
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * dp::kBurstSize);
}
BENCHMARK(BM_NewConnection);

void BM_OneHotFlow(benchmark::State& state) {
    // One established flow: every conntrack lookup hits the same cache-hot entry. The floor
    // the table-size benchmarks are compared against.
    Bench b(4096);
    BatchRunner runner;
    runner.load({udp_frame(1024, false)}, 0);
    uint64_t runs = 0;
    for (auto _ : state) {
        runner.run(b, 0);
        if (++runs % 4 == 0) {  // 32 packets of one frame: its TTL drops by 32 a run
            state.PauseTiming();
            runner.restore_ttl();
            state.ResumeTiming();
        }
    }
    runner.check(state);
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * dp::kBurstSize);
}
BENCHMARK(BM_OneHotFlow);

void BM_RawHashLookup(benchmark::State& state) {
    const auto n = static_cast<uint32_t>(state.range(0));
    auto table = std::move(*dp::ConnTable::create(std::max<uint32_t>(n * 2, 4096), -1));
    std::vector<dp::CtKey> keys;
    std::vector<int32_t> slots;  // where each key went
    for (uint32_t i = 0; i < n; ++i) {
        keys.push_back(dp::make_ct_key(ipproto::kUdp, {1, kWebIp, static_cast<uint16_t>(i)},
                                       {2, Ipv4Addr{kAppIp.value + (i >> 16)}, 5000}).key);
        slots.push_back(table->insert(keys.back()));
        if (slots.back() < 0) return fail(state, "insert failed");
    }
    const dp::CtKey* batch[dp::kBurstSize];
    uint32_t index[dp::kBurstSize];
    int32_t pos[dp::kBurstSize];
    size_t next = 0;
    uint64_t misses = 0;
    for (auto _ : state) {
        for (uint32_t i = 0; i < dp::kBurstSize; ++i) {
            index[i] = static_cast<uint32_t>((next + i * 7919) % n);
            batch[i] = &keys[index[i]];
        }
        table->lookup_bulk(batch, dp::kBurstSize, pos);
        // Each lookup must find its own key's slot.
        for (uint32_t i = 0; i < dp::kBurstSize; ++i) misses += pos[i] != slots[index[i]];
        next += dp::kBurstSize;
    }
    if (misses != 0) fail(state, fmt::format("{} lookups missed their key", misses).c_str());
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * dp::kBurstSize);
}
BENCHMARK(BM_RawHashLookup)->Arg(10000)->Arg(1000000);

// What sharing the table between workers costs one worker, on one core (doc/performance.md,
// "Scaling with workers"): rte_hash insert and delete of a new connection's key with the
// flags calyx uses (lock-free readers, several writers: rte_hash then takes its writer lock
// and keeps per-lcore free-slot caches) against a single-writer table, the same keys and
// hashes; and the entry lock a worker takes for every packet (two locked instructions)
// against none. No other core is touching either, so
// this is the floor of sharing's cost: contention and cache-line transfers come on top.
void BM_SharedInsertDelete(benchmark::State& state) {
    const bool shared = state.range(0) != 0;
    constexpr uint32_t kKeys = 1u << 16;
    rte_hash_parameters params{};
    const std::string name = fmt::format("calyx_bench_share{}", shared);
    params.name = name.c_str();
    params.entries = kKeys * 2;
    params.key_len = sizeof(dp::CtKey);
    params.socket_id = SOCKET_ID_ANY;
    params.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF |
                        (shared ? RTE_HASH_EXTRA_FLAGS_MULTI_WRITER_ADD : uint8_t{0});
    rte_hash* h = rte_hash_create(&params);
    if (!h) return fail(state, "rte_hash_create failed");
    std::vector<dp::CtKey> keys;
    std::vector<hash_sig_t> sigs;
    for (uint32_t i = 0; i < kKeys; ++i) {
        keys.push_back(dp::make_ct_key(ipproto::kUdp, {1, kWebIp, static_cast<uint16_t>(i)},
                                       {2, Ipv4Addr{kAppIp.value + (i >> 16)}, 5000}).key);
        sigs.push_back(rte_hash_hash(h, &keys.back()));
    }
    uint64_t wrong = 0;
    size_t next = 0;
    for (auto _ : state) {
        const size_t k = next++ % kKeys;
        const int32_t pos = rte_hash_add_key_with_hash(h, &keys[k], sigs[k]);
        wrong += rte_hash_del_key_with_hash(h, &keys[k], sigs[k]) != pos;
        rte_hash_free_key_with_position(h, pos);  // lock-free readers: the slot goes back by hand
    }
    wrong += rte_hash_count(h) != 0;
    rte_hash_free(h);
    if (wrong != 0) fail(state, fmt::format("{} inserts or deletes went wrong", wrong).c_str());
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_SharedInsertDelete)->ArgName("shared")->Arg(0)->Arg(1);

void BM_EntryLock(benchmark::State& state) {
    const bool lock = state.range(0) != 0;
    std::vector<dp::CtEntry> entries(4096);
    size_t next = 0;
    for (auto _ : state) {
        dp::CtEntry& e = entries[next++ % entries.size()];
        if (lock) e.lock_entry();
        benchmark::DoNotOptimize(e.state.expires_s += 1);
        if (lock) e.unlock_entry();
    }
    for (const dp::CtEntry& e : entries)
        if (e.locked()) return fail(state, "an entry stayed locked");
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}
BENCHMARK(BM_EntryLock)->ArgName("locked")->Arg(0)->Arg(1);

}  // namespace
}  // namespace calyx

int main(int argc, char** argv) { return calyx::perf::run_benchmarks("stage_bench", argc, argv); }
