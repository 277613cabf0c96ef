// The data plane's clock: nanoseconds from the TSC. Workers and the control plane (expiry)
// must read the same clock, so both use this.
#pragma once

#include <cstdint>

#include <rte_cycles.h>

namespace calyx::io {

inline uint64_t tsc_to_ns(uint64_t tsc) {
    static const uint64_t hz = rte_get_tsc_hz();
    return static_cast<uint64_t>(static_cast<unsigned __int128>(tsc) * 1'000'000'000 / hz);
}

inline uint64_t now_ns() { return tsc_to_ns(rte_rdtsc()); }

}  // namespace calyx::io
