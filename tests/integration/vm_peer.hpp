// "VMs" for integration tests: DPDK virtio-user ports in the test process that talk to a
// vhost-user backend (calyx, or dpdk-testpmd in the harness self-test) over real virtqueues.
//
//   VmPeerEal eal;                                   // once per process, before any VmPeer
//   auto vm = VmPeer::attach({.socket = dir / "web-1.sock", .mac = web_mac});
//   vm->send(FrameBuilder().eth(web_mac, gw_mac, ethertype::kArp).arp(...).build());
//   auto reply = vm->receive(2s, is_arp_reply);
//   vm->detach();                                    // the VM "shuts down"
//
// Memory: virtio-user hands its whole EAL memory to the vhost side as file descriptors, so that
// memory must be fd-backed and shareable. With `--no-huge`, DPDK 22.11 backs its (legacy,
// single-segment) memory with a memfd mapped MAP_SHARED, which rte_vhost can mmap: no hugepages
// needed on either side. `--no-huge` implies legacy memory, which EAL refuses together with
// `--in-memory` ("Option --legacy-mem is not compatible with --in-memory"), so the peer uses
// `--no-shconf` plus a per-process `--file-prefix` instead: no shared config file, no clash with
// calyx or another test run, only an empty /var/run/dpdk/<prefix> that ~VmPeerEal removes.
// `--single-file-segments` is only needed with hugepages. Verified against dpdk-testpmd as the
// vhost-user side in both directions (harness_selftest.cpp).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "calyx/net.hpp"

struct rte_mbuf;
struct rte_mempool;

namespace calyx::test {

using Bytes = std::vector<uint8_t>;
using FramePredicate = std::function<bool(const Bytes&)>;

// The EAL of the test process. Exactly one may exist, for the whole process; construct it in
// main() before the tests run. Throws std::runtime_error if rte_eal_init fails.
class VmPeerEal {
public:
    // The arguments VmPeerEal passes to rte_eal_init (without argv[0]); `extra` is appended.
    static std::vector<std::string> default_args();
    // The --file-prefix used by this process's EAL.
    static std::string file_prefix();

    explicit VmPeerEal(std::vector<std::string> extra_args = {});
    ~VmPeerEal();
    VmPeerEal(const VmPeerEal&) = delete;
    VmPeerEal& operator=(const VmPeerEal&) = delete;

    static bool initialized();
};

struct VmPeerOptions {
    std::string socket{};  // vhost-user socket path
    MacAddr mac{};         // the VM NIC's MAC
    // false: the VM side is the vhost-user client and the socket must already exist (the
    // backend is the server). true: the VM side creates the socket and the backend connects to
    // it (calyx port mode "client", like QEMU with `server=on`). Either way, once the backend
    // has gone away the VM is detached and attached again: a server-mode VM does not accept a
    // reconnecting backend on its own (see "Link state" in vm_peer.cpp).
    bool server = false;
    // Bounds attach(): the backend connecting (server mode: the PMD blocks in accept()) and
    // answering the vhost-user handshake (the PMD waits for replies without a timeout).
    std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
    // Bounds detach() the same way.
    std::chrono::milliseconds control_timeout{std::chrono::seconds(5)};
    uint16_t queue_size = 256;
    uint16_t queues = 1;  // queue pairs (virtio-net multi-queue), at most kMaxQueues
};

// One VM NIC: a hot-plugged net_virtio_user vdev with its own mbuf pool. Not thread-safe: use
// each VmPeer from one thread (the tests use the main lcore).
class VmPeer {
public:
    static std::expected<std::unique_ptr<VmPeer>, std::string> attach(const VmPeerOptions& opts);
    ~VmPeer();
    VmPeer(const VmPeer&) = delete;
    VmPeer& operator=(const VmPeer&) = delete;

    static constexpr uint16_t kMaxQueues = 8;

    // Queue one frame for transmission on queue pair `queue`; false if the ring stayed full or
    // no mbuf was free. Receiving polls every pair.
    bool send(const Bytes& frame, uint16_t queue = 0);

    // Poll until a frame matching `pred` arrives or `timeout` passes. Frames that do not match
    // are dropped (and counted in skipped()).
    std::optional<Bytes> receive(std::chrono::milliseconds timeout,
                                 const FramePredicate& pred = nullptr);

    // Every frame that arrives within `window` (for "nothing arrives" checks and diagnostics).
    std::vector<Bytes> receive_all(std::chrono::milliseconds window,
                                   const FramePredicate& pred = nullptr);

    // Queue `frame` followed by `extra_segments` segments of `segment_len` bytes each (up to
    // 65000), as one chained mbuf: a guest's long descriptor chain. The segments all point into
    // one buffer, so a megabyte frame costs the peer no memory. False if the ring stayed full.
    bool send_chain(const Bytes& frame, uint16_t extra_segments, uint16_t segment_len, uint16_t queue = 0);

    // Throw away whatever has already arrived.
    void drain();

    // Send `frame` every `interval` until a matching frame arrives or `timeout` passes. This is
    // how a real client copes with a backend that is still bringing the port up.
    std::optional<Bytes> request(const Bytes& frame, std::chrono::milliseconds timeout,
                                 const FramePredicate& pred,
                                 std::chrono::milliseconds interval = std::chrono::milliseconds(200));

    // Whether the vhost-user connection is alive (the backend has not closed it). Read from the
    // socket, not from the PMD (see "Link state" in vm_peer.cpp).
    bool link_up() const;
    bool wait_link_up(std::chrono::milliseconds timeout) const;

    // Stop and close the port and remove the vdev: the VM is gone, the backend sees the
    // vhost-user connection close. Idempotent; the destructor calls it.
    void detach();
    bool attached() const { return attached_; }

    const std::string& name() const { return name_; }
    uint16_t port_id() const { return port_id_; }
    const VmPeerOptions& options() const { return opts_; }
    uint64_t received() const { return received_; }
    uint64_t skipped() const { return skipped_; }
    uint64_t sent() const { return sent_; }
    uint64_t received_on(uint16_t queue) const { return received_by_queue_.at(queue); }

private:
    VmPeer() = default;
    std::expected<void, std::string> start();
    // Receive one burst; appends frames to `out`. Returns the number received.
    unsigned poll(std::deque<Bytes>& out);

    VmPeerOptions opts_;
    std::string name_;  // "net_virtio_user<N>"
    uint16_t port_id_ = 0;
    rte_mempool* pool_ = nullptr;
    rte_mempool* chain_pool_ = nullptr;  // send_chain's one large buffer
    rte_mbuf* chain_segment_ = nullptr;
    std::deque<Bytes> pending_;  // received, not yet examined
    std::vector<int> connection_;  // the PMD's vhost-user connection (descriptor), for link_up()
    bool attached_ = false;
    uint64_t received_ = 0, skipped_ = 0, sent_ = 0;
    std::array<uint64_t, kMaxQueues> received_by_queue_{};
};

// Human-readable one-line summary of a frame (for failure messages): "arp request 52:54:..".
std::string describe_frame(const Bytes& frame);

}  // namespace calyx::test
