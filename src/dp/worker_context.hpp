// What a worker carries through the pipeline besides the batch: its counters, the current
// time (injected, so tests are deterministic) and its ICMP error budgets.
#pragma once

#include <array>
#include <cstdint>

#include "dp/counters.hpp"
#include "dp/fragments.hpp"

namespace calyx::dp {

// Token bucket for ICMP errors, refilled from the injected clock.
struct IcmpErrorBudget {
    uint64_t tokens_x1000 = 0;  // thousandths of a token, so slow rates refill smoothly
    uint64_t last_refill_ns = 0;
    bool primed = false;

    // Take one token if available.
    bool take(uint64_t now_ns, uint32_t per_second, uint32_t burst) {
        const uint64_t cap = uint64_t{burst} * 1000;
        if (!primed) {
            tokens_x1000 = cap;
            last_refill_ns = now_ns;
            primed = true;
        } else if (now_ns > last_refill_ns) {
            // per_second tokens per 1e9 ns, kept in thousandths: elapsed * rate / 1e6.
            const uint64_t add = (now_ns - last_refill_ns) * per_second / 1'000'000;
            if (add > 0) {
                tokens_x1000 = tokens_x1000 + add > cap ? cap : tokens_x1000 + add;
                last_refill_ns = now_ns;
            }
        }
        if (tokens_x1000 < 1000) return false;
        tokens_x1000 -= 1000;
        return true;
    }
};

struct WorkerContext {
    WorkerCounters& counters;
    uint64_t now_ns = 0;
    // One bucket per port the offending packets arrive on: an instance that provokes errors
    // by the thousand spends only its own budget, never the fragmentation-needed errors other
    // instances need for path MTU discovery. (The uplink's bucket is the Internet's.)
    std::array<IcmpErrorBudget, kMaxPorts> icmp_budget{};
    FragmentVerdicts* fragments = nullptr;  // this worker's; required by the policy stage
};

}  // namespace calyx::dp
