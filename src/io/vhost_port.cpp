#include "io/vhost_port.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
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
// frames it can check and rewrite, so they are not offered to the guest. Nor are packed rings:
// refused frames are counted from the split ring's avail index (see rx).
constexpr uint64_t kRingPacked = 34;
constexpr uint64_t kDisabledFeatures = [] {
    using namespace virtio_feature;
    uint64_t bits = 0;
    for (uint64_t f : {kCsum, kGuestCsum, kGuestTso4, kGuestTso6, kGuestEcn, kGuestUfo, kHostTso4,
                       kHostTso6, kHostEcn, kHostUfo, kRingPacked})
        bits |= 1ULL << f;
    return bits;
}();

// Socket path -> port, for the vhost callbacks, which only get a vid. Control path only.
std::mutex registry_mutex;
std::map<std::string, VhostPort*> registry;

const rte_vhost_device_ops* device_ops();

// rte_vhost (22.11) serves every socket from one thread ("vhost-events") that poll()s its fds
// with a 1 s timeout and rebuilds the set between two polls; a server socket started after its
// poll began is only listened to once that poll returns (it wakes the thread for a new
// connection, not for a new listening socket). A guest reconnecting to a new calyx (a restart,
// a hand-over) would wait up to a second for nothing. A signal ends the poll (poll() is never
// restarted, whatever SA_RESTART says): after starting a server socket calyx sends one to that
// thread, whose handler does nothing. SA_RESTART: a message being read or written when it
// arrives is resumed, not failed (which would close that guest's connection).
constexpr const char* kVhostEventsThread = "vhost-events";
int vhost_wake_signal() { return SIGRTMIN + 2; }

void wake_vhost_events() {
    static std::once_flag handler;
    std::call_once(handler, [] {
        struct sigaction sa{};
        sa.sa_handler = [](int) {};
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(vhost_wake_signal(), &sa, nullptr);
    });
    std::error_code ec;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
        std::ifstream comm(task.path() / "comm");
        std::string name;
        std::getline(comm, name);
        if (name != kVhostEventsThread) continue;
        const auto tid = static_cast<pid_t>(std::stol(task.path().filename().string()));
        ::syscall(SYS_tgkill, ::getpid(), tid, vhost_wake_signal());
    }
}

// Whether something accepts connections on the Unix socket `path` (a live calyx, of this
// process or another).
bool someone_listens(const char* path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
    const bool listening = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::close(fd);
    return listening;
}

}  // namespace

std::expected<std::unique_ptr<VhostPort>, std::string> VhostPort::open(
    uint16_t slot, const config::PortConfig& cfg, rte_mempool* pool, rte_rcu_qsbr* grace, uint16_t workers) {
    std::unique_ptr<VhostPort> port(new VhostPort(slot, cfg, pool, grace, workers));
    const char* path = cfg.socket.c_str();
    // Claimed first, so that nothing below ever touches a socket another port serves (e.g. a
    // reload that changes a port in place: the live socket must survive its failure).
    {
        std::lock_guard lock(registry_mutex);
        if (registry.contains(cfg.socket))
            return std::unexpected(fmt::format(
                "{}: already served by a running port; a port's mode and queues cannot change while "
                "it keeps its socket (give it a new socket path, or remove the instance and add it back)",
                cfg.socket));
        registry[cfg.socket] = port.get();
    }
    auto unclaim = [&](std::string why) -> std::unexpected<std::string> {
        std::lock_guard lock(registry_mutex);
        registry.erase(cfg.socket);
        return std::unexpected(std::move(why));
    };
    // LINEARBUF: frames longer than one mbuf are refused, not chained (see the header).
    uint64_t flags = RTE_VHOST_USER_NET_COMPLIANT_OL_FLAGS | RTE_VHOST_USER_LINEARBUF_SUPPORT;
    if (cfg.mode == config::VhostMode::client) {
        flags |= RTE_VHOST_USER_CLIENT;  // reconnects by default
    } else {
        // A socket left by an earlier calyx would make bind() fail; a non-socket is not ours,
        // and one that somebody listens on is live.
        struct stat st{};
        if (lstat(path, &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) return unclaim(fmt::format("{}: exists and is not a socket", cfg.socket));
            if (someone_listens(path))
                return unclaim(fmt::format("{}: another process serves this socket (a second calyx?)", cfg.socket));
            unlink(path);
        }
    }
    auto fail = [&](const char* what) -> std::unexpected<std::string> {
        return std::unexpected(fmt::format("{}: {} failed", cfg.socket, what));
    };
    if (rte_vhost_driver_register(path, flags) != 0) return unclaim(fmt::format("{}: vhost-user registration failed", cfg.socket));
    port->registered_ = true;  // from here the destructor cleans up
    if (rte_vhost_driver_disable_features(path, kDisabledFeatures) != 0)
        return fail("disabling offload features");
    if (rte_vhost_driver_callback_register(path, device_ops()) != 0)
        return fail("callback registration");
    if (rte_vhost_driver_start(path) != 0) return fail("starting the socket");
    if (cfg.mode == config::VhostMode::server) wake_vhost_events();
    if (auto set = port->set_permissions(cfg); !set) return std::unexpected(set.error());
    return port;
}

std::expected<void, std::string> VhostPort::set_permissions(const config::PortConfig& cfg) {
    if (cfg_.mode != config::VhostMode::server) return {};
    const char* path = cfg_.socket.c_str();
    const uid_t uid = cfg.owner ? cfg.owner->id : static_cast<uid_t>(-1);
    const gid_t gid = cfg.group ? cfg.group->id : static_cast<gid_t>(-1);
    if ((cfg.owner || cfg.group) && ::chown(path, uid, gid) != 0)
        return std::unexpected(fmt::format("{}: cannot give the socket owner {} group {}: {}", cfg_.socket,
                                           cfg.owner ? cfg.owner->name : "(unchanged)",
                                           cfg.group ? cfg.group->name : "(unchanged)", std::strerror(errno)));
    if (cfg.socket_mode && ::chmod(path, *cfg.socket_mode) != 0)
        return std::unexpected(fmt::format("{}: cannot give the socket mode {:04o}: {}", cfg_.socket,
                                           *cfg.socket_mode, std::strerror(errno)));
    cfg_.owner = cfg.owner;
    cfg_.group = cfg.group;
    cfg_.socket_mode = cfg.socket_mode;
    return {};
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

uint16_t VhostPort::rx(rte_mbuf** pkts, uint16_t n, uint16_t queue, uint16_t& refused) noexcept {
    refused = 0;
    const int vid = vid_.load(std::memory_order_acquire);
    if (vid < 0) return 0;
    const uint16_t vring = guest_tx_vring(queue);
    const uint16_t got = rte_vhost_dequeue_burst(vid, vring, pool_, pkts, n);
    // rte_vhost ends a burst at a frame it refuses, so a full burst had none: its frames are
    // exactly what the avail index moved by. Otherwise ask the ring how far it moved.
    RxRing& ring = rx_rings_[queue];
    const uint64_t connection = connects_.load(std::memory_order_relaxed);
    if (got == n && ring.connection == connection) {
        ring.last_avail = static_cast<uint16_t>(ring.last_avail + got);
        return got;
    }
    uint16_t avail = 0, used = 0;
    if (rte_vhost_get_vring_base(vid, vring, &avail, &used) != 0) return got;
    if (ring.connection == connection) {
        // One burst consumes at most n descriptor chains; more means the ring was reset
        // under us (or a RARP frame after a migration was added to the burst): resync only.
        const auto consumed = static_cast<uint16_t>(avail - ring.last_avail);
        if (consumed > got && consumed <= n) refused = static_cast<uint16_t>(consumed - got);
    }
    ring.last_avail = avail;
    ring.connection = connection;
    return got;
}

uint16_t VhostPort::tx(rte_mbuf** pkts, uint16_t n, uint16_t queue) noexcept {
    const int vid = vid_.load(std::memory_order_acquire);
    if (vid < 0) return 0;
    const uint32_t ready = ready_rx_pairs_.load(std::memory_order_relaxed);
    const uint16_t done = tx_pairs_.send(queue, ready, [&](uint16_t pair) {
        return rte_vhost_enqueue_burst(vid, guest_rx_vring(pair), pkts, n);
    });
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
    // A new connection first (rx resynchronises its ring state on it), then the vid.
    port->connects_.fetch_add(1, std::memory_order_relaxed);
    port->vid_.store(vid, std::memory_order_release);
    return 0;
}

void VhostPort::on_destroy_device(int vid) {
    VhostPort* port = find(vid);
    if (!port) return;
    port->vid_.store(-1, std::memory_order_release);
    port->ready_rx_pairs_.store(0, std::memory_order_relaxed);
    // After the grace period no worker still holds the old vid inside a burst.
    rte_rcu_qsbr_synchronize(port->grace_, RTE_QSBR_THRID_INVALID);
}

int VhostPort::on_vring_state_changed(int vid, uint16_t vring, int ready) {
    // Only the ready set is recorded: a disabled transmit ring simply yields no packets, but
    // sending to a disabled receive ring would drop. (Calling rte_vhost_enable_guest_notification
    // here deadlocks: the library holds the ring's lock while it runs this callback.)
    VhostPort* port = find(vid);
    if (!port || vring % 2 != 0 || vring / 2 >= TxPairs::kMaxPairs) return 0;
    const uint32_t bit = 1u << (vring / 2);
    if (ready)
        port->ready_rx_pairs_.fetch_or(bit, std::memory_order_relaxed);
    else
        port->ready_rx_pairs_.fetch_and(~bit, std::memory_order_relaxed);
    return 0;
}

int VhostPort::on_new_connection(int vid) {
    if (VhostPort* port = find(vid)) port->sessions_.fetch_add(1, std::memory_order_release);
    return 0;
}

void VhostPort::on_destroy_connection(int vid) {
    if (VhostPort* port = find(vid)) port->sessions_.fetch_sub(1, std::memory_order_release);
}

namespace {
const rte_vhost_device_ops* device_ops() {
    static const rte_vhost_device_ops ops = [] {
        rte_vhost_device_ops o{};
        o.new_device = VhostPort::on_new_device;
        o.destroy_device = VhostPort::on_destroy_device;
        o.vring_state_changed = VhostPort::on_vring_state_changed;
        o.new_connection = VhostPort::on_new_connection;
        o.destroy_connection = VhostPort::on_destroy_connection;
        return o;
    }();
    return &ops;
}
}  // namespace

}  // namespace calyx::io
