// What every benchmark binary in perf/ shares: EAL without hugepages or devices on one lcore,
// and a failure flag so that a benchmark that saw wrong verdicts fails the run (and the perf
// suite's smoke test) instead of only reporting an error. A run in which no benchmark ran
// (a --benchmark_filter that matches nothing) fails too.
#pragma once

#include <benchmark/benchmark.h>
#include <rte_eal.h>

#include <iterator>

namespace calyx::perf {

inline bool g_failed = false;

inline void fail(benchmark::State& state, const char* why) {
    g_failed = true;
    state.SkipWithError(why);
}

inline int run_benchmarks(const char* name, int argc, char** argv) {
    const char* eal_argv[] = {name, "--no-huge", "-m", "1024", "--no-pci", "--no-shconf",
                              "--no-telemetry", "-l", "0", "--log-level", "error"};
    if (rte_eal_init(static_cast<int>(std::size(eal_argv)), const_cast<char**>(eal_argv)) < 0) return 1;
    benchmark::Initialize(&argc, argv);
    const size_t ran = benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    rte_eal_cleanup();
    return g_failed || ran == 0 ? 1 : 0;
}

}  // namespace calyx::perf
