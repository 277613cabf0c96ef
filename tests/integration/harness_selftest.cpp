// Proves the integration harness itself, independently of calyx: VmPeer "VMs" talk to
// dpdk-testpmd in icmpecho mode (it answers every ARP request and ICMP echo it receives) as the
// vhost-user backend, in both socket directions, across detach and re-attach. If these pass
// and gateway_test fails, the fault is in calyx, not in the harness.
//
// testpmd: $TESTPMD_BIN, else dpdk-testpmd from the dpdk package.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

#include <fmt/format.h>

#include "calyx_process.hpp"
#include "test_frames.hpp"
#include "vm_peer.hpp"

namespace calyx::test {
namespace {

using namespace std::chrono_literals;

constexpr MacAddr kVmMac{{0x52, 0x54, 0x00, 0x00, 0x09, 0x01}};
const Ipv4Addr kVmIp = Ipv4Addr::from_octets(192, 0, 2, 10);
const Ipv4Addr kFarIp = Ipv4Addr::from_octets(192, 0, 2, 1);

std::string testpmd_binary() {
    if (const char* env = std::getenv("TESTPMD_BIN"); env && *env) return env;
    return "/usr/bin/dpdk-testpmd";
}

// dpdk-testpmd as the vhost-user side of one port, forwarding in icmpecho mode on lcore 1.
class Testpmd {
  public:
    // client == false: testpmd creates `socket` (vhost-user server); true: it connects to it
    // and reconnects whenever the peer goes away (vhost-user client with reconnect).
    static std::unique_ptr<Testpmd> start(const TempDir& dir, const fs::path& socket, bool client) {
        static unsigned seq = 0;
        auto t = std::unique_ptr<Testpmd>(new Testpmd());
        t->prefix_ = fmt::format("calyx-it-testpmd-{}-{}", ::getpid(), ++seq);
        // clang-format off
        std::vector<std::string> argv{
            testpmd_binary(), "-l", "0,1", "--no-pci", "--no-huge", "-m", "256",
            "--no-shconf", "--file-prefix", t->prefix_, "--no-telemetry",
            fmt::format("--vdev=net_vhost0,iface={},queues=1,client={}", socket.string(),
                        client ? 1 : 0),
            "--", "--forward-mode=icmpecho", "--stats-period", "1",
            "--total-num-mbufs", "2048", "--nb-cores", "1"};
        // clang-format on
        auto child = ChildProcess::spawn(argv, dir / fmt::format("testpmd-{}.log", seq));
        if (!child) {
            ADD_FAILURE() << child.error();
            return nullptr;
        }
        t->child_ = std::move(*child);
        // "Port statistics" is printed once forwarding runs; in server mode the socket exists
        // by then.
        if (!t->child_->wait_for_log("Port statistics", 15s) || (!client && !fs::exists(socket))) {
            ADD_FAILURE() << "testpmd did not come up:\n" << t->child_->log();
            return nullptr;
        }
        return t;
    }
    ~Testpmd() {
        if (child_) child_->stop(3s);
        std::error_code ec;
        fs::remove_all(fs::path("/var/run/dpdk") / prefix_, ec);
    }
    std::string log() const { return child_ ? child_->log() : std::string{}; }
    void kill() { child_->kill(); }
    void stop() { child_->stop(3s); }

  private:
    Testpmd() = default;
    std::unique_ptr<ChildProcess> child_;
    std::string prefix_;
};

// ARP request answered, then an ICMP echo answered, by whatever is behind `vm`.
void expect_arp_and_ping(VmPeer& vm, uint16_t seq, std::chrono::milliseconds first_timeout) {
    const auto arp = arp_request(kVmMac, kVmIp, kFarIp);
    auto reply = vm.request(arp, first_timeout, is_arp_reply_for(kFarIp));
    ASSERT_TRUE(reply) << "no ARP reply within " << first_timeout.count() << " ms";
    const MacAddr far_mac = eth_src(*reply);
    EXPECT_EQ(arp_of(*reply).tha, kVmMac);

    const auto ping = echo_request(kVmMac, far_mac, kVmIp, kFarIp, 0x77, seq);
    ASSERT_TRUE(vm.send(ping));
    auto pong = vm.receive(3s, is_echo_reply(0x77, seq));
    ASSERT_TRUE(pong) << "no echo reply";
    EXPECT_EQ(ipv4_of(*pong).src.host(), kFarIp.value);
    EXPECT_EQ(ipv4_of(*pong).dst.host(), kVmIp.value);
    EXPECT_EQ(eth_dst(*pong), kVmMac);
}

TEST(HarnessSelfTest, PeerPingsTestpmdServerAndReattaches) {
    TempDir dir;
    const auto sock = dir / "vm.sock";
    auto testpmd = Testpmd::start(dir, sock, /*client=*/false);
    ASSERT_TRUE(testpmd);

    auto vm = VmPeer::attach({.socket = sock, .mac = kVmMac});
    ASSERT_TRUE(vm) << vm.error() << "\ntestpmd:\n" << testpmd->log();
    EXPECT_TRUE((*vm)->wait_link_up(5s));
    expect_arp_and_ping(**vm, 1, 5s);

    // The VM goes away and comes back on the same socket.
    (*vm)->detach();
    EXPECT_FALSE((*vm)->attached());
    auto again = VmPeer::attach({.socket = sock, .mac = kVmMac});
    ASSERT_TRUE(again) << again.error() << "\ntestpmd:\n" << testpmd->log();
    expect_arp_and_ping(**again, 2, 5s);
    if (HasFailure()) ADD_FAILURE() << "testpmd:\n" << testpmd->log();
}

TEST(HarnessSelfTest, PeerAsVhostServerWithReconnectingTestpmd) {
    TempDir dir;
    const auto sock = dir / "vm.sock";
    auto testpmd = Testpmd::start(dir, sock, /*client=*/true);
    ASSERT_TRUE(testpmd);

    // testpmd retries its connection once a second, so attach waits up to ~1 s.
    auto vm =
        VmPeer::attach({.socket = sock, .mac = kVmMac, .server = true, .connect_timeout = 10s});
    ASSERT_TRUE(vm) << vm.error() << "\ntestpmd:\n" << testpmd->log();
    expect_arp_and_ping(**vm, 1, 5s);

    // QEMU restarted: the socket disappears and comes back; the backend reconnects.
    (*vm)->detach();
    EXPECT_FALSE(fs::exists(sock));
    auto again =
        VmPeer::attach({.socket = sock, .mac = kVmMac, .server = true, .connect_timeout = 10s});
    ASSERT_TRUE(again) << again.error() << "\ntestpmd:\n" << testpmd->log();
    expect_arp_and_ping(**again, 2, 5s);
    if (HasFailure()) ADD_FAILURE() << "testpmd:\n" << testpmd->log();
}

// The backend crashes under an attached VM: the test process must survive (SIGPIPE), detach
// must not hang, and a new backend on the same path serves a re-attached VM.
TEST(HarnessSelfTest, PeerSurvivesBackendCrashAndReattachesToNewBackend) {
    TempDir dir;
    const auto sock = dir / "vm.sock";
    auto testpmd = Testpmd::start(dir, sock, /*client=*/false);
    ASSERT_TRUE(testpmd);
    auto vm = VmPeer::attach({.socket = sock, .mac = kVmMac});
    ASSERT_TRUE(vm) << vm.error();
    expect_arp_and_ping(**vm, 1, 5s);

    testpmd->kill();
    for (int i = 0; i < 5; ++i) (*vm)->send(arp_request(kVmMac, kVmIp, kFarIp));
    EXPECT_FALSE((*vm)->receive(300ms));
    // Reading the link of the dead connection must leave the port safe to close (through the
    // PMD, that read armed the alarm behind the interrupt thread's panic).
    EXPECT_FALSE((*vm)->link_up());
    (*vm)->detach();

    // A killed backend leaves its socket file behind; a new one must replace it.
    std::error_code ec;
    fs::remove(sock, ec);
    auto testpmd2 = Testpmd::start(dir, sock, /*client=*/false);
    ASSERT_TRUE(testpmd2);
    auto again = VmPeer::attach({.socket = sock, .mac = kVmMac});
    ASSERT_TRUE(again) << again.error();
    expect_arp_and_ping(**again, 2, 5s);
}

// The VM side is the vhost-user server (QEMU server=on) and its backend restarts: the VM resets
// its NIC (detach, attach on the same socket) and the restarted backend connects to it. (The
// harness does not let the PMD accept the reconnection itself: see "Link state" in
// vm_peer.cpp.) The dead connection is seen as link down meanwhile.
TEST(HarnessSelfTest, ServerModePeerServesRestartedBackendAfterReattach) {
    TempDir dir;
    const auto sock = dir / "vm.sock";
    auto testpmd = Testpmd::start(dir, sock, /*client=*/true);
    ASSERT_TRUE(testpmd);
    auto vm = VmPeer::attach({.socket = sock, .mac = kVmMac, .server = true});
    ASSERT_TRUE(vm) << vm.error();
    EXPECT_TRUE((*vm)->link_up());
    expect_arp_and_ping(**vm, 1, 5s);

    testpmd->stop();
    testpmd.reset();
    EXPECT_FALSE((*vm)->link_up()) << "the backend is gone";
    auto testpmd2 = Testpmd::start(dir, sock, /*client=*/true);
    ASSERT_TRUE(testpmd2);
    (*vm)->detach();
    auto again =
        VmPeer::attach({.socket = sock, .mac = kVmMac, .server = true, .connect_timeout = 10s});
    ASSERT_TRUE(again) << again.error() << "\ntestpmd:\n" << testpmd2->log();
    expect_arp_and_ping(**again, 2, 5s);
    if (HasFailure()) ADD_FAILURE() << "testpmd:\n" << testpmd2->log();
}

TEST(HarnessSelfTest, ServerModeAttachWithoutBackendFailsInBoundedTime) {
    TempDir dir;
    const auto start = std::chrono::steady_clock::now();
    auto vm = VmPeer::attach(
        {.socket = dir / "nobody.sock", .mac = kVmMac, .server = true, .connect_timeout = 500ms});
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_FALSE(vm);
    EXPECT_LT(took, 5s);
}

// A backend that accepts the connection but never answers (a hung calyx): attach gives up
// after connect_timeout instead of hanging in the PMD's blocking vhost-user handshake.
TEST(HarnessSelfTest, AttachToHungBackendFailsInBoundedTime) {
    TempDir dir;
    const auto sock = dir / "hung.sock";
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sock.c_str(), sizeof(addr.sun_path) - 1);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(::listen(fd, 4), 0);  // connections complete in the backlog; nobody reads
    const auto start = std::chrono::steady_clock::now();
    auto vm = VmPeer::attach({.socket = sock, .mac = kVmMac, .connect_timeout = 1s});
    const auto took = std::chrono::steady_clock::now() - start;
    ::close(fd);
    EXPECT_FALSE(vm);
    if (!vm) std::cerr << "expected failure: " << vm.error() << "\n";
    EXPECT_LT(took, 6s);
}

TEST(HarnessSelfTest, ClientModeAttachWithoutSocketFails) {
    TempDir dir;
    auto vm = VmPeer::attach({.socket = dir / "missing.sock", .mac = kVmMac});
    EXPECT_FALSE(vm);
}

TEST(HarnessSelfTest, ChildProcessCapturesOutputAndStops) {
    TempDir dir;
    auto child = ChildProcess::spawn({"/bin/sh", "-c", "echo hello; echo oops >&2; sleep 30"},
                                     dir / "sh.log");
    ASSERT_TRUE(child) << child.error();
    EXPECT_TRUE((*child)->wait_for_log("oops", 5s)) << (*child)->log();
    EXPECT_NE((*child)->log().find("hello"), std::string::npos);
    const int st = (*child)->stop(2s);
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM) << describe_status(st);
}

}  // namespace
}  // namespace calyx::test

int main(int argc, char** argv) {
    testing::InitGoogleTest(&argc, argv);
    calyx::test::VmPeerEal eal;
    return RUN_ALL_TESTS();
}
