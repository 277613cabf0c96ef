// What a start after a crash or a hand-over spends restoring the previous process's connections
// (issue 17): checking every entry of the previous state file and inserting the trusted ones
// into a fresh table in a new file, NAT ports claimed and outside keys derived again. In a
// hand-over this is most of the time the data plane stands still.
// Run: build/perf/restore_bench   (the figure: BM_Restore/1000000)
//
//   BM_Restore/N   N established TCP connections, a tenth of them (at most 40 000, one port
//                  each) masqueraded; state files in /dev/shm.
#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <rte_memory.h>
#include <unistd.h>

#include <filesystem>
#include <memory>

#include "bench_main.hpp"
#include "dp/conntrack.hpp"
#include "dp/nat.hpp"
#include "dp/state_file.hpp"

namespace calyx {
namespace {

using perf::fail;

constexpr uint64_t kSecret = 0x5eed;
constexpr uint64_t kNowNs = 1'000'000'000;

struct Source {
    std::unique_ptr<dp::StateFile> file;
    std::unique_ptr<dp::ConnTable> table;
};

std::string shm_path(std::string_view what) { return fmt::format("/dev/shm/calyx-restore-bench-{}-{}", ::getpid(), what); }

std::expected<std::unique_ptr<dp::ConnTable>, std::string> table_in(uint32_t capacity, const std::string& path,
                                                                     std::unique_ptr<dp::StateFile>& file) {
    return dp::ConnTable::create(capacity, SOCKET_ID_ANY, kSecret, [&](size_t slots) -> std::expected<dp::CtStorage, std::string> {
        auto f = dp::StateFile::create(path, slots, {kSecret, kSecret, dp::NatPortAllocator::kDefaultPartitions, 0});
        if (!f) return std::unexpected(f.error());
        file = std::move(*f);
        return dp::CtStorage{file->entries(), file->keys(), file->changes()};
    });
}

uint32_t capacity_for(int64_t n) { return static_cast<uint32_t>(std::max<int64_t>(4096, n + n / 16 + 80000)); }

// A previous process's table: n connections as the data path leaves them.
std::expected<Source, std::string> make_source(int64_t n) {
    Source s;
    auto t = table_in(capacity_for(n), shm_path("old"), s.file);
    if (!t) return std::unexpected(t.error());
    s.table = std::move(*t);
    const int64_t masqueraded = std::min<int64_t>(n / 10, 40000);
    for (int64_t i = 0; i < n; ++i) {
        const bool nat = i < masqueraded;
        const auto key = dp::make_ct_key(ipproto::kTcp,
                                         {static_cast<uint16_t>(nat ? 2 : 1), Ipv4Addr{0x0a000000u + static_cast<uint32_t>(i / 60000)},
                                          static_cast<uint16_t>(1024 + i % 60000)},
                                         {0, Ipv4Addr{0xc0000200u + static_cast<uint32_t>(i % 251)}, 443});
        const int32_t pos = s.table->insert(key.key);
        if (pos < 0) return std::unexpected(fmt::format("source table full at {}", i));
        dp::CtEntry& e = s.table->entry(pos);
        s.table->record_key(e, pos, key.key);
        e.state.proto = ipproto::kTcp;
        e.state.tcp_state = dp::TcpCtState::established;
        e.state.expires_s = 1000;
        e.orig_side = key.src_side;
        e.account = static_cast<uint16_t>(i % 64);
        e.policy_generation = 7;
        if (nat)
            dp::store_nat_binding(e, {Ipv4Addr::from_octets(198, 51, 100, 10), static_cast<uint16_t>(20000 + i), dp::NatRole::primary});
    }
    return s;
}

void BM_Restore(benchmark::State& state) {
    const int64_t n = state.range(0);
    auto source = make_source(n);
    if (!source) return fail(state, source.error().c_str());
    const dp::CtRestoreSource from = source->file->restore_source();
    dp::CtRestoreStats stats;
    for (auto _ : state) {
        state.PauseTiming();
        std::unique_ptr<dp::StateFile> file;
        auto table = table_in(capacity_for(n), shm_path("new"), file);
        if (!table) return fail(state, table.error().c_str());
        auto nat = dp::NatPortAllocator::create({20000, 59999}, dp::NatPortAllocator::kDefaultPartitions, kSecret);
        (*table)->set_nat(&*nat);
        state.ResumeTiming();
        stats = (*table)->restore(from, kNowNs, [](uint16_t) { return true; });
        state.PauseTiming();
        if (stats.connections != n) {
            fail(state, fmt::format("restored {} of {} connections (torn {} full {} nat {})", stats.connections, n,
                                    stats.torn, stats.full, stats.nat_refused).c_str());
        }
        table->reset();
        file.reset();
        state.ResumeTiming();
    }
    state.counters["connections"] = static_cast<double>(stats.connections);
    state.counters["masqueraded"] = static_cast<double>(stats.masqueraded);
    state.counters["ns_per_connection"] =
        benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
    std::filesystem::remove(shm_path("old"));
    std::filesystem::remove(shm_path("new"));
}
BENCHMARK(BM_Restore)->Arg(1000)->Arg(100000)->Arg(1000000)->Unit(benchmark::kMillisecond)->Iterations(3);

}  // namespace
}  // namespace calyx

int main(int argc, char** argv) { return calyx::perf::run_benchmarks("restore_bench", argc, argv); }
