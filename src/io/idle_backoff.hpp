// Adaptive idle sleep of a worker (dataplane.idle_sleep_us).
//
// A worker whose poll finds no packet keeps polling for kSpinNs after the last packet (traffic
// comes in trains with short gaps, and a request's answer often follows within microseconds),
// then sleeps: 1 us first, twice as long after each further empty iteration, up to the
// configured maximum. The first packet ends the backoff. Under load a worker never sleeps, so
// throughput does not change; what sleeping costs is the latency of the first packet after a
// quiet spell (at most the current sleep plus the kernel's wake-up), and what a receive ring
// must hold meanwhile (at 1 Mpps, 100 packets per 100 us: a vhost-user ring holds 256).
// 0 means pure polling, as a dedicated core wants.
//
// Pure logic on an injected clock, so the tests need no EAL; io/worker.cpp does the sleeping.
#pragma once

#include <algorithm>
#include <cstdint>

namespace calyx::io {

class IdleBackoff {
public:
    static constexpr uint64_t kSpinNs = 50'000;

    // After a poll-loop iteration that ended at `now_ns` and moved packets or not (`busy`):
    // microseconds to sleep now, 0 to poll again at once.
    uint32_t next(bool busy, uint64_t now_ns, uint32_t max_us) noexcept {
        if (busy || max_us == 0) {
            last_busy_ns_ = now_ns;
            sleep_us_ = 0;
            return 0;
        }
        if (now_ns - last_busy_ns_ < kSpinNs) return 0;
        sleep_us_ = sleep_us_ == 0 ? 1 : std::min(sleep_us_ * 2, max_us);
        return std::min(sleep_us_, max_us);  // the maximum may have shrunk (a reload)
    }

private:
    uint64_t last_busy_ns_ = 0;
    uint32_t sleep_us_ = 0;
};

}  // namespace calyx::io
