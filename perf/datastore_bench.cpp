// The datastore's own work per change, off the data path: translating the whole site from
// networking-calico's keys (JSON parsing, selectors, rules, collisions) into calyx's model.
// Every etcd change is one such translation (coalesced over 100 ms), followed by the reload that
// reload_bench measures. End to end with etcd and calyx: perf/datastore_sync.cpp.
// Run: build/perf/datastore_bench
//
//   BM_Translate/N           the site of perf/calico_site.hpp with N endpoints and N/10 security
//                            groups (5 rules each, every port in 3 groups), 100 endpoints on
//                            calyx's host, every key read anew (calyx's first sync)
//   BM_TranslateOneChange/N  the same site after one policy changed, with the syncer's cache:
//                            what each later change costs
#include <benchmark/benchmark.h>

#include "bench_main.hpp"
#include "calico_site.hpp"
#include "cp/datastore/translate.hpp"

namespace calyx {
namespace {

struct BigSite {
    perf::SiteSize size;
    cp::datastore::Store store;
    config::Config local;

    explicit BigSite(int endpoints) : size{.endpoints = endpoints, .groups = endpoints / 10, .per_host = 100} {
        int64_t revision = 1;
        for (auto& [k, v] : perf::big_site(size)) store[k] = {std::move(v), revision, revision}, ++revision;
        local.host = perf::host_of(0, size);
        for (int n = 0; n < perf::kSubnets; ++n)
            local.datastore.networks.push_back({perf::network_id(n), NetworkKind::public_, 1500, {}});
    }
    bool whole(const cp::datastore::Site& site) const {
        return site.problems.empty() && site.local_endpoints.size() == 100 &&
               site.instances.size() == static_cast<size_t>(size.endpoints);
    }
};

void BM_Translate(benchmark::State& state) {
    const BigSite big(static_cast<int>(state.range(0)));
    for (auto _ : state) {
        const auto site = cp::datastore::translate(big.store, big.local);
        if (!big.whole(site)) perf::fail(state, "the site did not translate whole");
        benchmark::DoNotOptimize(site);
    }
    state.counters["keys"] = static_cast<double>(big.store.size());
}
BENCHMARK(BM_Translate)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond);

void BM_TranslateOneChange(benchmark::State& state) {
    BigSite big(static_cast<int>(state.range(0)));
    cp::datastore::TranslateCache cache;
    cp::datastore::translate(big.store, big.local, &cache);
    const auto [key, value] = test::calico::network_policy(perf::group_id(0), perf::group_rules(0, big.size.groups, 1));
    const auto [same_key, original] = test::calico::network_policy(perf::group_id(0), perf::group_rules(0, big.size.groups));
    int64_t revision = 1'000'000;
    for (auto _ : state) {
        cp::datastore::KeyValue& kv = big.store[key];
        kv.value = kv.value == value ? original : value;
        kv.mod_revision = ++revision;
        const auto site = cp::datastore::translate(big.store, big.local, &cache);
        if (!big.whole(site)) perf::fail(state, "the site did not translate whole");
        benchmark::DoNotOptimize(site);
    }
}
BENCHMARK(BM_TranslateOneChange)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace calyx

int main(int argc, char** argv) { return calyx::perf::run_benchmarks("datastore_bench", argc, argv); }
