// The uplink ethdev port (io/ethdev_port.hpp) against the Linux kernel, with real frames.
//
// A net_tap uplink is opened in this process; then, like an operator would, the test moves the
// tap's Linux end into a fresh network namespace and gives it 198.51.100.1/24. The port plays
// a host at 198.51.100.10 with its own mac():
//   - the namespace pings .10: the kernel's ARP request must arrive on the port;
//   - the port answers it and sends an ICMP echo request from .10: the kernel's echo reply
//     must arrive on the port.
//   - the namespace opens many TCP connections to .10: their SYNs, spread by the kernel over
//     the receive queues by flow hash, must arrive on every queue.
// Once with one queue, once with two (each tx queue sends, each rx queue receives). The same
// for an af_packet uplink on one end of a veth pair whose other end is in the namespace.
//
// Only the namespaces and interfaces the test creates are touched, never the machine's NIC.
// Every exit path closes the port first (the tap disappears) and then deletes the namespace.
// Needs root, iproute2 and ping; skipped otherwise.
#include <gtest/gtest.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "calyx/config.hpp"
#include "calyx/headers.hpp"
#include "calyx_process.hpp"
#include "netns.hpp"
#include "io/ethdev_port.hpp"
#include "support/frame_builder.hpp"

namespace calyx::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using io::EthdevPort;

const Ipv4Addr kNamespaceIp = Ipv4Addr::from_octets(198, 51, 100, 1);
const Ipv4Addr kPortIp = Ipv4Addr::from_octets(198, 51, 100, 10);
constexpr const char* kIp = kIpTool;

rte_mempool* g_pool = nullptr;

// What `ip -o link show` says about an interface.
struct LinkInfo {
    MacAddr mac;
    unsigned mtu = 0;
    bool up = false;
};
std::optional<LinkInfo> link_info(const std::string& netns, const std::string& iface) {
    const auto r = sh(fmt::format("{} {} -o link show dev {}", kIp,
                                  netns.empty() ? "" : "-n " + netns, iface));
    if (r.status != 0) return std::nullopt;
    std::smatch m;
    LinkInfo info;
    if (std::regex_search(r.output, m, std::regex("link/ether ([0-9a-f:]{17})"))) {
        if (auto mac = MacAddr::parse(m[1].str())) info.mac = *mac;
    }
    if (std::regex_search(r.output, m, std::regex(" mtu ([0-9]+)")))
        info.mtu = static_cast<unsigned>(std::stoul(m[1].str()));
    info.up = std::regex_search(r.output, std::regex("[<,]UP[,>]"));
    return info;
}

rte_mbuf* to_mbuf(const std::vector<uint8_t>& bytes) {
    rte_mbuf* m = rte_pktmbuf_alloc(g_pool);
    if (m == nullptr) return nullptr;
    char* p = rte_pktmbuf_append(m, static_cast<uint16_t>(bytes.size()));
    if (p == nullptr) {
        rte_pktmbuf_free(m);
        return nullptr;
    }
    std::memcpy(p, bytes.data(), bytes.size());
    return m;
}

// Sends one frame on tx queue `queue`; true if the port took it.
bool send(EthdevPort& port, const std::vector<uint8_t>& bytes, uint16_t queue) {
    rte_mbuf* m = to_mbuf(bytes);
    if (m == nullptr) return false;
    if (port.tx(&m, 1, queue) == 1) return true;
    rte_pktmbuf_free(m);
    return false;
}

struct Received {
    std::vector<uint8_t> bytes;
    uint16_t queue = 0;
    uint8_t* data() { return bytes.data(); }
    template <typename T>
    T* at(size_t offset) {
        return header_at<T>(bytes.data(), bytes.size(), offset);
    }
};

const ArpHdr* as_arp(Received& f) {
    auto* eth = f.at<EtherHdr>(0);
    if (!eth || eth->type.host() != ethertype::kArp) return nullptr;
    return f.at<ArpHdr>(sizeof(EtherHdr));
}

std::vector<uint8_t> arp_reply(const MacAddr& port_mac, const MacAddr& to_mac) {
    return FrameBuilder()
        .eth(port_mac, to_mac, ethertype::kArp)
        .arp(2, port_mac, kPortIp, to_mac, kNamespaceIp)
        .build();
}

// Polls every rx queue until `want` accepts a frame or `timeout` passes. With `answer_arp`,
// ARP requests for kPortIp met on the way are answered at once (the kernel may ask again
// whenever its neighbour entry needs confirming). `seen` collects a summary for failures.
template <typename Pred>
std::optional<Received> receive_until(EthdevPort& port, Pred want, bool answer_arp,
                                      std::string& seen, std::chrono::milliseconds timeout = 5s) {
    const auto deadline = Clock::now() + timeout;
    rte_mbuf* burst[32];
    while (Clock::now() < deadline) {
        bool any = false;
        for (uint16_t q = 0; q < port.queues(); ++q) {
            uint16_t refused = 0;
            const uint16_t n = port.rx(burst, 32, q, refused);
            for (uint16_t i = 0; i < n; ++i) {
                any = true;
                Received f;
                f.queue = q;
                const auto* d = rte_pktmbuf_mtod(burst[i], const uint8_t*);
                f.bytes.assign(d, d + rte_pktmbuf_data_len(burst[i]));
                rte_pktmbuf_free(burst[i]);
                const auto* eth = f.at<EtherHdr>(0);
                seen += fmt::format("  queue {}: {} bytes, type {:04x}\n", q, f.bytes.size(),
                                    eth ? eth->type.host() : 0);
                if (want(f)) return f;
                const ArpHdr* arp = as_arp(f);
                if (answer_arp && arp && arp->oper.host() == 1 &&
                    Ipv4Addr::from_be(arp->tpa) == kPortIp)
                    send(port, arp_reply(port.mac(), arp->sha), 0);
            }
        }
        if (!any) std::this_thread::sleep_for(1ms);
    }
    return std::nullopt;
}

// Sends an echo request from kPortIp to the namespace on every tx queue in turn, each
// awaited until its reply arrives (on whichever rx queue the sender spreads it to).
void ping_namespace_from_every_queue(EthdevPort& port, const MacAddr& ns_mac, uint16_t id_base) {
    for (uint16_t q = 0; q < port.queues(); ++q) {
        const uint16_t id = static_cast<uint16_t>(id_base + q);
        const auto echo = FrameBuilder()
                              .eth(port.mac(), ns_mac)
                              .ipv4(kPortIp, kNamespaceIp)
                              .icmp_echo(id, 1)
                              .build();
        ASSERT_TRUE(send(port, echo, q)) << "tx queue " << q << " refused the echo request";
        std::string seen;
        auto reply = receive_until(
            port,
            [&](Received& f) {
                const auto* e = f.at<EtherHdr>(0);
                const auto* ip = f.at<Ipv4Hdr>(sizeof(EtherHdr));
                const auto* icmp = f.at<IcmpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr));
                return e && ip && icmp && e->type.host() == ethertype::kIpv4 &&
                       ip->protocol == ipproto::kIcmp && icmp->type == icmp::kEchoReply &&
                       icmp->id.host() == id;
            },
            true, seen);
        ASSERT_TRUE(reply) << "no echo reply to the request sent on tx queue " << q
                           << "; received:\n"
                           << seen;
        const auto* re = reply->at<EtherHdr>(0);
        const auto* rip = reply->at<Ipv4Hdr>(sizeof(EtherHdr));
        EXPECT_EQ(re->dst, port.mac());
        EXPECT_EQ(re->src, ns_mac);
        EXPECT_EQ(Ipv4Addr::from_be(rip->src), kNamespaceIp);
        EXPECT_EQ(Ipv4Addr::from_be(rip->dst), kPortIp);
        std::printf("[          ] echo sent on tx queue %u, reply received on rx queue %u\n", q,
                    reply->queue);
    }
}

// The namespace's kernel opens 64 TCP connections to the port (distinct destination ports:
// distinct flow hashes); their SYNs must arrive on every rx queue, each of which the kernel
// (tap: by flow hash; af_packet: the PMD's fanout by hash) picks for some of them.
void expect_syns_on_every_queue(EthdevPort& port, const Namespace& ns, const TempDir& dir) {
    auto client = ChildProcess::spawn(
        {kIp, "netns", "exec", ns.name(), "python3", "-c",
         fmt::format("import socket, time\n"
                     "held = []\n"
                     "for i in range(64):\n"
                     "    s = socket.socket(); s.setblocking(False); held.append(s)\n"
                     "    try: s.connect(('{}', 5000 + i))\n"
                     "    except BlockingIOError: pass\n"
                     "time.sleep(10)\n",
                     kPortIp.to_string())},
        dir / "syns.log");
    ASSERT_TRUE(client) << client.error();
    std::vector<unsigned> syns(port.queues(), 0);
    std::string seen;
    receive_until(
        port,
        [&](Received& f) {
            const auto* e = f.at<EtherHdr>(0);
            const auto* ip = f.at<Ipv4Hdr>(sizeof(EtherHdr));
            const auto* tcp = f.at<TcpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr));
            if (e && ip && tcp && e->type.host() == ethertype::kIpv4 && ip->protocol == ipproto::kTcp &&
                Ipv4Addr::from_be(ip->dst) == kPortIp && (tcp->flags & TcpHdr::kSyn))
                ++syns[f.queue];
            return std::ranges::all_of(syns, [](unsigned n) { return n > 0; });
        },
        true, seen, 8s);
    (*client)->stop(1s);
    for (uint16_t q = 0; q < port.queues(); ++q) {
        EXPECT_GT(syns[q], 0u) << "no SYN arrived on rx queue " << q;
        std::printf("[          ] rx queue %u: %u SYNs\n", q, syns[q]);
    }
}

// The namespace's kernel and the port exchange ARP and ICMP both ways (see the file comment).
// `ns_mac` is the namespace end's MAC.
void exchange_frames(EthdevPort& port, const Namespace& ns, const MacAddr& ns_mac,
                     const TempDir& dir) {
    // 1. The kernel resolves .10 because something in the namespace wants to reach it.
    auto ping = ChildProcess::spawn(
        {kIp, "netns", "exec", ns.name(), "ping", "-c", "1", "-W", "3", kPortIp.to_string()},
        dir / "ping.log");
    ASSERT_TRUE(ping) << ping.error();
    std::string seen;
    auto request = receive_until(
        port,
        [&](Received& f) {
            const ArpHdr* arp = as_arp(f);
            return arp && arp->oper.host() == 1 && Ipv4Addr::from_be(arp->tpa) == kPortIp;
        },
        false, seen);
    ASSERT_TRUE(request) << "no ARP request for " << kPortIp.to_string() << "; received:\n"
                         << seen;
    const auto* eth = request->at<EtherHdr>(0);
    const ArpHdr* arp = as_arp(*request);
    EXPECT_TRUE(eth->dst.is_broadcast());
    EXPECT_EQ(eth->src, ns_mac);
    EXPECT_EQ(Ipv4Addr::from_be(arp->spa), kNamespaceIp);
    EXPECT_EQ(arp->sha, ns_mac);

    // 2. The port answers, then pings the namespace from every tx queue.
    ASSERT_TRUE(send(port, arp_reply(port.mac(), ns_mac), 0));
    ping_namespace_from_every_queue(port, ns_mac, 0x4300);
    (*ping)->stop(1s);

    // 3. The kernel opens connections: every rx queue receives some of them.
    expect_syns_on_every_queue(port, ns, dir);

    // Every frame the port took was written (a PMD may take a frame and fail it later).
    rte_eth_stats stats{};
    ASSERT_EQ(rte_eth_stats_get(port.port_id(), &stats), 0);
    EXPECT_EQ(stats.oerrors, 0u);
}

std::string unique_name(const char* prefix, uint16_t queues) {
    return fmt::format("{}{}q{}", prefix, ::getpid(), queues);
}

class UplinkPortTest : public ::testing::TestWithParam<uint16_t> {
protected:
    void SetUp() override {
        if (::geteuid() != 0) FAIL() << "needs root (network namespaces, tap): run scripts/test.sh as root";
        if (sh("command -v ping").status != 0) FAIL() << "needs ping (iputils-ping; scripts/setup.sh installs it)";
        if (::access(kIp, X_OK) != 0) FAIL() << "needs iproute2 (scripts/setup.sh installs it)";
    }
};

// The tap's Linux end moved into a namespace after calyx created it keeps carrying frames.
TEST_P(UplinkPortTest, TapMovedIntoNamespaceCarriesArpAndIcmpBothWays) {
    const uint16_t queues = GetParam();
    TempDir dir("calyx-it-uplink");
    Namespace ns("calyx-uplink-" + unique_name("", queues));  // outlives the port
    ASSERT_TRUE(ns.created());
    const std::string tap_name = unique_name("cxt", queues);
    config::UplinkConfig cfg;
    cfg.port = config::TapPort{tap_name};
    auto opened = EthdevPort::open(0, cfg, g_pool, queues);
    ASSERT_TRUE(opened) << opened.error();
    std::unique_ptr<EthdevPort> port = std::move(*opened);
    EXPECT_EQ(port->queues(), queues);
    EXPECT_EQ(port->interface_name(), tap_name);

    // Created in this namespace: up, MTU 1500, and a MAC other than calyx's own.
    auto here = link_info("", tap_name);
    ASSERT_TRUE(here) << tap_name << " was not created";
    EXPECT_TRUE(here->up);
    EXPECT_EQ(here->mtu, 1500u);
    EXPECT_NE(here->mac, port->mac());
    EXPECT_EQ(here->mac.bytes[0], 0x06);
    EXPECT_EQ(port->mac().bytes[0], 0x02);
    EXPECT_TRUE(std::equal(here->mac.bytes.begin() + 1, here->mac.bytes.end(),
                           port->mac().bytes.begin() + 1));
    EXPECT_TRUE(port->connected());
    // net_tap's per-packet signal must never be able to fall back to a fatal SIGIO.
    struct sigaction sigio{};
    ASSERT_EQ(::sigaction(SIGIO, nullptr, &sigio), 0);
    EXPECT_EQ(sigio.sa_handler, SIG_IGN);

    // While the Linux end is visible here, its administrative state is the link state.
    ASSERT_TRUE(ip("link set " + tap_name + " down"));
    port->refresh_link();
    EXPECT_FALSE(port->connected());
    ASSERT_TRUE(ip("link set " + tap_name + " up"));
    port->refresh_link();
    EXPECT_TRUE(port->connected());
    EXPECT_EQ(port->link_changes(), 2u);

    // The operator moves it away and configures it there.
    ASSERT_TRUE(ip(fmt::format("link set {} netns {}", tap_name, ns.name())));
    ASSERT_TRUE(ip(fmt::format("-n {} addr add {}/24 dev {}", ns.name(),
                               kNamespaceIp.to_string(), tap_name)));
    ASSERT_TRUE(ip(fmt::format("-n {} link set {} up", ns.name(), tap_name)));
    ASSERT_TRUE(ip(fmt::format("-n {} link set lo up", ns.name())));
    EXPECT_FALSE(link_info("", tap_name)) << "still visible in the test's namespace";
    auto there = link_info(ns.name(), tap_name);
    ASSERT_TRUE(there);
    EXPECT_EQ(there->mac, here->mac) << "the move kept the Linux end's MAC";
    EXPECT_EQ(there->mtu, 1500u);
    port->refresh_link();
    EXPECT_TRUE(port->connected()) << "calyx cannot see the moved end; it must not call it down";
    // What the PMD itself now says (it asks by interface name in this namespace): for the
    // record only, connected() does not depend on it.
    rte_eth_link link{};
    rte_eth_link_get_nowait(port->port_id(), &link);
    std::printf("[          ] net_tap's own link status after the move: %s\n",
                link.link_status == RTE_ETH_LINK_UP ? "up" : "down");

    exchange_frames(*port, ns, there->mac, dir);
    if (HasFatalFailure()) return;

    // Down in the namespace, the tap refuses frames (the kernel fails the write with EIO):
    // tx() takes none and the caller keeps them. Up again, traffic resumes.
    ASSERT_TRUE(ip(fmt::format("-n {} link set {} down", ns.name(), tap_name)));
    const auto echo = FrameBuilder()
                          .eth(port->mac(), there->mac)
                          .ipv4(kPortIp, kNamespaceIp)
                          .icmp_echo(0x4400, 1)
                          .build();
    EXPECT_FALSE(send(*port, echo, 0));
    ASSERT_TRUE(ip(fmt::format("-n {} link set {} up", ns.name(), tap_name)));
    ping_namespace_from_every_queue(*port, there->mac, 0x4500);

    // Closing the port deletes the interface inside the namespace too.
    port.reset();
    bool gone = false;
    for (int i = 0; i < 200 && !gone; ++i) {
        gone = !link_info(ns.name(), tap_name);
        if (!gone) std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(gone) << tap_name << " survived closing the port";
}

// af_packet on one end of a veth pair (in this namespace); the other end in the namespace.
TEST_P(UplinkPortTest, AfPacketOnVethCarriesArpAndIcmpBothWays) {
    const uint16_t queues = GetParam();
    TempDir dir("calyx-it-uplink");
    Namespace ns("calyx-uplink-" + unique_name("a", queues));
    ASSERT_TRUE(ns.created());
    const std::string here_end = unique_name("cxa", queues);
    const std::string ns_end = unique_name("cxb", queues);
    // Deleting the namespace deletes ns_end and with it the pair, whatever happens below.
    ASSERT_TRUE(ip(fmt::format("link add {} type veth peer name {} netns {}", here_end, ns_end,
                               ns.name())));
    ASSERT_TRUE(ip(fmt::format("-n {} addr add {}/24 dev {}", ns.name(), kNamespaceIp.to_string(),
                               ns_end)));
    ASSERT_TRUE(ip(fmt::format("-n {} link set {} up", ns.name(), ns_end)));
    ASSERT_TRUE(ip(fmt::format("-n {} link set lo up", ns.name())));

    config::UplinkConfig cfg;
    cfg.port = config::AfPacketPort{here_end};
    auto opened = EthdevPort::open(0, cfg, g_pool, queues);
    ASSERT_TRUE(opened) << opened.error();
    std::unique_ptr<EthdevPort> port = std::move(*opened);

    // The PMD leaves the interface down; connected() follows the interface, not the PMD.
    EXPECT_FALSE(port->connected());
    ASSERT_TRUE(ip("link set " + here_end + " up"));
    bool up = false;
    for (int i = 0; i < 200 && !up; ++i) {  // carrier follows a moment after IFF_UP
        port->refresh_link();
        up = port->connected();
        if (!up) std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(up);
    auto here = link_info("", here_end);
    ASSERT_TRUE(here);
    EXPECT_EQ(port->mac(), here->mac) << "af_packet uses the interface's own MAC";
    auto there = link_info(ns.name(), ns_end);
    ASSERT_TRUE(there);

    exchange_frames(*port, ns, there->mac, dir);
    if (HasFatalFailure()) return;

    // Administratively down and up again while open: the kernel leaves an error pending on
    // the PMD's sockets, which must not hold back the next frame of any queue.
    ASSERT_TRUE(ip("link set " + here_end + " down"));
    port->refresh_link();
    EXPECT_FALSE(port->connected());
    ASSERT_TRUE(ip("link set " + here_end + " up"));
    up = false;
    for (int i = 0; i < 200 && !up; ++i) {
        port->refresh_link();
        up = port->connected();
        if (!up) std::this_thread::sleep_for(10ms);
    }
    ASSERT_TRUE(up);
    ping_namespace_from_every_queue(*port, there->mac, 0x4500);
    rte_eth_stats stats{};
    ASSERT_EQ(rte_eth_stats_get(port->port_id(), &stats), 0);
    EXPECT_EQ(stats.oerrors, 0u);

    // Carrier lost: the namespace end goes down.
    ASSERT_TRUE(ip(fmt::format("-n {} link set {} down", ns.name(), ns_end)));
    bool down = false;
    for (int i = 0; i < 200 && !down; ++i) {  // no carrier without the peer
        port->refresh_link();
        down = !port->connected();
        if (!down) std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(down);
    port.reset();
    sh(fmt::format("{} link del {}", kIp, here_end));  // normally gone with the namespace
}

INSTANTIATE_TEST_SUITE_P(Queues, UplinkPortTest, ::testing::Values(1, 2),
                         [](const auto& info) { return fmt::format("{}queue", info.param); });

// Errors name the device and the reason instead of ending the process.
TEST(UplinkPortErrors, ClearMessagesAndNothingLeftBehind) {
    if (::geteuid() != 0) FAIL() << "needs root (creates a tap): run scripts/test.sh as root";
    config::UplinkConfig tap;
    tap.port = config::TapPort{"lo"};
    auto r = EthdevPort::open(0, tap, g_pool, 1);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("uplink tap lo"), std::string::npos) << r.error();
    EXPECT_NE(r.error().find("already exists"), std::string::npos) << r.error();

    tap.port = config::TapPort{"bad,name"};
    r = EthdevPort::open(0, tap, g_pool, 1);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("interface name"), std::string::npos) << r.error();

    // 17 queues: more than net_tap's 16. The tap it created is removed again.
    const std::string tap_name = unique_name("cxe", 17);
    tap.port = config::TapPort{tap_name};
    r = EthdevPort::open(0, tap, g_pool, 17);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("17 queues"), std::string::npos) << r.error();
    EXPECT_FALSE(link_info("", tap_name)) << "a failed open left " << tap_name;

    config::UplinkConfig afp;
    afp.port = config::AfPacketPort{"cxnonexistent0"};
    r = EthdevPort::open(0, afp, g_pool, 1);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("no such interface"), std::string::npos) << r.error();

    // This process runs EAL with --no-pci: no PCI device is probed, none may be found.
    config::UplinkConfig pci;
    pci.port = config::PciPort{"0000:ff:1f.7"};
    r = EthdevPort::open(0, pci, g_pool, 1);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().find("0000:ff:1f.7"), std::string::npos) << r.error();
    EXPECT_NE(r.error().find("-a 0000:ff:1f.7"), std::string::npos) << r.error();
}

}  // namespace
}  // namespace calyx::test

int main(int argc, char** argv) {
    testing::InitGoogleTest(&argc, argv);
    // No hugepages, no PCI devices, no shared files (see tests/integration/meson.build).
    const char* eal_argv[] = {"uplink_port_test", "--no-huge", "-m", "256", "--no-pci",
                              "--no-shconf", "--no-telemetry", "-l", "0", "--log-level", "error"};
    if (rte_eal_init(static_cast<int>(std::size(eal_argv)), const_cast<char**>(eal_argv)) < 0) {
        std::fprintf(stderr, "uplink_port_test: EAL initialisation failed\n");
        return 1;
    }
    calyx::test::g_pool = rte_pktmbuf_pool_create("uplink_test", 2047, 0, 0,
                                                  RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
    if (calyx::test::g_pool == nullptr) {
        std::fprintf(stderr, "uplink_port_test: no mbuf pool\n");
        rte_eal_cleanup();
        return 1;
    }
    const int rc = RUN_ALL_TESTS();
    rte_mempool_free(calyx::test::g_pool);
    rte_eal_cleanup();
    return rc;
}
