// What every benchmark binary in perf/ shares: EAL without hugepages or devices on one lcore,
// and a failure flag so that a benchmark that saw wrong verdicts fails the run (and the perf
// suite's smoke test) instead of only reporting an error. A run in which no benchmark ran
// (a --benchmark_filter that matches nothing) fails too.
#pragma once

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <rte_eal.h>

#include <iterator>
#include <string>

#include "dp/batch.hpp"

namespace calyx::perf {

inline bool g_failed = false;

inline void fail(benchmark::State& state, const char* why) {
    g_failed = true;
    state.SkipWithError(why);
}

// What a pipeline benchmark saw go wrong in the batches it ran: packets not forwarded out of
// the port they must leave by, and the first rewritten frame that is not what it must be.
struct BatchChecks {
    uint64_t wrong_verdicts = 0;
    std::string wrong_bytes;

    // Every packet of `b`; cheap enough for the timed loop (a compare per packet).
    void verdicts(const dp::Batch& b, uint16_t out_port) {
        for (uint16_t i = 0; i < b.count; ++i)
            wrong_verdicts += b.meta[i].verdict != dp::Verdict::forward || b.meta[i].out_port != out_port;
    }
    void frame(std::string mismatch) {
        if (wrong_bytes.empty()) wrong_bytes = std::move(mismatch);
    }
    // Fails the benchmark if anything was wrong.
    void report(benchmark::State& state) const {
        if (wrong_verdicts != 0)
            fail(state, fmt::format("{} packets not forwarded to their port", wrong_verdicts).c_str());
        else if (!wrong_bytes.empty())
            fail(state, ("rewritten frame: " + wrong_bytes).c_str());
    }
};

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
