// The data plane's clock: nanoseconds from the TSC. Workers and the control plane (expiry)
// must read the same clock, so both use this.
#pragma once

#include <cstdint>
#include <ctime>

#include <rte_cycles.h>

namespace calyx::io {

// ns = tsc * 1e9 / hz, as a multiplication by a 32.32 fixed-point factor: workers read the
// clock every loop iteration, and a 128-bit division costs more than the rest of an idle one.
inline uint64_t tsc_to_ns(uint64_t tsc) {
    static const unsigned __int128 ns_per_tsc_x2_32 =
        (static_cast<unsigned __int128>(1'000'000'000) << 32) / rte_get_tsc_hz();
    return static_cast<uint64_t>(tsc * ns_per_tsc_x2_32 >> 32);
}

inline uint64_t now_ns() { return tsc_to_ns(rte_rdtsc()); }

// CLOCK_MONOTONIC in ns: the same for every process on the machine (a hand-over's two sides).
inline uint64_t monotonic_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace calyx::io
