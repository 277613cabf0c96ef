#include "io/vhost_port.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <rte_rcu_qsbr.h>
#include <rte_mbuf.h>
#include <rte_vhost.h>

namespace calyx::io {
namespace {

// virtio queue numbers as the host sees them: queue pair p is the guest's receive queue 2p
// and its transmit queue 2p+1.
constexpr uint16_t guest_rx_vring(uint16_t pair) { return static_cast<uint16_t>(2 * pair); }
constexpr uint16_t guest_tx_vring(uint16_t pair) { return static_cast<uint16_t>(2 * pair + 1); }

// virtio-net feature bits (virtio 1.2, 5.1.3). <linux/virtio_net.h> does not compile as
// C++ (a member named `class`), so rte_vhost.h leaves it out for C++ and the bits are here.
namespace virtio_feature {
constexpr uint64_t kCsum = 0, kGuestCsum = 1, kGuestTso4 = 7, kGuestTso6 = 8, kGuestEcn = 9,
                   kGuestUfo = 10, kHostTso4 = 11, kHostTso6 = 12, kHostEcn = 13, kHostUfo = 14;
}

// Offloads would hand calyx partial checksums and 64 KB segments; the router wants plain
// frames it can check and rewrite, so they are not offered to the guest.
constexpr uint64_t kDisabledFeatures = [] {
    using namespace virtio_feature;
    uint64_t bits = 0;
    for (uint64_t f : {kCsum, kGuestCsum, kGuestTso4, kGuestTso6, kGuestEcn, kGuestUfo, kHostTso4,
                       kHostTso6, kHostEcn, kHostUfo})
        bits |= 1ULL << f;
    return bits;
}();

// Socket path -> port, for the vhost callbacks, which only get a vid. Control path only.
std::mutex registry_mutex;
std::map<std::string, VhostPort*> registry;

const rte_vhost_device_ops* device_ops();

// Bit 2p set for every pair p below the index: the guest receive rings of the first n pairs.
constexpr auto kRxVringsOfPairs = [] {
    std::array<uint64_t, 33> masks{};
    for (size_t n = 1; n < masks.size(); ++n) masks[n] = masks[n - 1] | 1ULL << guest_rx_vring(static_cast<uint16_t>(n - 1));
    return masks;
}();

}  // namespace

std::expected<std::unique_ptr<VhostPort>, std::string> VhostPort::open(
    uint16_t slot, const config::PortConfig& cfg, rte_mempool* pool, rte_rcu_qsbr* grace) {
    std::unique_ptr<VhostPort> port(new VhostPort(slot, cfg, pool, grace));
    const char* path = cfg.socket.c_str();
    uint64_t flags = RTE_VHOST_USER_NET_COMPLIANT_OL_FLAGS;
    if (cfg.mode == config::VhostMode::client) {
        flags |= RTE_VHOST_USER_CLIENT;  // reconnects by default
    } else {
        // A socket left by an earlier calyx would make bind() fail; a non-socket is not ours.
        struct stat st{};
        if (lstat(path, &st) == 0) {
            if (!S_ISSOCK(st.st_mode))
                return std::unexpected(fmt::format("{}: exists and is not a socket", cfg.socket));
            unlink(path);
        }
    }
    {
        std::lock_guard lock(registry_mutex);
        if (registry.contains(cfg.socket))
            return std::unexpected(fmt::format("{}: already in use by another port", cfg.socket));
        registry[cfg.socket] = port.get();
    }
    auto fail = [&](const char* what) -> std::unexpected<std::string> {
        return std::unexpected(fmt::format("{}: {} failed", cfg.socket, what));
    };
    if (rte_vhost_driver_register(path, flags) != 0) {
        std::lock_guard lock(registry_mutex);
        registry.erase(cfg.socket);
        return fail("vhost-user registration");
    }
    port->registered_ = true;  // from here the destructor cleans up
    if (rte_vhost_driver_disable_features(path, kDisabledFeatures) != 0)
        return fail("disabling offload features");
    if (rte_vhost_driver_callback_register(path, device_ops()) != 0)
        return fail("callback registration");
    if (rte_vhost_driver_start(path) != 0) return fail("starting the socket");
    return port;
}

VhostPort::~VhostPort() {
    if (registered_) {
        // Unregistering fails with EBUSY while a callback for this socket is running; the
        // callbacks are short, so retry.
        for (int i = 0; i < 1000 && rte_vhost_driver_unregister(cfg_.socket.c_str()) != 0; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (cfg_.mode == config::VhostMode::server) unlink(cfg_.socket.c_str());
    }
    std::lock_guard lock(registry_mutex);
    auto it = registry.find(cfg_.socket);
    if (it != registry.end() && it->second == this) registry.erase(it);
}

uint16_t VhostPort::rx(rte_mbuf** pkts, uint16_t n, uint16_t queue) noexcept {
    const int vid = vid_.load(std::memory_order_acquire);
    if (vid < 0) return 0;
    return rte_vhost_dequeue_burst(vid, guest_tx_vring(queue), pool_, pkts, n);
}

uint16_t VhostPort::tx(rte_mbuf** pkts, uint16_t n, uint16_t queue) noexcept {
    const int vid = vid_.load(std::memory_order_acquire);
    if (vid < 0) return 0;
    // Worker w sends on pair w mod queues, so workers do not contend for one ring's lock while
    // there are pairs enough. A guest may run fewer pairs than offered (Linux: one per vCPU,
    // `ethtool -L`): then the first ready one.
    const uint64_t ready = ready_rx_vrings_.load(std::memory_order_relaxed);
    uint16_t pair = static_cast<uint16_t>(queue % cfg_.queues);
    if (!(ready >> guest_rx_vring(pair) & 1)) {
        const uint64_t usable = ready & kRxVringsOfPairs[cfg_.queues];
        if (usable == 0) return 0;
        pair = static_cast<uint16_t>(std::countr_zero(usable) / 2);
    }
    const uint16_t done = rte_vhost_enqueue_burst(vid, guest_rx_vring(pair), pkts, n);
    rte_pktmbuf_free_bulk(pkts, done);  // copied into the guest
    return done;
}

VhostPort* VhostPort::find(int vid) {
    char path[PATH_MAX];
    if (rte_vhost_get_ifname(vid, path, sizeof(path)) != 0) return nullptr;
    std::lock_guard lock(registry_mutex);
    auto it = registry.find(path);
    return it == registry.end() ? nullptr : it->second;
}

int VhostPort::on_new_device(int vid) {
    VhostPort* port = find(vid);
    if (!port) return -1;
    // Workers poll; the guest need not kick calyx when it transmits. Rings not ready yet get
    // the setting when they become ready.
    const uint16_t vrings = rte_vhost_get_vring_num(vid);
    for (uint16_t pair = 0; guest_tx_vring(pair) < vrings; ++pair)
        rte_vhost_enable_guest_notification(vid, guest_tx_vring(pair), 0);
    port->vid_.store(vid, std::memory_order_release);
    port->connects_.fetch_add(1, std::memory_order_relaxed);
    return 0;
}

void VhostPort::on_destroy_device(int vid) {
    VhostPort* port = find(vid);
    if (!port) return;
    port->vid_.store(-1, std::memory_order_release);
    port->ready_rx_vrings_.store(0, std::memory_order_relaxed);
    // After the grace period no worker still holds the old vid inside a burst.
    rte_rcu_qsbr_synchronize(port->grace_, RTE_QSBR_THRID_INVALID);
}

int VhostPort::on_vring_state_changed(int vid, uint16_t vring, int ready) {
    // Only the ready set is recorded: a disabled transmit ring simply yields no packets, but
    // sending to a disabled receive ring would drop. (Calling rte_vhost_enable_guest_notification
    // here deadlocks: the library holds the ring's lock while it runs this callback.)
    VhostPort* port = find(vid);
    if (!port || vring >= 64 || vring % 2 != 0) return 0;
    if (ready)
        port->ready_rx_vrings_.fetch_or(1ULL << vring, std::memory_order_relaxed);
    else
        port->ready_rx_vrings_.fetch_and(~(1ULL << vring), std::memory_order_relaxed);
    return 0;
}

namespace {
const rte_vhost_device_ops* device_ops() {
    static const rte_vhost_device_ops ops = [] {
        rte_vhost_device_ops o{};
        o.new_device = VhostPort::on_new_device;
        o.destroy_device = VhostPort::on_destroy_device;
        o.vring_state_changed = VhostPort::on_vring_state_changed;
        return o;
    }();
    return &ops;
}
}  // namespace

}  // namespace calyx::io
