#include "vm_peer.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <mutex>
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

namespace calyx::test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::atomic<bool> g_eal_up{false};
std::atomic<unsigned> g_next_vdev{0};

constexpr uint16_t kBurst = 32;
constexpr unsigned kPoolSize = 2047;  // per VM: rx ring (256) + tx ring (256) + slack

// Shut down every unix socket of this process that is bound or connected to `path`. A
// virtio-user PMD blocked on its vhost-user socket (in accept() waiting for a backend, or in
// recv() waiting for the reply of a backend that hangs) then sees EOF or an error and fails the
// operation instead of hanging the test. Descriptors stay open: the PMD closes them.
int shutdown_sockets_at(const std::string& path) {
    int n = 0;
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
        if (at_path(::getsockname) || at_path(::getpeername)) {
            ::shutdown(fd, SHUT_RDWR);
            ++n;
        }
    }
    return n;
}

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
        fmt::format("path={},queues=1,queue_size={},server={},mac={}", opts_.socket,
                    opts_.queue_size, opts_.server ? 1 : 0, mac_text(opts_.mac));
    // The PMD binds a server socket itself; a leftover file from an earlier run fails bind.
    if (opts_.server) ::unlink(opts_.socket.c_str());
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
    // Link-state interrupts: the PMD then notices a backend that goes away, and (in server mode)
    // accepts the reconnecting backend from the EAL interrupt thread, as QEMU would. Without
    // them a server-mode virtio-user only reconnects when the application reads the link.
    conf.intr_conf.lsc = 1;
    if (int r = rte_eth_dev_configure(port_id_, 1, 1, &conf); r < 0)
        return fail("rte_eth_dev_configure", r);
    if (int r = rte_eth_rx_queue_setup(port_id_, 0, opts_.queue_size, SOCKET_ID_ANY, nullptr,
                                       pool_);
        r < 0)
        return fail("rte_eth_rx_queue_setup", r);
    if (int r = rte_eth_tx_queue_setup(port_id_, 0, opts_.queue_size, SOCKET_ID_ANY, nullptr);
        r < 0)
        return fail("rte_eth_tx_queue_setup", r);
    if (int r = rte_eth_dev_start(port_id_); r < 0) return fail("rte_eth_dev_start", r);
    if (watchdog.fired()) return fail("start-up", ETIMEDOUT);
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
    pending_.clear();
    if (opts_.server) ::unlink(opts_.socket.c_str());
}

bool VmPeer::send(const Bytes& frame) {
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
    while (rte_eth_tx_burst(port_id_, 0, &m, 1) == 0) {
        if (Clock::now() > deadline) {
            rte_pktmbuf_free(m);
            return false;
        }
        std::this_thread::sleep_for(1ms);
    }
    ++sent_;
    return true;
}

unsigned VmPeer::poll(std::deque<Bytes>& out) {
    if (!attached_) return 0;
    rte_mbuf* pkts[kBurst];
    const uint16_t n = rte_eth_rx_burst(port_id_, 0, pkts, kBurst);
    for (uint16_t i = 0; i < n; ++i) {
        Bytes b(rte_pktmbuf_pkt_len(pkts[i]));
        const void* d = rte_pktmbuf_read(pkts[i], 0, static_cast<uint32_t>(b.size()), b.data());
        if (d != b.data()) std::memcpy(b.data(), d, b.size());
        rte_pktmbuf_free(pkts[i]);
        out.push_back(std::move(b));
        ++received_;
    }
    return n;
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
    if (!attached_) return false;
    rte_eth_link link{};
    if (rte_eth_link_get_nowait(port_id_, &link) != 0) return false;
    return link.link_status == RTE_ETH_LINK_UP;
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
    }
    return s;
}

}  // namespace calyx::test
