// What one guest (or one operator mistake) must not do to the others, against the real calyx
// (doc/architecture.md, "Limits and isolation"):
//   - a reload that changes a port in place fails, and the VM behind it can still reconnect;
//   - vhost-user sockets get the owner, group and mode the config gives them, so an
//     unprivileged QEMU (libvirt-qemu) can connect and other users cannot;
//   - a guest's long descriptor chains are refused before they are copied and counted, while
//     another VM's traffic keeps flowing.
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>

#include <algorithm>
#include <thread>

#include <fmt/format.h>

#include "calyx_fixture.hpp"
#include "netns.hpp"

namespace calyx::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class Hardening : public CalyxFixture {
protected:
    void SetUp() override { ASSERT_NO_FATAL_FAILURE(start_all()); }

    // The VM's NIC goes away and comes back (QEMU restarted, a live migration's target).
    void reconnect(const Vm& v) {
        peers_.erase(v.name);
        ASSERT_NO_FATAL_FAILURE(attach(v));
        ASSERT_NO_FATAL_FAILURE(warm_up(v));
    }
};

TEST_F(Hardening, FailedReloadThatChangesAPortInPlaceLeavesTheVmAbleToReconnect) {
    // web-1's port keeps its socket but asks for two queue pairs: that needs a new port on a
    // socket the running one still serves.
    const auto outcome = reload({.queues = {{kWeb.name, 2}}});
    ASSERT_TRUE(outcome.answered) << outcome.output;
    EXPECT_FALSE(outcome.accepted) << outcome.output;
    EXPECT_NE(outcome.output.find("already served by a running port"), std::string::npos) << outcome.output;
    struct stat st{};
    ASSERT_EQ(::lstat(socket_of(kWeb).c_str(), &st), 0) << "the live socket file was removed";
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    expect_gateway_answers_ping(kWeb, 1, 1);
    ASSERT_NO_FATAL_FAILURE(reconnect(kWeb));
    expect_gateway_answers_ping(kWeb, 1, 2);
}

// Connects to `socket` as the unprivileged user nobody (what a QEMU run by libvirt as
// libvirt-qemu does); the exit status is 0 when the kernel let it.
CommandResult connect_as_nobody(const fs::path& socket) {
    return sh(fmt::format("/usr/bin/setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/python3 -c "
                          "\"import socket; socket.socket(socket.AF_UNIX).connect('{}')\"",
                          socket.string()));
}

TEST_F(Hardening, SocketOwnerGroupAndModeLetAnUnprivilegedQemuConnectAndNobodyElse) {
    ASSERT_EQ(::access("/usr/bin/setpriv", X_OK), 0) << "setpriv (util-linux) is needed";
    const passwd* nobody = ::getpwnam("nobody");
    const group* nogroup = ::getgrnam("nogroup");
    ASSERT_TRUE(nobody && nogroup);
    // Only the sockets' own modes stand in the way: the directory is open to all.
    fs::permissions(dir_.path(), fs::perms::others_exec | fs::perms::others_read, fs::perm_options::add);
    ASSERT_NE(connect_as_nobody(socket_of(kWeb)).status, 0) << "root's socket, mode from the umask";

    // A reload gives web-1's socket to the group nogroup (0660) and app-1's to nobody (0600);
    // the VMs stay connected.
    std::string yaml = config_text({});
    auto set = [&](const Vm& v, const std::string& access) {
        const std::string from = fmt::format("socket: {}, mode: server,", socket_of(v).string());
        const size_t at = yaml.find(from);
        ASSERT_NE(at, std::string::npos) << yaml;
        yaml.replace(at, from.size(), fmt::format("socket: {}, {},", socket_of(v).string(), access));
    };
    ASSERT_NO_FATAL_FAILURE(set(kWeb, "group: nogroup, mode: \"0660\""));
    ASSERT_NO_FATAL_FAILURE(set(kApp, "owner: nobody, mode: \"0600\""));
    const auto outcome = reload_text(yaml);
    ASSERT_TRUE(outcome.accepted) << outcome.output;

    struct stat web{}, app{}, db{};
    ASSERT_EQ(::stat(socket_of(kWeb).c_str(), &web), 0);
    ASSERT_EQ(::stat(socket_of(kApp).c_str(), &app), 0);
    ASSERT_EQ(::stat(socket_of(kDb).c_str(), &db), 0);
    EXPECT_EQ(web.st_gid, nogroup->gr_gid);
    EXPECT_EQ(web.st_mode & 07777, 0660u);
    EXPECT_EQ(app.st_uid, nobody->pw_uid);
    EXPECT_EQ(app.st_mode & 07777, 0600u);
    EXPECT_EQ(db.st_uid, 0u);

    const auto web_try = connect_as_nobody(socket_of(kWeb));
    EXPECT_EQ(web_try.status, 0) << "group nogroup, 0660: " << web_try.output;
    const auto app_try = connect_as_nobody(socket_of(kApp));
    EXPECT_EQ(app_try.status, 0) << "owner nobody, 0600: " << app_try.output;
    const auto db_try = connect_as_nobody(socket_of(kDb));
    EXPECT_NE(db_try.status, 0) << "db-1's socket is root's alone";
    EXPECT_NE(db_try.output.find("Permission denied"), std::string::npos) << db_try.output;
    // The guests never noticed.
    expect_gateway_answers_ping(kWeb, 3, 1);
    expect_gateway_answers_ping(kApp, 3, 1);

    // A restart creates the sockets with the same access.
    for (auto& [name, p] : peers_) p->detach();
    calyx_->stop(5s);
    ASSERT_NO_FATAL_FAILURE(start_calyx(options_));
    ASSERT_EQ(::stat(socket_of(kApp).c_str(), &app), 0);
    EXPECT_EQ(app.st_uid, nobody->pw_uid);
    EXPECT_EQ(app.st_mode & 07777, 0600u);
}

// app-1 sends frames of almost a megabyte as chains of 16 descriptors, as fast as its ring
// takes them, while web-1 pings its gateway. rte_vhost refuses each chain before copying a
// byte or taking more than one buffer (LINEARBUF); calyx counts every one; web-1's pings are
// all answered.
TEST_F(Hardening, LongDescriptorChainsAreRefusedUncopiedWhileAnotherVmKeepsFlowing) {
    constexpr uint16_t kSegments = 15, kSegmentLen = 60000;
    constexpr int kRounds = 100, kChainsPerRound = 20;
    VmPeer& attacker = vm(kApp);
    VmPeer& victim = vm(kWeb);
    const Bytes head = FrameBuilder()
                           .eth(kApp.mac, kGatewayMac)
                           .ipv4(kApp.ip, kWeb.ip, ipproto::kUdp)
                           .udp(9, 9, Bytes(64, 0))
                           .build();
    const auto before = counters();
    ASSERT_TRUE(before.has_value());
    uint64_t chains = 0;
    std::chrono::microseconds worst{0};
    const auto start = Clock::now();
    for (int round = 0; round < kRounds; ++round) {
        for (int i = 0; i < kChainsPerRound; ++i) chains += attacker.send_chain(head, kSegments, kSegmentLen);
        const auto sent = Clock::now();
        const Bytes ping = ping_frame(kWeb, kWeb.gateway, 40, static_cast<uint16_t>(round));
        ASSERT_TRUE(victim.send(ping));
        const auto reply = victim.receive(kReply, is_echo_reply(40, static_cast<uint16_t>(round)));
        ASSERT_TRUE(reply.has_value()) << "web-1's ping " << round << " went unanswered during the attack";
        worst = std::max(worst, std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - sent));
    }
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    ASSERT_GT(chains, uint64_t{kRounds} * kChainsPerRound / 2) << "the attacker's ring hardly moved";
    const auto report = wait_for_drops(kApp.name, "oversize_frame", chains, kControl);
    ASSERT_TRUE(report.has_value());
    EXPECT_EQ(report->drops(kApp.name, "oversize_frame"), chains)
        << "every chain refused before it was copied, and counted once\n" << report->text;
    EXPECT_EQ(report->drops(kApp.name, "multi_segment"), 0u) << "nothing was copied into a chain of buffers";
    EXPECT_EQ(report->ports.at(kApp.name).rx_packets, before->ports.at(kApp.name).rx_packets)
        << "no chain reached the pipeline\n" << report->text;
    std::printf("long chains: %llu frames of %u bytes in %lld ms; web-1's slowest ping meanwhile %lld us\n",
                static_cast<unsigned long long>(chains), unsigned{kSegments} * kSegmentLen + unsigned(head.size()),
                static_cast<long long>(elapsed.count()), static_cast<long long>(worst.count()));
    // app-1 itself still works once it sends ordinary frames.
    expect_gateway_answers_ping(kApp, 41, 1);
}

}  // namespace
}  // namespace calyx::test

int main(int argc, char** argv) {
    return calyx::test::run_integration_tests(argc, argv);
}
