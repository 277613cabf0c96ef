// Who sends on which queue pair of a vhost-user port, and when a worker must lock one. calyx
// owns this itself: rte_vhost's per-ring lock is the library's internal business (DPDK 22.11
// takes a spinlock in rte_vhost_enqueue_burst, later versions only a read lock, which lets
// two senders into one ring at once).
//
// Worker w sends on its own pair, w mod pairs. With more workers than pairs, pairs are shared:
// every send takes the pair's lock. Otherwise each worker's own pair is its alone and it sends
// without a lock, until the guest leaves pairs off (Linux enables one per vCPU; `ethtool -L`),
// when workers whose pair is off must borrow a ready one. A worker may only borrow once every
// worker locks, so the port switches modes with a grace period in between (RCU tokens, checked
// without waiting; the worker that asks drops that burst):
//
//   exclusive --own pair off--> to_shared --grace--> shared --all own pairs on--> to_exclusive
//       ^                      (all lock,           (all lock,                   (all lock, no
//       |                       nobody borrows)      borrow as needed)            borrowing)
//       +--------------------------------------grace-------------------------------------+
//
// Threads: send() from the workers (each passes its own worker number, its RCU thread id);
// the ready mask comes from the vhost thread's vring_state_changed.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>

#include <rte_rcu_qsbr.h>
#include <rte_spinlock.h>

namespace calyx::io {

class TxPairs {
public:
    static constexpr uint16_t kMaxPairs = 32;

    // `pairs` (1..kMaxPairs) the port offers, `workers` that may send to it, `grace` the
    // workers' RCU variable.
    TxPairs(uint16_t pairs, uint16_t workers, rte_rcu_qsbr* grace)
        : pairs_(pairs),
          shared_always_(workers > pairs),
          own_pairs_(pairs_mask(workers < pairs ? workers : pairs)),
          grace_(grace) {
        for (auto& l : locks_) rte_spinlock_init(&l);
    }

    // Sends for worker `worker` on a ready pair: `send(pair)` runs while that pair is this
    // worker's alone (owned, or locked). `ready`: bit p set when the guest's receive ring of
    // pair p is ready. Returns what send returned; 0 if no pair is ready or the port is
    // switching modes.
    template <typename Send>
    uint16_t send(unsigned worker, uint32_t ready, Send&& send) noexcept {
        ready &= pairs_mask(pairs_);
        if (ready == 0) return 0;
        const uint16_t own = static_cast<uint16_t>(worker % pairs_);
        const bool own_ready = ready >> own & 1;
        if (shared_always_) return locked(own_ready ? own : first(ready), send);
        uint64_t m = mode_.load(std::memory_order_acquire);
        switch (mode_of(m)) {
            case exclusive:
                if (own_ready) return send(own);
                // Borrowing starts only once every worker locks.
                switch_to(m, to_shared);
                return 0;
            case to_shared:
                if (rte_rcu_qsbr_check(grace_, token_of(m), false) == 1 &&
                    mode_.compare_exchange_strong(m, shared, std::memory_order_acq_rel))
                    return shared_send(own, own_ready, ready, send);
                return own_ready ? locked(own, send) : 0;
            case shared: return shared_send(own, own_ready, ready, send);
            case to_exclusive:
                if ((ready & own_pairs_) != own_pairs_) {
                    // A pair went off again: back to shared before anyone borrows.
                    mode_.compare_exchange_strong(m, shared, std::memory_order_acq_rel);
                    return 0;
                }
                if (rte_rcu_qsbr_check(grace_, token_of(m), false) == 1)
                    mode_.compare_exchange_strong(m, exclusive, std::memory_order_acq_rel);
                return locked(own, send);  // this burst still locks: others may not have seen it
        }
        return 0;
    }

    // True while sends take locks (tests, diagnostics).
    bool locking() const { return shared_always_ || mode_of(mode_.load(std::memory_order_relaxed)) != exclusive; }

private:
    enum Mode : uint64_t { exclusive = 0, to_shared = 1, shared = 2, to_exclusive = 3 };
    static Mode mode_of(uint64_t m) { return static_cast<Mode>(m & 3); }
    static uint64_t token_of(uint64_t m) { return m >> 2; }
    static constexpr uint32_t pairs_mask(uint32_t n) { return n >= 32 ? ~0u : (1u << n) - 1; }
    static uint16_t first(uint32_t ready) { return static_cast<uint16_t>(std::countr_zero(ready)); }

    template <typename Send>
    uint16_t locked(uint16_t pair, Send& send) noexcept {
        rte_spinlock_lock(&locks_[pair]);
        const uint16_t done = send(pair);
        rte_spinlock_unlock(&locks_[pair]);
        return done;
    }
    template <typename Send>
    uint16_t shared_send(uint16_t own, bool own_ready, uint32_t ready, Send& send) noexcept {
        if ((ready & own_pairs_) == own_pairs_) {
            uint64_t m = mode_.load(std::memory_order_acquire);
            if (mode_of(m) == shared) switch_to(m, to_exclusive);
        }
        return locked(own_ready ? own : first(ready), send);
    }
    // Starts a grace period and moves from the mode `seen` to `next` with its token (a racing
    // worker may have moved first: then nothing happens).
    void switch_to(uint64_t seen, Mode next) noexcept {
        const uint64_t token = rte_rcu_qsbr_start(grace_);
        mode_.compare_exchange_strong(seen, token << 2 | next, std::memory_order_acq_rel);
    }

    const uint16_t pairs_;
    const bool shared_always_;
    const uint32_t own_pairs_;  // the pairs some worker owns: 0 .. min(workers, pairs) - 1
    rte_rcu_qsbr* const grace_;
    std::atomic<uint64_t> mode_{exclusive};
    std::array<rte_spinlock_t, kMaxPairs> locks_{};
};

}  // namespace calyx::io
