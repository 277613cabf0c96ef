// Masquerade fast path on plain buffers: what translating a packet costs, next to the cost
// of merely copying its headers. Run: build/perf/nat_bench
//
// Every packet benchmark works on a burst of 32 frames in separate buffers and reports
// per_pkt (CPU seconds per packet, "9.5n" = 9.5 ns); compare figures within one run (this machine is noisy):
//   BM_CopyHeaders            baseline: memcpy of the 54 bytes of Ethernet+IPv4+TCP headers
//   BM_SnatOutbound/<proto>   snat_outbound: address, port or echo id, incremental checksums
//   BM_DnatInbound/<proto>    dnat_inbound, the reply direction
//   BM_IcmpErrorInbound       translate_icmp_error_inbound on a port unreachable quoting UDP
//   BM_AllocateRelease/<pct>  NatPortAllocator allocate + release with the remote endpoint's
//                             pool <pct>% full (probing cost); preserved: the preferred port is
//                             free; threads:2: two workers on the same pool
// Every benchmark checks what it measured: each translation's result, and after the timed
// loop every frame of the burst byte for byte against the frame it should have become
// (support/frame_check.hpp, reference checksums); the allocators' ports are in range, unique
// and given back. A wrong result fails the run (perf/bench_main.hpp), so the smoke test too.
#include <benchmark/benchmark.h>

#include <cstring>
#include <random>
#include <vector>

#include "bench_main.hpp"
#include "dp/nat.hpp"
#include "support/frame_builder.hpp"
#include "support/frame_check.hpp"

namespace calyx {
namespace {

using perf::fail;

constexpr int kBurst = 32;
constexpr size_t kL3 = sizeof(EtherHdr);
const MacAddr kGw{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}};
const MacAddr kAppMac{{0x52, 0x54, 0, 0, 2, 1}};
const Ipv4Addr kApp = Ipv4Addr::from_octets(10, 10, 0, 5);
const Ipv4Addr kUplink = Ipv4Addr::from_octets(198, 51, 100, 10);
const Ipv4Addr kServer = Ipv4Addr::from_octets(192, 0, 2, 80);

enum Proto : int64_t { kTcp, kUdp, kIcmp };

std::vector<uint8_t> frame(int64_t proto, Ipv4Addr src, Ipv4Addr dst, uint16_t sport, uint16_t dport) {
    test::FrameBuilder b;
    b.eth(kAppMac, kGw);
    if (proto == kTcp) return b.ipv4(src, dst, ipproto::kTcp).tcp(sport, dport, TcpHdr::kAck, 1, 1, std::vector<uint8_t>(64)).build();
    if (proto == kUdp) return b.ipv4(src, dst, ipproto::kUdp).udp(sport, dport, std::vector<uint8_t>(64)).build();
    return b.ipv4(src, dst, ipproto::kIcmp).icmp_echo(sport, 1, 56).build();
}

// 32 frames in their own mbuf-sized buffers, like a burst.
struct Burst {
    std::vector<std::vector<uint8_t>> bufs;
    explicit Burst(const std::vector<uint8_t>& f) : bufs(kBurst, f) {
        for (auto& b : bufs) b.resize(2048);
    }
    uint8_t* l3(int i) { return bufs[static_cast<size_t>(i)].data() + kL3; }

    // Fails the benchmark unless every frame now holds `expected`.
    void verify(benchmark::State& state, const std::vector<uint8_t>& expected) {
        for (int i = 0; i < kBurst; ++i) {
            const std::string wrong = test::frame_mismatch(bufs[static_cast<size_t>(i)].data(), expected.size(), expected);
            if (!wrong.empty()) return fail(state, ("translated frame: " + wrong).c_str());
        }
    }
};

void per_packet(benchmark::State& state) {
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kBurst);
    // Seconds per packet with an SI prefix: "9.5n" is 9.5 ns (CPU time).
    state.counters["per_pkt"] = benchmark::Counter(static_cast<double>(state.iterations()) * kBurst,
                                                   benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_CopyHeaders(benchmark::State& state) {
    const auto tmpl = frame(kTcp, kUplink, kServer, 20001, 443);
    Burst burst(frame(kTcp, kApp, kServer, 40000, 443));
    for (auto _ : state) {
        for (int i = 0; i < kBurst; ++i) {
            std::memcpy(burst.bufs[static_cast<size_t>(i)].data(), tmpl.data(), 54);
            benchmark::DoNotOptimize(burst.bufs[static_cast<size_t>(i)].data());
        }
        benchmark::ClobberMemory();
    }
    burst.verify(state, tmpl);  // same payload: the copied headers make the whole frame
    per_packet(state);
}
BENCHMARK(BM_CopyHeaders);

// The frame a translation to `to` makes of the benchmark's frame (for ICMP echo the
// identifier plays the port, as frame() builds it).
std::vector<uint8_t> translated(bool outbound, int64_t proto, dp::NatEndpoint to) {
    const uint16_t server_port = proto == kIcmp ? to.port : 443;
    return outbound ? frame(proto, to.addr, kServer, to.port, 443) : frame(proto, kServer, to.addr, server_port, to.port);
}

// Alternates between two targets so every iteration really rewrites the packets.
template <bool kOutbound>
void translate(benchmark::State& state) {
    const int64_t proto = state.range(0);
    Burst burst(kOutbound ? frame(proto, kApp, kServer, 40000, 443) : frame(proto, kServer, kUplink, 443, 20001));
    const dp::NatEndpoint to[2] = {
        kOutbound ? dp::NatEndpoint{kUplink, 20001} : dp::NatEndpoint{kApp, 40000},
        kOutbound ? dp::NatEndpoint{kUplink, 31337} : dp::NatEndpoint{kApp, 40001}};
    unsigned k = 0;
    unsigned not_ok = 0;
    for (auto _ : state) {
        const dp::NatEndpoint target = to[k++ & 1];
        for (int i = 0; i < kBurst; ++i) {
            const auto r = kOutbound ? dp::snat_outbound(burst.l3(i), 2048 - kL3, target)
                                     : dp::dnat_inbound(burst.l3(i), 2048 - kL3, target);
            not_ok += r != dp::NatResult::ok;
        }
        benchmark::ClobberMemory();
    }
    if (not_ok != 0) return fail(state, "a translation did not return ok");
    burst.verify(state, translated(kOutbound, proto, to[(k - 1) & 1]));
    per_packet(state);
}
void BM_SnatOutbound(benchmark::State& state) { translate<true>(state); }
void BM_DnatInbound(benchmark::State& state) { translate<false>(state); }
BENCHMARK(BM_SnatOutbound)->ArgName("tcp0_udp1_icmp2")->DenseRange(kTcp, kIcmp);
BENCHMARK(BM_DnatInbound)->ArgName("tcp0_udp1_icmp2")->DenseRange(kTcp, kIcmp);

// Port unreachable from the server to `to` quoting a UDP datagram from `quoted` to the
// server (28 bytes quoted), checksums from the reference implementation.
std::vector<uint8_t> port_unreachable(Ipv4Addr to, dp::NatEndpoint quoted) {
    const auto datagram = frame(kUdp, quoted.addr, kServer, quoted.port, 53);
    std::vector<uint8_t> icmp{icmp::kDestUnreachable, icmp::kPortUnreachable, 0, 0, 0, 0, 0, 0};
    icmp.insert(icmp.end(), datagram.begin() + kL3, datagram.begin() + kL3 + 28);
    test::ref::store_be16(icmp.data() + 2, test::ref::checksum(icmp.data(), icmp.size()));
    return test::FrameBuilder().eth(kAppMac, kGw).ipv4(kServer, to, ipproto::kIcmp).raw(icmp).build();
}

void BM_IcmpErrorInbound(benchmark::State& state) {
    // Port unreachable from the server quoting a masqueraded UDP datagram.
    Burst burst(port_unreachable(kUplink, {kUplink, 30000}));
    const dp::NatEndpoint to[2] = {{kApp, 5353}, {kUplink, 30000}};
    unsigned k = 0;
    unsigned not_ok = 0;
    for (auto _ : state) {
        const dp::NatEndpoint target = to[k++ & 1];
        for (int i = 0; i < kBurst; ++i)
            not_ok += dp::translate_icmp_error_inbound(burst.l3(i), 2048 - kL3, target) != dp::NatResult::ok;
        benchmark::ClobberMemory();
    }
    if (not_ok != 0) return fail(state, "a translation did not return ok");
    const dp::NatEndpoint last = to[(k - 1) & 1];
    burst.verify(state, port_unreachable(last.addr, last));
    per_packet(state);
}
BENCHMARK(BM_IcmpErrorInbound);

// One allocator for all runs of a benchmark (threads share it).
dp::NatPortAllocator& shared_allocator(int64_t occupancy_pct, bool reset) {
    static auto a = std::move(*dp::NatPortAllocator::create({}, 64, 0x5eed));
    static int64_t filled_to = -1;
    if (reset && filled_to != occupancy_pct) {
        a = std::move(*dp::NatPortAllocator::create({}, 64, 0x5eed));
        const auto target = static_cast<uint32_t>(a.range().size() * occupancy_pct / 100);
        std::mt19937_64 rng(1);
        for (uint32_t i = 0; i < target; ++i) (void)a.allocate(ipproto::kTcp, kServer, 443, 0, rng());
        filled_to = occupancy_pct;
    }
    return a;
}

void BM_AllocateRelease(benchmark::State& state) {
    const int64_t occupancy = state.range(0);
    if (state.thread_index() == 0) shared_allocator(occupancy, true);
    dp::NatPortAllocator& a = shared_allocator(occupancy, false);
    uint64_t seed = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(state.thread_index() + 1);
    int64_t exhausted = 0, wrong = 0;
    for (auto _ : state) {
        seed += 0x9e3779b97f4a7c15ull;
        // Preferred port outside the range: always the probing path.
        const auto p = a.allocate(ipproto::kTcp, kServer, 443, 1024, seed);
        if (!p) {
            ++exhausted;
            continue;
        }
        // A port given out must be in the range and come back exactly once.
        wrong += !a.range().contains(*p) || !a.release(ipproto::kTcp, kServer, 443, *p);
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
    state.counters["exhausted"] = static_cast<double>(exhausted);
    // The pool is at most 99 % full: a free port always exists.
    if (exhausted != 0) fail(state, "allocation failed with free ports left");
    if (wrong != 0) fail(state, "a port out of the range, or not released");
}
BENCHMARK(BM_AllocateRelease)->ArgName("pct_full")->Arg(0)->Arg(50)->Arg(90)->Arg(99);
BENCHMARK(BM_AllocateRelease)->ArgName("pct_full")->Arg(50)->Threads(2);

// The same with the per-instance quota (limits.nat_ports, never reached here): each port is
// charged to an instance's account and given back. Compare with BM_AllocateRelease in the same
// run: the difference is what the limit costs a new masqueraded connection.
void BM_AllocateReleaseCharged(benchmark::State& state) {
    const int64_t occupancy = state.range(0);
    if (state.thread_index() == 0) shared_allocator(occupancy, true);
    dp::NatPortAllocator& a = shared_allocator(occupancy, false);
    uint64_t seed = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(state.thread_index() + 1);
    const dp::NatQuota quota{static_cast<uint16_t>(7 + state.thread_index()), 4096};
    int64_t exhausted = 0, wrong = 0;
    for (auto _ : state) {
        seed += 0x9e3779b97f4a7c15ull;
        const auto p = a.allocate(ipproto::kTcp, kServer, 443, 1024, seed, quota);
        if (!p) {
            ++exhausted;
            continue;
        }
        wrong += !a.range().contains(*p) || !a.release(ipproto::kTcp, kServer, 443, *p, quota.account);
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
    state.counters["exhausted"] = static_cast<double>(exhausted);
    // One port held at a time, far below the quota, in a pool at most half full.
    if (exhausted != 0) fail(state, "allocation refused below the quota with free ports left");
    if (wrong != 0) fail(state, "a port out of the range, or not released");
}
BENCHMARK(BM_AllocateReleaseCharged)->ArgName("pct_full")->Arg(0)->Arg(50);
BENCHMARK(BM_AllocateReleaseCharged)->ArgName("pct_full")->Arg(50)->Threads(2);

void BM_AllocateReleasePreserved(benchmark::State& state) {
    auto a = std::move(*dp::NatPortAllocator::create({}, 64, 0x5eed));
    uint16_t port = 20000;
    int64_t wrong = 0;
    for (auto _ : state) {
        port = port == 59999 ? 20000 : static_cast<uint16_t>(port + 1);
        const auto p = a.allocate(ipproto::kTcp, kServer, 443, port, port);
        // The preferred port is free: it is the one given (port preservation).
        if (!p || *p != port) {
            ++wrong;
            continue;
        }
        wrong += !a.release(ipproto::kTcp, kServer, 443, *p);
    }
    state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
    if (wrong != 0) fail(state, "the free preferred port was not given, or not released");
    if (a.in_use(ipproto::kTcp) != 0) fail(state, "ports left allocated");
}
BENCHMARK(BM_AllocateReleasePreserved);

}  // namespace
}  // namespace calyx

int main(int argc, char** argv) { return calyx::perf::run_benchmarks("nat_bench", argc, argv); }
