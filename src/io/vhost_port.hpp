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
//
// What a guest cannot do to the others:
//   - drain the shared mbuf pool or a worker's time with long descriptor chains: buffers are
//     linear (RTE_VHOST_USER_LINEARBUF_SUPPORT): a frame that does not fit in one mbuf is
//     refused by rte_vhost before anything is copied or allocated for it, and counted here as
//     oversize_frame (from the split ring's avail index; packed rings are not offered, so the
//     count is exact). External buffers (EXTBUF) are not enabled: they would let a guest make
//     calyx rte_malloc() a buffer of the guest's choosing, up to 64 KB, per frame.
//   - meet another worker inside a ring: each transmit ring of the guest has one poller (the
//     snapshot's stable deal) and the receive rings are owned or locked by TxPairs.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>

#include "calyx/config.hpp"
#include "io/port.hpp"
#include "io/vhost_tx.hpp"

struct rte_mbuf;
struct rte_mempool;
struct rte_rcu_qsbr;

namespace calyx::io {

class VhostPort final : public Port {
public:
    // Registers the socket and starts serving it; in server mode sets the socket file's owner,
    // group and mode as configured. `grace` is the workers' RCU variable, `workers` how many
    // may send to the port. A failure leaves every existing socket file as it was: a server
    // socket is replaced only when it is stale (no calyx port serves it, nobody listens).
    static std::expected<std::unique_ptr<VhostPort>, std::string> open(
        uint16_t slot, const config::PortConfig& cfg, rte_mempool* pool, rte_rcu_qsbr* grace,
        uint16_t workers);
    ~VhostPort() override;  // unregisters the socket (removes it in server mode)

    // Server mode: gives the socket file the owner, group and mode of `cfg` (a reload that
    // changes only those keeps the connection). Control plane.
    std::expected<void, std::string> set_permissions(const config::PortConfig& cfg);
    VhostPort(const VhostPort&) = delete;
    VhostPort& operator=(const VhostPort&) = delete;

    // Worker side. rx(queue) receives from queue pair `queue` (< cfg.queues, polled by one
    // worker only) and allocates mbufs from the pool; `refused` counts the frames rte_vhost
    // took off the ring but refused (too long for one buffer). tx(queue) copies into a guest
    // receive ring as TxPairs decides for worker `queue` and frees the mbufs it copied.
    uint16_t rx(rte_mbuf** pkts, uint16_t n, uint16_t queue, uint16_t& refused) noexcept override;
    uint16_t tx(rte_mbuf** pkts, uint16_t n, uint16_t queue) noexcept override;

    bool connected() const override { return vid_.load(std::memory_order_acquire) >= 0; }
    // A peer (QEMU) holds the socket, whether or not its guest has set the device up yet: a
    // VM that Nova started paused, waiting for its port to be reported up, is connected here.
    bool socket_connected() const { return sessions_.load(std::memory_order_acquire) > 0; }
    uint64_t connects() const { return connects_.load(std::memory_order_relaxed); }
    uint16_t slot() const override { return slot_; }
    const std::string& socket() const { return cfg_.socket; }
    const config::PortConfig& config() const { return cfg_; }

    // Callbacks of the vhost library (its event thread); public only for its ops table.
    static int on_new_device(int vid);
    static void on_destroy_device(int vid);
    static int on_vring_state_changed(int vid, uint16_t queue, int enable);
    static int on_new_connection(int vid);
    static void on_destroy_connection(int vid);

private:
    VhostPort(uint16_t slot, config::PortConfig cfg, rte_mempool* pool, rte_rcu_qsbr* grace, uint16_t workers)
        : slot_(slot), cfg_(std::move(cfg)), pool_(pool), grace_(grace), tx_pairs_(cfg_.queues, workers, grace) {}
    static VhostPort* find(int vid);

    uint16_t slot_;
    config::PortConfig cfg_;
    rte_mempool* pool_;
    rte_rcu_qsbr* grace_;
    std::atomic<int> vid_{-1};
    // Bit p: the guest's receive ring of queue pair p is ready (vring_state_changed).
    std::atomic<uint32_t> ready_rx_pairs_{0};
    std::atomic<uint64_t> connects_{0};
    std::atomic<int> sessions_{0};  // socket connections (new_connection - destroy_connection)
    bool registered_ = false;
    TxPairs tx_pairs_;
    // Per queue pair, touched only by the one worker that polls it: the guest transmit ring's
    // avail index after the last burst, and the connection it belongs to.
    struct RxRing {
        uint16_t last_avail = 0;
        uint64_t connection = 0;
    };
    std::array<RxRing, TxPairs::kMaxPairs> rx_rings_{};
};

}  // namespace calyx::io
