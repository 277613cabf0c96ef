#include "vm_peer.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <rte_bus_vdev.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "calyx/headers.hpp"

// Link state and the EAL interrupt thread
// ------------------------------------------
// With link-state interrupts on (intr_conf.lsc = 1), DPDK 22.11's virtio-user PMD runs part of
// its connection handling on the EAL interrupt thread, concurrently with the thread that owns
// the port, and that raced with detach(): the client-mode tests occasionally died with
// "PANIC in eal_intr_thread_main(): Error adding fd N epoll_ctl, Bad file descriptor" (or a
// segfault). Restarting calyx under attached VMs and detaching them at once reproduces it
// within a few rounds.
//
//  - virtio_dev_start() registers virtio_interrupt_handler for the port's vhost-user socket
//    (the connection, or in server mode the listening socket while no backend is connected).
//    The interrupt thread's sources are keyed by descriptor number; every registration change
//    makes it rebuild its epoll set from them, and a source whose descriptor is closed makes
//    that rebuild panic (rte_panic on EBADF in eal_intr_thread_main).
//  - When the backend goes away (calyx stopped or restarted), the socket becomes readable
//    (EOF). The handler reads the link (vhost_user_update_link_state), sees EOF and, because it
//    may not unregister itself, queues virtio_user_dev_delayed_disconnect_handler with
//    rte_eal_alarm_set(1 us). EOF is level-triggered and the handler does not consume it, so it
//    runs again and again, queueing one alarm per run, until the first alarm runs (5 were seen
//    queued for one port). Each alarm unregisters the callback under the descriptor the port
//    has at that moment and, in server mode, closes the connection and registers the callback
//    again, now for the listening socket. A backend connecting again makes the handler accept
//    it (virtio_user_dev_server_reconnect, a whole vhost-user handshake on the interrupt
//    thread) and queue virtio_user_dev_delayed_intr_reconfig_handler, which moves the callback
//    back to the new connection.
//  - detach() on the test thread: virtio_dev_stop() unregisters the callback, ignoring failure:
//    -EAGAIN while the handler runs, -ENOENT when an alarm has just moved it to another
//    descriptor. Then virtio_user_dev_uninit() frees the interrupt handle and closes the
//    descriptors without unregistering anything, and the port's alarms are never cancelled:
//    queued ones still run after the close (and, with the port id and dev_private reused by the
//    next VM, act on that port instead), re-registering the callback for a descriptor that is
//    closed, or about to be.
//  Any of these leaves a source with a closed descriptor; the next registration change (the
//  next VM attaching, or EAL cleanup at exit) panics. The window is wide here: the interrupt
//  thread is a control thread pinned to the CPU that calyx's worker busy-polls, so its 1 us
//  alarms run milliseconds late.
//
// With lsc = 0 the PMD registers nothing at start and virtio_dev_stop() unregisters nothing,
// but the same alarm is still queued by any link read (rte_eth_link_get*, which then calls
// into the PMD) that finds the connection dead, and in server mode that alarm *registers*
// the callback, which nothing ever unregisters: that is why merely setting lsc = 0 made every
// run panic at exit once a dead link had been read. So the harness keeps lsc = 0 and never
// reads the link through the PMD after start (link_up() inspects the socket itself): the
// interrupt thread then never touches a VM NIC, and stop/close run on the test thread alone.
// The price: a server-mode VM does not accept a backend that reconnects to its socket; like a
// guest resetting its NIC, the test detaches it and attaches it again.

namespace calyx::test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::atomic<bool> g_eal_up{false};
std::atomic<unsigned> g_next_vdev{0};

constexpr uint16_t kBurst = 32;
constexpr unsigned kPoolSize = 2047;  // per VM: rx ring (256) + tx ring (256) + slack

// The unix sockets of this process that are bound or connected to `path`; with
// `connections_only`, not the listening one.
std::vector<int> sockets_at(const std::string& path, bool connections_only) {
    std::vector<int> fds;
    std::error_code ec;
    for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end;
         it.increment(ec)) {
        int fd = -1;
        try {
            fd = std::stoi(it->path().filename().string());
        } catch (...) {
            continue;
        }
        struct stat st{};
        if (::fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
        auto at_path = [&](int (*get)(int, sockaddr*, socklen_t*)) {
            sockaddr_un a{};
            socklen_t len = sizeof(a);
            if (get(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0 || a.sun_family != AF_UNIX)
                return false;
            return std::strncmp(a.sun_path, path.c_str(), sizeof(a.sun_path)) == 0;
        };
        if (!at_path(::getsockname) && !at_path(::getpeername)) continue;
        if (connections_only) {
            int listening = 0;
            socklen_t len = sizeof(listening);
            if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening)
                continue;
        }
        fds.push_back(fd);
    }
    return fds;
}

// Shut down every unix socket of this process that is bound or connected to `path`. A
// virtio-user PMD blocked on its vhost-user socket (in accept() waiting for a backend, or in
// recv() waiting for the reply of a backend that hangs) then sees EOF or an error and fails the
// operation instead of hanging the test. Descriptors stay open: the PMD closes them.
int shutdown_sockets_at(const std::string& path) {
    const auto fds = sockets_at(path, false);
    for (int fd : fds) ::shutdown(fd, SHUT_RDWR);
    return static_cast<int>(fds.size());
}

// Whether the vhost-user connection on `fds` is alive, tested the way the PMD tests it
// (vhost_user_update_link_state: a peek that sees EOF or an error means the peer is gone), but
// without the PMD's side effects (see "Link state" above).
bool connection_alive(const std::vector<int>& fds) {
    if (fds.empty()) return false;
    for (int fd : fds) {
        char byte;
        const ssize_t r = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return false;
    }
    return true;
}

// Ports whose teardown would be unsafe (see VmPeer::start): kept open until the process ends.
std::mutex g_quarantine_mutex;
std::vector<std::string> g_quarantined;

// Bounds a blocking control operation on a VM's vhost-user socket (hotplug, start, stop,
// close): after `timeout` it shuts that socket down, every 100 ms, until the operation returns.
class SocketWatchdog {
public:
    SocketWatchdog(std::string path, std::chrono::milliseconds timeout)
        : path_(std::move(path)), thread_([this, timeout] { run(timeout); }) {}
    ~SocketWatchdog() {
        {
            std::lock_guard lock(mu_);
            done_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    bool fired() const { return fired_; }

private:
    void run(std::chrono::milliseconds timeout) {
        std::unique_lock lock(mu_);
        if (cv_.wait_for(lock, timeout, [this] { return done_; })) return;
        fired_ = true;
        while (!done_) {
            lock.unlock();
            shutdown_sockets_at(path_);
            lock.lock();
            cv_.wait_for(lock, 100ms, [this] { return done_; });
        }
    }

    std::string path_;
    std::mutex mu_;
    std::condition_variable cv_;
    bool done_ = false;
    std::atomic<bool> fired_{false};
    std::thread thread_;
};

std::string mac_text(const MacAddr& m) {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m.bytes[0], m.bytes[1],
                       m.bytes[2], m.bytes[3], m.bytes[4], m.bytes[5]);
}

std::string ip_text(Be32 a) {
    const uint32_t v = a.host();
    return fmt::format("{}.{}.{}.{}", v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string VmPeerEal::file_prefix() { return fmt::format("calyx-it-peer-{}", ::getpid()); }

std::vector<std::string> VmPeerEal::default_args() {
    return {
        "--no-pci",   // never touch the machine's own NIC
        "--no-huge",  // memfd-backed memory, shareable with the vhost side
        "-m", "256",  // one VM NIC needs ~5 MB (mbufs, rings); a few at once fit easily
        // --in-memory is refused with --no-huge (legacy memory); these two keep this EAL apart
        // from calyx's and from other test runs instead.
        "--no-shconf", "--file-prefix", file_prefix(),
        "--no-telemetry",
        // One lcore, on CPU 0: with 2 CPUs, calyx's worker polls on CPU 1 and its main lcore
        // (control only) shares CPU 0 with the test.
        "--lcores", "0@0",
        "--log-level", "warning",
    };
}

VmPeerEal::VmPeerEal(std::vector<std::string> extra_args) {
    if (g_eal_up.exchange(true)) throw std::runtime_error("VmPeerEal: EAL already initialized");
    // virtio-user writes to its vhost-user socket without MSG_NOSIGNAL: when the backend dies
    // (calyx killed, or a connection abandoned) the default SIGPIPE would kill the whole test
    // binary. Children get the default back (ChildProcess::spawn).
    std::signal(SIGPIPE, SIG_IGN);
    std::vector<std::string> args{"calyx-integration"};
    for (auto& a : default_args()) args.push_back(a);
    for (auto& a : extra_args) args.push_back(a);
    // For debugging the harness, e.g. CALYX_IT_EAL_ARGS="--log-level=pmd.net.virtio.*:debug".
    if (const char* env = std::getenv("CALYX_IT_EAL_ARGS"); env && *env) {
        std::istringstream words(env);
        for (std::string w; words >> w;) args.push_back(w);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (rte_eal_init(static_cast<int>(args.size()), argv.data()) < 0) {
        g_eal_up = false;
        throw std::runtime_error(
            fmt::format("VmPeerEal: rte_eal_init failed: {}", rte_strerror(rte_errno)));
    }
}

VmPeerEal::~VmPeerEal() {
    const std::filesystem::path runtime_dir = rte_eal_get_runtime_dir();
    rte_eal_cleanup();
    g_eal_up = false;
    // Only this process's own directory (named by its unique --file-prefix).
    std::error_code ec;
    if (runtime_dir.filename() == file_prefix()) std::filesystem::remove_all(runtime_dir, ec);
}

bool VmPeerEal::initialized() { return g_eal_up; }

// ---------------------------------------------------------------------------------------------

std::expected<std::unique_ptr<VmPeer>, std::string> VmPeer::attach(const VmPeerOptions& opts) {
    if (!VmPeerEal::initialized()) return std::unexpected("VmPeer: no VmPeerEal in this process");
    std::unique_ptr<VmPeer> peer(new VmPeer());
    peer->opts_ = opts;
    peer->name_ = fmt::format("net_virtio_user{}", g_next_vdev++);
    if (auto r = peer->start(); !r) return std::unexpected(r.error());
    return peer;
}

std::expected<void, std::string> VmPeer::start() {
    const std::string args =
        fmt::format("path={},queues={},queue_size={},server={},mac={}", opts_.socket, opts_.queues,
                    opts_.queue_size, opts_.server ? 1 : 0, mac_text(opts_.mac));
    // The PMD binds a server socket itself; a leftover file from an earlier run fails bind.
    if (opts_.server) ::unlink(opts_.socket.c_str());
    // Connections on this path that are not this port's (an earlier VM's, not yet closed).
    const std::vector<int> others = sockets_at(opts_.socket, true);
    // Everything below talks to the backend and waits for its answers without a timeout of
    // its own: a backend that never connects or stops answering would hang the test.
    SocketWatchdog watchdog(opts_.socket, opts_.connect_timeout);
    auto hung = [&] {
        return watchdog.fired()
                   ? fmt::format(" (gave up after {} ms: {})", opts_.connect_timeout.count(),
                                 opts_.server ? "no backend connected, or it stopped answering"
                                              : "the backend stopped answering")
                   : std::string{};
    };
    if (int rc = rte_eal_hotplug_add("vdev", name_.c_str(), args.c_str()); rc < 0) {
        if (opts_.server) ::unlink(opts_.socket.c_str());
        return std::unexpected(fmt::format("{}: rte_eal_hotplug_add(\"{}\") failed: {}{}", name_,
                                           args, rte_strerror(-rc), hung()));
    }
    auto fail = [&](std::string what, int err) -> std::expected<void, std::string> {
        std::string msg = fmt::format("{}: {}: {}{}", name_, what,
                                      rte_strerror(err < 0 ? -err : err), hung());
        rte_eth_dev_stop(port_id_);  // a started port cannot be closed
        rte_eth_dev_close(port_id_);
        rte_eal_hotplug_remove("vdev", name_.c_str());
        if (pool_) rte_mempool_free(pool_);
        pool_ = nullptr;
        if (opts_.server) ::unlink(opts_.socket.c_str());
        return std::unexpected(std::move(msg));
    };
    if (rte_eth_dev_get_port_by_name(name_.c_str(), &port_id_) != 0) {
        rte_eal_hotplug_remove("vdev", name_.c_str());
        return std::unexpected(fmt::format("{}: no ethdev after hotplug", name_));
    }
    pool_ = rte_pktmbuf_pool_create((name_ + "_mp").c_str(), kPoolSize, 64, 0,
                                    RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
    if (!pool_) return fail("rte_pktmbuf_pool_create", rte_errno);
    rte_eth_conf conf{};
    // Link state: no interrupts, and never ask the PMD. See "Link state and the EAL interrupt
    // thread" at the top of this file.
    conf.intr_conf.lsc = 0;
    if (int r = rte_eth_dev_configure(port_id_, opts_.queues, opts_.queues, &conf); r < 0)
        return fail("rte_eth_dev_configure", r);
    for (uint16_t q = 0; q < opts_.queues; ++q) {
        if (int r = rte_eth_rx_queue_setup(port_id_, q, opts_.queue_size, SOCKET_ID_ANY, nullptr,
                                           pool_);
            r < 0)
            return fail("rte_eth_rx_queue_setup", r);
        if (int r = rte_eth_tx_queue_setup(port_id_, q, opts_.queue_size, SOCKET_ID_ANY, nullptr);
            r < 0)
            return fail("rte_eth_tx_queue_setup", r);
    }
    if (int r = rte_eth_dev_start(port_id_); r < 0) return fail("rte_eth_dev_start", r);
    // rte_eth_dev_start read the link through the PMD (the one read this harness cannot avoid).
    // Had the connection already died, that read queued the PMD's disconnect alarm, which may
    // register the PMD's interrupt callback on a descriptor that closing the port would close:
    // the next rebuild of the interrupt thread's epoll set would then panic. Such a port is
    // left open until the process ends instead.
    for (int fd : sockets_at(opts_.socket, true))
        if (std::find(others.begin(), others.end(), fd) == others.end()) connection_.push_back(fd);
    if (watchdog.fired() || !connection_alive(connection_)) {
        std::string msg =
            fmt::format("{}: the vhost-user connection died during start-up{}", name_, hung());
        std::lock_guard lock(g_quarantine_mutex);
        g_quarantined.push_back(name_);
        pool_ = nullptr;  // still in use by the port
        return std::unexpected(std::move(msg));
    }
    attached_ = true;
    return {};
}

VmPeer::~VmPeer() { detach(); }

void VmPeer::detach() {
    if (!attached_) return;
    attached_ = false;
    // Stopping sends vhost-user messages too (GET_VRING_BASE waits for an answer).
    SocketWatchdog watchdog(opts_.socket, opts_.control_timeout);
    rte_eth_dev_stop(port_id_);
    rte_eth_dev_close(port_id_);
    rte_eal_hotplug_remove("vdev", name_.c_str());
    rte_mempool_free(pool_);
    pool_ = nullptr;
    rte_pktmbuf_free(chain_segment_);  // the port is closed: no segment refers to it any more
    chain_segment_ = nullptr;
    rte_mempool_free(chain_pool_);
    chain_pool_ = nullptr;
    pending_.clear();
    connection_.clear();
    if (opts_.server) ::unlink(opts_.socket.c_str());
}

bool VmPeer::send(const Bytes& frame, uint16_t queue) {
    if (!attached_) return false;
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    if (!m) return false;
    char* p = rte_pktmbuf_append(m, static_cast<uint16_t>(frame.size()));
    if (!p) {
        rte_pktmbuf_free(m);
        return false;
    }
    std::memcpy(p, frame.data(), frame.size());
    const auto deadline = Clock::now() + 100ms;
    while (rte_eth_tx_burst(port_id_, queue, &m, 1) == 0) {
        if (Clock::now() > deadline) {
            rte_pktmbuf_free(m);
            return false;
        }
        std::this_thread::sleep_for(1ms);
    }
    ++sent_;
    return true;
}

bool VmPeer::send_chain(const Bytes& frame, uint16_t extra_segments, uint16_t segment_len, uint16_t queue) {
    if (!attached_ || segment_len > 65000) return false;
    if (!chain_segment_) {
        chain_pool_ = rte_pktmbuf_pool_create((name_ + "_big").c_str(), 1, 0, 0,
                                              static_cast<uint16_t>(65000 + RTE_PKTMBUF_HEADROOM), SOCKET_ID_ANY);
        if (!chain_pool_ || !(chain_segment_ = rte_pktmbuf_alloc(chain_pool_))) return false;
        std::memset(rte_pktmbuf_append(chain_segment_, 65000), 0xab, 65000);
    }
    rte_mbuf* head = rte_pktmbuf_alloc(pool_);
    if (!head) return false;
    std::memcpy(rte_pktmbuf_append(head, static_cast<uint16_t>(frame.size())), frame.data(), frame.size());
    for (uint16_t k = 0; k < extra_segments; ++k) {
        rte_mbuf* segment = rte_pktmbuf_alloc(pool_);
        if (!segment) {
            rte_pktmbuf_free(head);
            return false;
        }
        rte_pktmbuf_attach(segment, chain_segment_);
        rte_pktmbuf_trim(segment, static_cast<uint16_t>(65000 - segment_len));
        if (rte_pktmbuf_chain(head, segment) != 0) {
            rte_pktmbuf_free(segment);
            rte_pktmbuf_free(head);
            return false;
        }
    }
    const auto deadline = Clock::now() + 1000ms;
    while (rte_eth_tx_burst(port_id_, queue, &head, 1) == 0) {
        if (Clock::now() > deadline) {
            rte_pktmbuf_free(head);
            return false;
        }
        std::this_thread::yield();
    }
    ++sent_;
    return true;
}

unsigned VmPeer::poll(std::deque<Bytes>& out) {
    if (!attached_) return 0;
    rte_mbuf* pkts[kBurst];
    unsigned total = 0;
    for (uint16_t q = 0; q < opts_.queues; ++q) {
        const uint16_t n = rte_eth_rx_burst(port_id_, q, pkts, kBurst);
        for (uint16_t i = 0; i < n; ++i) {
            Bytes b(rte_pktmbuf_pkt_len(pkts[i]));
            const void* d = rte_pktmbuf_read(pkts[i], 0, static_cast<uint32_t>(b.size()), b.data());
            if (d != b.data()) std::memcpy(b.data(), d, b.size());
            rte_pktmbuf_free(pkts[i]);
            out.push_back(std::move(b));
            ++received_;
            ++received_by_queue_[q];
        }
        total += n;
    }
    return total;
}

std::optional<Bytes> VmPeer::receive(std::chrono::milliseconds timeout,
                                     const FramePredicate& pred) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        while (!pending_.empty()) {
            Bytes b = std::move(pending_.front());
            pending_.pop_front();
            if (!pred || pred(b)) return b;
            ++skipped_;
        }
        if (Clock::now() >= deadline) return std::nullopt;
        if (poll(pending_) == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
}

std::vector<Bytes> VmPeer::receive_all(std::chrono::milliseconds window,
                                       const FramePredicate& pred) {
    std::vector<Bytes> got;
    const auto deadline = Clock::now() + window;
    for (;;) {
        while (!pending_.empty()) {
            Bytes b = std::move(pending_.front());
            pending_.pop_front();
            if (!pred || pred(b))
                got.push_back(std::move(b));
            else
                ++skipped_;
        }
        if (Clock::now() >= deadline) return got;
        if (poll(pending_) == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
}

void VmPeer::drain() {
    skipped_ += pending_.size();
    pending_.clear();
    for (int idle = 0; idle < 3;) {
        if (poll(pending_) == 0) {
            ++idle;
            std::this_thread::sleep_for(1ms);
        }
        skipped_ += pending_.size();
        pending_.clear();
    }
}

std::optional<Bytes> VmPeer::request(const Bytes& frame, std::chrono::milliseconds timeout,
                                     const FramePredicate& pred,
                                     std::chrono::milliseconds interval) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        send(frame);
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        if (auto r = receive(std::min(interval, std::max(left, std::chrono::milliseconds(0))), pred))
            return r;
    }
    return std::nullopt;
}

bool VmPeer::link_up() const {
    // Not rte_eth_link_get*(): with link-state interrupts off, that calls into the PMD, which
    // on a dead connection arms its disconnect alarm (see the top of this file).
    return attached_ && connection_alive(connection_);
}

bool VmPeer::wait_link_up(std::chrono::milliseconds timeout) const {
    const auto deadline = Clock::now() + timeout;
    while (!link_up()) {
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(10ms);
    }
    return true;
}

// ---------------------------------------------------------------------------------------------

std::string describe_frame(const Bytes& frame) {
    auto* d = const_cast<uint8_t*>(frame.data());
    const size_t len = frame.size();
    auto* eth = header_at<EtherHdr>(d, len, 0);
    if (!eth) return fmt::format("runt frame ({} bytes)", len);
    std::string s = fmt::format("{} -> {} ", mac_text(eth->src), mac_text(eth->dst));
    const uint16_t type = eth->type.host();
    if (type == ethertype::kArp) {
        auto* a = header_at<ArpHdr>(d, len, sizeof(EtherHdr));
        if (!a) return s + "arp (truncated)";
        return s + fmt::format("arp {} who-has {} tell {} (sha {} tha {})",
                               a->oper.host() == 1 ? "request" : a->oper.host() == 2 ? "reply" : "op?",
                               ip_text(a->tpa), ip_text(a->spa), mac_text(a->sha),
                               mac_text(a->tha));
    }
    if (type != ethertype::kIpv4) return s + fmt::format("ethertype 0x{:04x} len {}", type, len);
    auto* ip = header_at<Ipv4Hdr>(d, len, sizeof(EtherHdr));
    if (!ip) return s + "ipv4 (truncated)";
    s += fmt::format("ipv4 {} -> {} ttl {} proto {} len {}", ip_text(ip->src), ip_text(ip->dst),
                     ip->ttl, ip->protocol, ip->total_length.host());
    const size_t l4 = sizeof(EtherHdr) + ip->header_length();
    if (ip->protocol == ipproto::kIcmp) {
        if (auto* ic = header_at<IcmpHdr>(d, len, l4))
            s += fmt::format(" icmp type {} code {} id {} seq {}", ic->type, ic->code,
                             ic->id.host(), ic->seq.host());
    } else if (ip->protocol == ipproto::kUdp) {
        if (auto* u = header_at<UdpHdr>(d, len, l4))
            s += fmt::format(" udp {} -> {}", u->src_port.host(), u->dst_port.host());
    } else if (ip->protocol == ipproto::kTcp) {
        if (auto* t = header_at<TcpHdr>(d, len, l4)) {
            std::string flags;
            for (auto [bit, c] : {std::pair{TcpHdr::kSyn, 'S'}, {TcpHdr::kAck, 'A'},
                                  {TcpHdr::kFin, 'F'}, {TcpHdr::kRst, 'R'}, {TcpHdr::kPsh, 'P'}})
                if (t->flags & bit) flags += c;
            s += fmt::format(" tcp {} -> {} [{}] seq {} ack {}", t->src_port.host(),
                             t->dst_port.host(), flags, t->seq.host(), t->ack.host());
        }
    }
    return s;
}

}  // namespace calyx::test
