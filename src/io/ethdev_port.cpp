#include "io/ethdev_port.hpp"

#include <linux/if_packet.h>
#include <net/if.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <optional>

#include <fmt/format.h>
#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "calyx/overloaded.hpp"

namespace calyx::io {
namespace {

// Descriptors per queue. net_tap pins one mbuf per rx descriptor (a scatter chain for
// jumbo frames calyx does not enable), so a small ring is enough there; net_af_packet sizes
// its rings from its own devargs and ignores these.
constexpr uint16_t kNicRxDescriptors = 1024;
constexpr uint16_t kNicTxDescriptors = 1024;
constexpr uint16_t kVdevRxDescriptors = 64;
constexpr uint16_t kVdevTxDescriptors = 512;

std::atomic<unsigned> g_next_vdev{0};

std::string error_text(int rc) { return rte_strerror(rc < 0 ? -rc : rc); }

std::string mac_text(const MacAddr& m) {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m.bytes[0], m.bytes[1],
                       m.bytes[2], m.bytes[3], m.bytes[4], m.bytes[5]);
}

// A Linux interface name the PMDs accept and that cannot break their "key=value,..." devargs.
bool valid_interface_name(const std::string& name) {
    if (name.empty() || name.size() >= IFNAMSIZ) return false;
    for (char c : name)
        if (c == ',' || c == '=' || c == '/' || c == ':' || c == ' ' || c == '\t' || c == '\n')
            return false;
    return true;
}

// What makes this host different from others on the same provider network: the systemd
// machine id, else the host name.
std::string host_identity() {
    std::ifstream in("/etc/machine-id");
    std::string id;
    if (in && std::getline(in, id) && !id.empty()) return id;
    std::array<char, 256> host{};
    if (gethostname(host.data(), host.size() - 1) == 0) return host.data();
    return {};
}

// The tap's two addresses (see the header): calyx's end 02:h.., the Linux end 06:h.., both
// locally administered unicast, from FNV-1a over host identity and tap name.
struct TapMacs {
    MacAddr calyx;
    MacAddr linux_end;
};
TapMacs tap_macs(const std::string& tap_name) {
    uint64_t h = 0xcbf29ce484222325ULL;
    auto mix = [&](std::string_view s) {
        for (unsigned char c : s) {
            h ^= c;
            h *= 0x100000001b3ULL;
        }
    };
    mix(host_identity());
    mix(std::string_view("\0", 1));
    mix(tap_name);
    TapMacs m;
    for (int i = 1; i < 6; ++i) m.calyx.bytes[i] = static_cast<uint8_t>(h >> (8 * (i - 1)));
    m.linux_end = m.calyx;
    m.calyx.bytes[0] = 0x02;
    m.linux_end.bytes[0] = 0x06;
    return m;
}

// The flags of interface `name` in this process's network namespace, if it is still the
// interface that had index `index` (not moved away, renamed, or replaced by another).
std::optional<unsigned> interface_flags(const std::string& name, unsigned index) {
    if (index == 0 || if_nametoindex(name.c_str()) != index) return std::nullopt;
    const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::nullopt;
    ifreq ifr{};
    name.copy(ifr.ifr_name, IFNAMSIZ - 1);
    const int rc = ioctl(fd, SIOCGIFFLAGS, &ifr);
    close(fd);
    if (rc != 0) return std::nullopt;
    return static_cast<unsigned short>(ifr.ifr_flags);
}

// net_af_packet's sockets bound to interface `index` (this process has no others). A packet
// socket keeps an ENETDOWN pending from a bind to a down interface, or from the interface
// going down, and net_af_packet's transmit kick (sendto) returns it once: the frames it had
// queued then stay in the ring until the next transmit on that queue, however much later.
// Reading SO_ERROR consumes the error; done when the interface is (again) up.
void clear_packet_socket_errors(unsigned index) {
    std::error_code ec;
    for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end;
         it.increment(ec)) {
        int fd = -1;
        const std::string name = it->path().filename().string();
        if (std::from_chars(name.data(), name.data() + name.size(), fd).ec != std::errc{}) continue;
        sockaddr_ll addr{};
        socklen_t len = sizeof(addr);
        if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
            addr.sll_family != AF_PACKET || static_cast<unsigned>(addr.sll_ifindex) != index)
            continue;
        int err = 0;
        len = sizeof(err);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    }
}

// net_tap has the kernel raise a real-time signal (SIGRTMIN+1 in 22.11) for every packet it
// queues to the tap, as a wake-up hint for rx polls. Should those pile up beyond
// RLIMIT_SIGPENDING (e.g. the signal blocked in every thread), the kernel falls back to SIGIO,
// whose default action ends the process. calyx uses no SIGIO, so a default one is ignored.
void ignore_default_sigio() {
    struct sigaction sa{};
    if (sigaction(SIGIO, nullptr, &sa) != 0 || (sa.sa_flags & SA_SIGINFO) ||
        sa.sa_handler != SIG_DFL)
        return;
    sa = {};
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGIO, &sa, nullptr);
}

}  // namespace

std::expected<std::unique_ptr<EthdevPort>, std::string> EthdevPort::open(
    uint16_t slot, const config::UplinkConfig& cfg, rte_mempool* pool, uint16_t queues,
    std::optional<MacAddr> linux_mac, std::string_view role) {
    std::unique_ptr<EthdevPort> port(new EthdevPort(slot, cfg.port));
    // From here on the destructor undoes whatever was done, so every error path just returns.
    auto fail = [&](std::string what) -> std::unexpected<std::string> {
        const std::string& dev = port->device_name_;
        std::string who = fmt::format("{} {} {}", role, config::type_name(cfg.port),
                                      port->iface_.empty() ? dev : port->iface_);
        if (!port->iface_.empty() && !dev.empty()) who += fmt::format(" ({})", dev);
        return std::unexpected(fmt::format("{}: {}", who, what));
    };
    if (queues == 0) return fail("at least one queue is needed");
    if (pool == nullptr) return fail("no mbuf pool");

    constexpr char kUnusableInterfaceName[] =
        "not a usable interface name (1 to 15 characters, no , = / : or spaces)";
    // Per kind: the Linux interface or socket, the ethdev's name and the vdev's arguments
    // (none for pci: EAL probed the device at start).
    using Devargs = std::expected<std::string, std::string>;
    const Devargs devargs = std::visit(
        Overloaded{
            [&](const config::TapPort& tap) -> Devargs {
                port->iface_ = tap.name;
                if (!valid_interface_name(tap.name))
                    return fail(kUnusableInterfaceName);
                // TUNSETIFF would attach to an existing tap of that name instead of creating one.
                if (if_nametoindex(tap.name.c_str()) != 0)
                    return fail("an interface of that name already exists");
                ignore_default_sigio();
                const TapMacs macs = tap_macs(tap.name);
                port->mac_ = macs.calyx;
                port->device_name_ = fmt::format("net_tap_calyx{}", g_next_vdev++);
                return fmt::format("iface={},mac={}", tap.name, mac_text(linux_mac.value_or(macs.linux_end)));
            },
            [&](const config::AfPacketPort& afp) -> Devargs {
                port->iface_ = afp.iface;
                if (!valid_interface_name(afp.iface))
                    return fail(kUnusableInterfaceName);
                port->if_index_ = if_nametoindex(afp.iface.c_str());
                if (port->if_index_ == 0)
                    return fail("no such interface in calyx's network namespace");
                port->device_name_ = fmt::format("net_af_packet_calyx{}", g_next_vdev++);
                // One packet socket per queue pair; the PMD joins them in a PACKET_FANOUT group.
                return fmt::format("iface={},qpairs={}", afp.iface, queues);
            },
            [&](const config::PciPort& pci) -> Devargs {
                port->device_name_ = pci.address;
                return std::string{};
            },
            [&](const config::VhostUserPort& vhost) -> Devargs {
                port->iface_ = vhost.socket;
                // A socket left by an earlier calyx would make bind() fail; a non-socket is not
                // ours.
                struct stat st{};
                if (lstat(vhost.socket.c_str(), &st) == 0) {
                    if (!S_ISSOCK(st.st_mode)) return fail("exists and is not a socket");
                    unlink(vhost.socket.c_str());
                }
                port->device_name_ = fmt::format("net_vhost_calyx{}", g_next_vdev++);
                // Plain frames as on instance ports: no segmentation offload for calyx to undo.
                return fmt::format("iface={},queues={},tso=0", vhost.socket, queues);
            }},
        cfg.port);
    if (!devargs) return std::unexpected(devargs.error());

    const bool nic = std::holds_alternative<config::PciPort>(cfg.port);
    if (nic) {
        if (rte_eth_dev_get_port_by_name(port->device_name_.c_str(), &port->port_id_) != 0)
            return fail(fmt::format(
                "no ethdev port of that name: EAL must be started with -a {} (eal_arguments does "
                "that for a pci uplink) and the device bound to a DPDK driver (vfio-pci); a "
                "port closed earlier in this process cannot be opened again",
                port->device_name_));
    } else {
        // rte_vdev_init through EAL's generic hotplug call: the vdev bus is a PMD directory
        // library that pkg-config's libdpdk does not link, so its own API is out of reach.
        const int rc = rte_eal_hotplug_add("vdev", port->device_name_.c_str(), devargs->c_str());
        if (rc != 0)
            return fail(fmt::format("creating vdev {} ({}) failed: {}", port->device_name_,
                                    *devargs,
                                    rc < -1 ? error_text(rc) : "the PMD refused (see its log)"));
        port->vdev_created_ = true;
        if (rte_eth_dev_get_port_by_name(port->device_name_.c_str(), &port->port_id_) != 0)
            return fail("the vdev was created but has no ethdev port");
    }
    port->port_valid_ = true;
    const bool tap = std::holds_alternative<config::TapPort>(cfg.port);
    if (tap) port->if_index_ = if_nametoindex(port->iface_.c_str());
    const uint16_t id = port->port_id_;

    rte_eth_dev_info info{};
    if (int rc = rte_eth_dev_info_get(id, &info); rc != 0)
        return fail(fmt::format("rte_eth_dev_info_get failed: {}", error_text(rc)));
    if (queues > info.max_rx_queues || queues > info.max_tx_queues)
        return fail(fmt::format("{} queues requested (one per worker), the device has at most {} "
                                "rx and {} tx queues",
                                queues, info.max_rx_queues, info.max_tx_queues));
    rte_eth_conf conf{};
    // Spread flows over the workers' queues where the device hashes in hardware (NICs). The
    // tap and af_packet spread in the kernel instead and advertise no (usable) RSS here.
    const uint64_t rss = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) &
                         info.flow_type_rss_offloads;
    if (queues > 1 && rss != 0 && nic) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf = rss;
    }
    // Link state is polled by refresh_link(). net_vhost also reports its peer's arrival at
    // once (from the vhost thread), so the first packets after a connect are not refused.
    const bool vhost = std::holds_alternative<config::VhostUserPort>(cfg.port);
    if (vhost) conf.intr_conf.lsc = 1;
    if (int rc = rte_eth_dev_configure(id, queues, queues, &conf); rc != 0)
        return fail(fmt::format("rte_eth_dev_configure({0} rx, {0} tx queues) failed: {1}", queues,
                                error_text(rc)));
    uint16_t rx_desc = nic ? kNicRxDescriptors : kVdevRxDescriptors;
    uint16_t tx_desc = nic ? kNicTxDescriptors : kVdevTxDescriptors;
    if (int rc = rte_eth_dev_adjust_nb_rx_tx_desc(id, &rx_desc, &tx_desc); rc != 0)
        return fail(fmt::format("rte_eth_dev_adjust_nb_rx_tx_desc failed: {}", error_text(rc)));
    const int socket = rte_eth_dev_socket_id(id);  // SOCKET_ID_ANY (-1) for vdevs
    for (uint16_t q = 0; q < queues; ++q) {
        if (int rc = rte_eth_rx_queue_setup(id, q, rx_desc, static_cast<unsigned>(socket),
                                            nullptr, pool);
            rc != 0)
            return fail(fmt::format("rte_eth_rx_queue_setup(queue {}, {} descriptors) failed: {}",
                                    q, rx_desc, error_text(rc)));
        if (int rc = rte_eth_tx_queue_setup(id, q, tx_desc, static_cast<unsigned>(socket), nullptr);
            rc != 0)
            return fail(fmt::format("rte_eth_tx_queue_setup(queue {}, {} descriptors) failed: {}",
                                    q, tx_desc, error_text(rc)));
    }
    if (vhost) {
        if (int rc = rte_eth_dev_callback_register(id, RTE_ETH_EVENT_INTR_LSC, on_link_event, port.get()); rc != 0)
            return fail(fmt::format("registering for link events failed: {}", error_text(rc)));
        port->lsc_registered_ = true;
    }
    port->started_ = true;  // before the start: a link event may come at once
    if (int rc = rte_eth_dev_start(id); rc != 0) {
        port->started_ = false;
        return fail(fmt::format("rte_eth_dev_start failed: {}", error_text(rc)));
    }
    port->queues_ = queues;
    if (!tap) {
        rte_ether_addr addr{};
        if (int rc = rte_eth_macaddr_get(id, &addr); rc != 0)
            return fail(fmt::format("rte_eth_macaddr_get failed: {}", error_text(rc)));
        std::copy(std::begin(addr.addr_bytes), std::end(addr.addr_bytes), port->mac_.bytes.begin());
    }
    const bool up = port->read_link();
    if (up && std::holds_alternative<config::AfPacketPort>(cfg.port))
        clear_packet_socket_errors(port->if_index_);
    port->up_.store(up, std::memory_order_relaxed);
    return port;
}

int EthdevPort::on_link_event(uint16_t, rte_eth_event_type, void* self, void*) {
    static_cast<EthdevPort*>(self)->refresh_link();
    return 0;
}

EthdevPort::~EthdevPort() {
    if (lsc_registered_)
        (void)rte_eth_dev_callback_unregister(port_id_, RTE_ETH_EVENT_INTR_LSC, on_link_event, this);
    up_.store(false, std::memory_order_relaxed);
    // Failures here leave nothing to undo: the next step releases the device regardless.
    if (started_) (void)rte_eth_dev_stop(port_id_);
    if (port_valid_) (void)rte_eth_dev_close(port_id_);
    // For net_tap this closes the last tun descriptors: the kernel deletes the interface, in
    // whichever network namespace it is by now.
    if (vdev_created_) (void)rte_eal_hotplug_remove("vdev", device_name_.c_str());
}

uint16_t EthdevPort::rx(rte_mbuf** pkts, uint16_t n, uint16_t queue, uint16_t& refused) noexcept {
    refused = 0;
    return rte_eth_rx_burst(port_id_, queue, pkts, n);
}

uint16_t EthdevPort::tx(rte_mbuf** pkts, uint16_t n, uint16_t queue) noexcept {
    return rte_eth_tx_burst(port_id_, queue, pkts, n);
}

void EthdevPort::refresh_link() {
    const bool up = read_link();
    if (up_.load(std::memory_order_relaxed) == up) return;
    // Before workers see the link up (see clear_packet_socket_errors). A down and up between
    // two refreshes goes unseen: its first transmit per queue may wait for the next one.
    if (up && std::holds_alternative<config::AfPacketPort>(kind_))
        clear_packet_socket_errors(if_index_);
    up_.store(up, std::memory_order_relaxed);
    link_changes_.fetch_add(1, std::memory_order_relaxed);
}

bool EthdevPort::read_link() const {
    if (!started_) return false;
    const auto ethdev_link_up = [this] {
        rte_eth_link link{};
        return rte_eth_link_get_nowait(port_id_, &link) == 0 && link.link_status == RTE_ETH_LINK_UP;
    };
    return std::visit(
        Overloaded{
            [&](const config::AfPacketPort&) {
                // net_af_packet 22.11 reports its link up from start to stop whatever the
                // interface does, so ask the kernel. A vanished or replaced interface leaves the
                // sockets dead.
                const auto flags = interface_flags(iface_, if_index_);
                return flags && (*flags & IFF_UP) && (*flags & IFF_RUNNING);
            },
            [&](const config::TapPort&) {
                // Not visible here: moved to another namespace (or renamed), where calyx cannot
                // look; the tun queues still carry frames, so the uplink counts as connected.
                const auto flags = interface_flags(iface_, if_index_);
                return !flags || (*flags & IFF_UP);
            },
            [&](const config::PciPort&) { return ethdev_link_up(); },  // the physical link
            // Up while the peer has its queues running.
            [&](const config::VhostUserPort&) { return ethdev_link_up(); }},
        kind_);
}

}  // namespace calyx::io
