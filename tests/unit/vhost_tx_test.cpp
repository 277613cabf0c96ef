// Who sends on which vhost-user queue pair (io/vhost_tx.hpp): real worker threads, a real RCU
// variable, and stand-in rings that notice two senders inside them at once. This is what keeps
// calyx correct when rte_vhost's own ring lock is only a read lock (DPDK after 22.11).
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include <rte_malloc.h>

#include "io/vhost_tx.hpp"

namespace calyx::io {
namespace {

struct Grace {
    explicit Grace(uint32_t threads)
        : mem(static_cast<rte_rcu_qsbr*>(rte_zmalloc("tx_test_rcu", rte_rcu_qsbr_get_memsize(threads), 64))) {
        rte_rcu_qsbr_init(mem, threads);
    }
    ~Grace() { rte_free(mem); }
    rte_rcu_qsbr* mem;
};

// A guest receive ring that counts the senders inside it.
struct Ring {
    std::atomic<int> inside{0};
    std::atomic<uint64_t> overlaps{0};
    std::atomic<uint64_t> sends{0};
    uint16_t enter() {
        if (inside.fetch_add(1) != 0) ++overlaps;
        for (volatile int i = 0; i < 200; ++i) {
        }
        inside.fetch_sub(1);
        ++sends;
        return 1;
    }
};

struct Run {
    std::vector<std::unique_ptr<Ring>> rings;
    uint64_t overlaps() const {
        uint64_t n = 0;
        for (const auto& r : rings) n += r->overlaps;
        return n;
    }
    uint64_t sends(size_t pair) const { return rings[pair]->sends; }
};

// `workers` threads send through one TxPairs for `duration`, each reporting a quiescent state
// after every burst as calyx's workers do, while the guest's ready rings follow `ready_at`.
template <typename Ready>
Run send_concurrently(uint16_t pairs, uint16_t workers, std::chrono::milliseconds duration, Ready ready_at) {
    Grace grace(workers);
    TxPairs tx(pairs, workers, grace.mem);
    Run run;
    for (uint16_t p = 0; p < pairs; ++p) run.rings.push_back(std::make_unique<Ring>());
    std::atomic<uint32_t> ready{ready_at(0)};
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (unsigned w = 0; w < workers; ++w) {
        threads.emplace_back([&, w] {
            rte_rcu_qsbr_thread_register(grace.mem, w);
            rte_rcu_qsbr_thread_online(grace.mem, w);
            while (!stop.load(std::memory_order_relaxed)) {
                tx.send(w, ready.load(std::memory_order_relaxed), [&](uint16_t pair) { return run.rings[pair]->enter(); });
                rte_rcu_qsbr_quiescent(grace.mem, w);
            }
            rte_rcu_qsbr_thread_offline(grace.mem, w);
            rte_rcu_qsbr_thread_unregister(grace.mem, w);
        });
    }
    const auto start = std::chrono::steady_clock::now();
    for (uint64_t tick = 1; std::chrono::steady_clock::now() - start < duration; ++tick) {
        std::this_thread::sleep_for(std::chrono::microseconds(200));
        ready = ready_at(tick);
    }
    stop = true;
    for (auto& t : threads) t.join();
    return run;
}

TEST(TxPairs, WorkersOutnumberingPairsNeverMeetInARing) {
    const auto run = send_concurrently(1, 3, std::chrono::milliseconds(400), [](uint64_t) { return 1u; });
    EXPECT_EQ(run.overlaps(), 0u);
    EXPECT_GT(run.sends(0), 1000u);
}

// The guest enables and disables its second pair over and over (ethtool -L, a reboot): the
// worker that owns it borrows the first pair, whose owner sends without a lock whenever it may.
TEST(TxPairs, GuestTogglingItsPairsNeverLetsTwoWorkersIntoARing) {
    std::mt19937 rng(7);
    const auto run = send_concurrently(2, 2, std::chrono::milliseconds(600), [&](uint64_t tick) {
        return tick % 8 < 4 ? 3u : (rng() % 2 ? 1u : 2u);
    });
    EXPECT_EQ(run.overlaps(), 0u);
    EXPECT_GT(run.sends(0), 1000u);
    EXPECT_GT(run.sends(1), 1000u);
}

TEST(TxPairs, OwnPairsGoUnlockedOnceEveryPairIsReady) {
    Grace grace(2);
    for (unsigned w = 0; w < 2; ++w) {
        rte_rcu_qsbr_thread_register(grace.mem, w);
        rte_rcu_qsbr_thread_online(grace.mem, w);
    }
    TxPairs tx(2, 2, grace.mem);
    std::vector<uint16_t> used;
    auto send = [&](uint16_t pair) {
        used.push_back(pair);
        return uint16_t{1};
    };
    auto quiesce = [&] {
        for (unsigned w = 0; w < 2; ++w) rte_rcu_qsbr_quiescent(grace.mem, w);
    };
    EXPECT_EQ(tx.send(1, 0b11, send), 1);
    EXPECT_FALSE(tx.locking()) << "each worker owns its pair";
    // The guest runs one pair: worker 1 may borrow pair 0 only after a grace period.
    EXPECT_EQ(tx.send(1, 0b01, send), 0) << "first every worker must start locking";
    EXPECT_TRUE(tx.locking());
    EXPECT_EQ(tx.send(1, 0b01, send), 0) << "no grace period has passed";
    EXPECT_EQ(tx.send(0, 0b01, send), 1) << "the owner sends, locked";
    quiesce();
    EXPECT_EQ(tx.send(1, 0b01, send), 1);
    EXPECT_EQ(used, (std::vector<uint16_t>{1, 0, 0}));
    // Both pairs back: after a grace period the owners go unlocked again.
    EXPECT_EQ(tx.send(0, 0b11, send), 1);
    EXPECT_TRUE(tx.locking());
    quiesce();
    EXPECT_EQ(tx.send(1, 0b11, send), 1);
    EXPECT_FALSE(tx.locking());
    for (unsigned w = 0; w < 2; ++w) {
        rte_rcu_qsbr_thread_offline(grace.mem, w);
        rte_rcu_qsbr_thread_unregister(grace.mem, w);
    }
}

}  // namespace
}  // namespace calyx::io
