// A vhost-user port: one instance's virtio-net NIC, served with DPDK's rte_vhost library
// (up to 1024 devices per process, more than ethdev's 32 ports).
//
// Server mode: calyx creates the socket and QEMU connects. Client mode: QEMU listens and
// calyx connects, reconnecting whenever the socket goes away and comes back. Either way a
// VM that reboots or whose QEMU restarts reconnects without disturbing other ports.
//
// Threads: the vhost library's event thread calls new_device/destroy_device; workers call
// rx/tx. destroy_device waits for an RCU grace period after marking the device gone, so no
// worker is inside a burst on a device that is being torn down.
#pragma once

#include <atomic>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>

#include "calyx/config.hpp"
#include "io/port.hpp"

struct rte_mbuf;
struct rte_mempool;
struct rte_rcu_qsbr;

namespace calyx::io {

class VhostPort final : public Port {
public:
    // Registers the socket and starts serving it. `grace` is the workers' RCU variable.
    static std::expected<std::unique_ptr<VhostPort>, std::string> open(
        uint16_t slot, const config::PortConfig& cfg, rte_mempool* pool, rte_rcu_qsbr* grace);
    ~VhostPort() override;  // unregisters the socket (removes it in server mode)
    VhostPort(const VhostPort&) = delete;
    VhostPort& operator=(const VhostPort&) = delete;

    // Worker side. rx(queue) receives from queue pair `queue` (< cfg.queues) and allocates
    // mbufs from the pool. tx(queue) copies into the guest's receive ring of pair
    // `queue` mod cfg.queues (or of the first ready pair if the guest left that one off) and
    // frees the mbufs it copied; rte_vhost serialises each ring with its own lock, which
    // workers contend for only when they outnumber the pairs.
    uint16_t rx(rte_mbuf** pkts, uint16_t n, uint16_t queue) noexcept override;
    uint16_t tx(rte_mbuf** pkts, uint16_t n, uint16_t queue) noexcept override;

    bool connected() const override { return vid_.load(std::memory_order_acquire) >= 0; }
    uint64_t connects() const { return connects_.load(std::memory_order_relaxed); }
    uint16_t slot() const override { return slot_; }
    const std::string& socket() const { return cfg_.socket; }
    const config::PortConfig& config() const { return cfg_; }

    // Callbacks of the vhost library (its event thread); public only for its ops table.
    static int on_new_device(int vid);
    static void on_destroy_device(int vid);
    static int on_vring_state_changed(int vid, uint16_t queue, int enable);

private:
    VhostPort(uint16_t slot, config::PortConfig cfg, rte_mempool* pool, rte_rcu_qsbr* grace)
        : slot_(slot), cfg_(std::move(cfg)), pool_(pool), grace_(grace) {}
    static VhostPort* find(int vid);

    uint16_t slot_;
    config::PortConfig cfg_;
    rte_mempool* pool_;
    rte_rcu_qsbr* grace_;
    std::atomic<int> vid_{-1};
    // Bit 2p: the guest's receive ring of queue pair p is ready (vring_state_changed).
    std::atomic<uint64_t> ready_rx_vrings_{0};
    std::atomic<uint64_t> connects_{0};
    bool registered_ = false;
};

}  // namespace calyx::io
