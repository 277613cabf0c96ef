// What a reload costs the control plane, off the data path: parsing and validating the YAML,
// then building the snapshot (security-group compilation with remote groups resolved, the
// routing table, DHCP options). Workers only ever see the pointer swap that follows.
// Run: build/perf/reload_bench
//
//   BM_ParseAndValidate/N   yaml-cpp parse and full validation of a config with N instances
//   BM_BuildSnapshot/N      the snapshot for it
// N instances in N/200 networks of /24; 100 security groups of 20 rules each (half of them
// naming a remote group), every instance in one of 100 combinations of 3 groups: 60 rules per
// instance, 600k at N = 10000 (instances with the same groups share one compiled policy, as
// a tenant's instances usually do; each remote group resolves to N/33 member addresses). One calyx attaches at most 1023 VMs (vhost-user ports); 10000
// sizes the control-plane work of a configuration far larger than one host carries.
// Both check what they built and fail the run otherwise (perf/bench_main.hpp): the parsed
// model's counts, and the snapshot's rules, shared policies and verdicts of remote-group
// rules (a member allowed, a stranger and another port refused).
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <map>
#include <memory>
#include <set>

#include "bench_main.hpp"
#include "calyx/config.hpp"
#include "cp/snapshot_builder.hpp"
#include "dp/conntrack.hpp"
#include "dp/policy.hpp"

namespace calyx {
namespace {

using perf::fail;

constexpr int kGroups = 100, kRulesPerGroup = 20, kPerNetwork = 200;

std::string big_config(int instances) {
    std::string y = "dataplane: {conntrack: {capacity: 4096}}\nsecurity_groups:\n";
    for (int g = 0; g < kGroups; ++g) {
        y += fmt::format("  - name: g{}\n    rules:\n", g);
        for (int r = 0; r < kRulesPerGroup; ++r) {
            const int port = 1000 + g * kRulesPerGroup + r;
            if (r % 2)
                y += fmt::format("      - {{direction: ingress, protocol: tcp, ports: {}, remote_group: g{}}}\n", port,
                                 (g + r) % kGroups);
            else
                y += fmt::format("      - {{direction: egress, protocol: udp, ports: \"{}-{}\", remote: 10.{}.0.0/16}}\n",
                                 port, port + 10, r);
        }
    }
    y += "networks:\n";
    const int networks = (instances + kPerNetwork - 1) / kPerNetwork;
    for (int n = 0; n < networks; ++n)
        y += fmt::format("  - {{name: n{0}, kind: public, cidr: 10.{1}.{2}.0/24, gateway: 10.{1}.{2}.1}}\n", n,
                         100 + n / 256, n % 256);
    y += "instances:\n";
    for (int i = 0; i < instances; ++i) {
        const int n = i / kPerNetwork, host = i % kPerNetwork + 2;
        y += fmt::format(
            "  - {{name: i{0}, network: n{1}, mac: \"52:54:00:{2:02x}:{3:02x}:{4:02x}\", ipv4: 10.{5}.{6}.{7}, "
            "security_groups: [g{8}, g{9}, g{10}], port: {{type: vhost-user, socket: /tmp/r/i{0}.sock}}}}\n",
            i, n, i >> 16, (i >> 8) & 0xff, i & 0xff, 100 + n / 256, n % 256, host, i % 100, (i + 7) % 100,
            (i + 31) % 100);
    }
    return y;
}

void BM_ParseAndValidate(benchmark::State& state) {
    const std::string yaml = big_config(static_cast<int>(state.range(0)));
    for (auto _ : state) {
        auto cfg = config::parse_config(yaml, "big.yaml");
        if (!cfg) {
            fail(state, cfg.error().front().to_string().c_str());
            break;
        }
        if (cfg->instances.size() != static_cast<size_t>(state.range(0)) ||
            cfg->security_groups.size() != kGroups ||
            cfg->networks.size() != static_cast<size_t>((state.range(0) + kPerNetwork - 1) / kPerNetwork)) {
            fail(state, "the parsed model lacks instances, groups or networks");
            break;
        }
        benchmark::DoNotOptimize(cfg);
    }
    state.counters["yaml_bytes"] = static_cast<double>(yaml.size());
}
BENCHMARK(BM_ParseAndValidate)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_BuildSnapshot(benchmark::State& state) {
    auto cfg = config::parse_config(big_config(static_cast<int>(state.range(0))), "big.yaml");
    auto table = dp::ConnTable::create(4096, -1);
    if (!cfg || !table) {
        fail(state, "setup failed");
        return;
    }
    std::map<std::string, uint16_t> slots;
    for (const auto& inst : cfg->instances)
        slots[inst.name] = static_cast<uint16_t>(slots.size() % dp::kMaxPorts);
    cp::SnapshotInputs in;
    in.port_slot = [&](const config::InstanceConfig& i) { return slots.at(i.name); };
    in.zone = [](const config::NetworkConfig&) { return uint16_t{1}; };
    in.conntrack = table->get();
    size_t rules = 0, distinct = 0;
    uint64_t generation = 0;
    std::unique_ptr<dp::Snapshot> last;
    for (auto _ : state) {
        auto snap = cp::build_snapshot(*cfg, in, ++generation);
        if (!snap) {
            fail(state, snap.error().c_str());
            break;
        }
        rules = 0;
        std::set<const dp::InstancePolicy*> policies;
        for (const auto& p : (*snap)->policies) {
            rules += p->ingress.size() + p->egress.size();
            policies.insert(p.get());
        }
        distinct = policies.size();
        last = std::move(*snap);  // frees the previous one: one snapshot freed per iteration, as before
    }
    state.counters["instance_rules"] = static_cast<double>(rules);
    state.counters["distinct_policies"] = static_cast<double>(distinct);
    if (!last) return;
    // Each instance has 3 distinct groups of 10 ingress and 10 egress rules; 100 combinations.
    const auto n = static_cast<size_t>(state.range(0));
    if (last->instances.size() != n || rules != n * 3 * kRulesPerGroup || distinct != kGroups)
        return fail(state, "the snapshot lacks instances, rules or shared policies");
    // i1 is in g1, whose rule 1 admits tcp/1021 from g2's members (i2 is one); i0 is in none of
    // g1, g8 and g32's remote groups for that port, and 1022 is an egress (udp) rule's port.
    const dp::InstanceView* i1 = &last->instances[1];
    const Ipv4Addr member = last->instances[2].ipv4, stranger = last->instances[0].ipv4;
    const auto admits = [&](Ipv4Addr from, uint16_t port) {
        return dp::evaluate_new_connection(*last, nullptr, i1, from, i1->ipv4, ipproto::kTcp, port).allowed;
    };
    if (!admits(member, 1021) || admits(stranger, 1021) || admits(member, 1022))
        fail(state, "the snapshot's rules give wrong verdicts");
}
BENCHMARK(BM_BuildSnapshot)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace calyx

int main(int argc, char** argv) { return calyx::perf::run_benchmarks("reload_bench", argc, argv); }
