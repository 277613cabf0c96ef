// calyx as every VM's gateway, end to end: the real calyx binary on a test config, and "VMs"
// that are DPDK virtio-user ports in this process sending real frames over vhost-user. The
// topology and the fixture are in calyx_fixture.hpp; every instance here is in one allow-all
// security group (security groups have their own suite, security_groups_test.cpp).
//
// Usage: gateway_test [gtest flags] [--calyx-bin=PATH | PATH]; $CALYX_BIN wins (meson sets it).
// CALYX_IT_KEEP=1 keeps the temp dirs (configs, logs).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "calyx_fixture.hpp"
#include "calyx_process.hpp"
#include "dhcp_frames.hpp"
#include "test_frames.hpp"
#include "vm_peer.hpp"

namespace calyx::test {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

// All three instance ports in server mode (calyx creates the sockets).
class GatewayTest : public CalyxFixture {
  protected:
    void SetUp() override { ASSERT_NO_FATAL_FAILURE(start_all()); }
};

// ------------------------------------------------------------------------------------------
// DHCP

void expect_web_lease(const DhcpMessage& m, const MacAddr& mac) {
    EXPECT_EQ(m.op, 2);
    EXPECT_EQ(text(m.yiaddr), text(kWeb.ip)) << "offered address must be the configured ipv4";
    EXPECT_EQ(m.chaddr, mac);
    EXPECT_EQ(m.ip_option(dhcp::kSubnetMask).transform([](Ipv4Addr a) { return text(a); }),
              std::optional<std::string>("255.255.255.0"));
    const auto routers = m.ip_list_option(dhcp::kRouter);
    ASSERT_FALSE(routers.empty()) << "no router option (3)";
    EXPECT_EQ(text(routers.front()), text(kWeb.gateway));
    const auto dns = m.ip_list_option(dhcp::kDnsServers);
    ASSERT_EQ(dns.size(), 1u) << "DNS option (6)";
    EXPECT_EQ(text(dns[0]), text(kPublicDns));
    EXPECT_EQ(m.u16_option(dhcp::kInterfaceMtu), std::optional<uint16_t>(kPublicMtu))
        << "MTU option (26)";
    const auto lease = m.u32_option(dhcp::kLeaseTime);
    ASSERT_TRUE(lease) << "no lease time option (51)";
    EXPECT_GE(*lease, 60u);
    EXPECT_EQ(m.ip_option(dhcp::kServerId).transform([](Ipv4Addr a) { return text(a); }),
              std::optional<std::string>(text(kWeb.gateway)))
        << "server identifier (54) must be the gateway";
    const auto routes = m.classless_routes();
    ASSERT_TRUE(routes) << "option 121 missing or malformed";
    const bool has_default =
        std::ranges::any_of(*routes, [](const std::pair<Ipv4Prefix, Ipv4Addr>& r) {
            return r.first.length == 0 && r.second.value == kWeb.gateway.value;
        });
    EXPECT_TRUE(has_default) << "option 121 must carry 0.0.0.0/0 via the gateway "
                                "(clients ignore option 3 when 121 is present)";
}

// What calyx's DHCP reply looks like on the wire, apart from the BOOTP content.
void expect_dhcp_reply_headers(const Bytes& f) {
    EXPECT_EQ(eth_src(f), kGatewayMac);
    EXPECT_EQ(ipv4_of(f).src.host(), kWeb.gateway.value);
    EXPECT_TRUE(ipv4_checksums_ok(f)) << describe_frame(f);
}

FramePredicate dhcp_reply_xid(uint32_t xid) {
    return [xid](const Bytes& f) {
        if (!is_any_dhcp_reply(f)) return false;
        auto m = DhcpMessage::parse(f);
        return !m || m->xid == xid;  // unparsable replies are kept: the test reports them
    };
}

TEST_F(GatewayTest, DhcpHandshakeGetsConfiguredAddressAndOptions) {
    const uint32_t xid = 0x5eed0001;
    auto offer_frame =
        vm(kWeb).request(dhcp_client_frame({.type = dhcp::kDiscover, .mac = kWeb.mac, .xid = xid}),
                         kReply, dhcp_reply_xid(xid), 500ms);
    ASSERT_TRUE(offer_frame) << "no answer to DHCPDISCOVER";
    auto offer = DhcpMessage::parse(*offer_frame);
    ASSERT_TRUE(offer) << "unparsable DHCP reply: " << describe_frame(*offer_frame);
    ASSERT_EQ(offer->message_type(), std::optional<uint8_t>(dhcp::kOffer));
    expect_dhcp_reply_headers(*offer_frame);
    expect_web_lease(*offer, kWeb.mac);

    auto ack_frame = vm(kWeb).request(dhcp_client_frame({.type = dhcp::kRequest,
                                                         .mac = kWeb.mac,
                                                         .xid = xid,
                                                         .requested = offer->yiaddr,
                                                         .server_id = kWeb.gateway}),
                                      kReply, dhcp_reply_xid(xid), 500ms);
    ASSERT_TRUE(ack_frame) << "no answer to DHCPREQUEST";
    auto ack = DhcpMessage::parse(*ack_frame);
    ASSERT_TRUE(ack) << "unparsable DHCP reply: " << describe_frame(*ack_frame);
    ASSERT_EQ(ack->message_type(), std::optional<uint8_t>(dhcp::kAck));
    expect_dhcp_reply_headers(*ack_frame);
    expect_web_lease(*ack, kWeb.mac);
}

TEST_F(GatewayTest, DhcpRequestForAnotherAddressGetsNak) {
    const uint32_t xid = 0x5eed0002;
    auto reply =
        vm(kWeb).request(dhcp_client_frame({.type = dhcp::kRequest,
                                            .mac = kWeb.mac,
                                            .xid = xid,
                                            .requested = Ipv4Addr::from_octets(203, 0, 113, 99),
                                            .server_id = kWeb.gateway}),
                         kReply, dhcp_reply_xid(xid), 500ms);
    ASSERT_TRUE(reply) << "no answer to a DHCPREQUEST for a wrong address";
    auto m = DhcpMessage::parse(*reply);
    ASSERT_TRUE(m) << describe_frame(*reply);
    EXPECT_EQ(m->message_type(), std::optional<uint8_t>(dhcp::kNak));
    EXPECT_EQ(m->yiaddr.value, 0u);
}

// ------------------------------------------------------------------------------------------
// ARP

void expect_gateway_arp_reply(const Bytes& f, const Vm& asker, Ipv4Addr target) {
    const ArpHdr a = arp_of(f);
    EXPECT_EQ(a.oper.host(), 2);
    EXPECT_EQ(a.sha, kGatewayMac) << "answered with " << text(a.sha);
    EXPECT_EQ(a.spa.host(), target.value);
    EXPECT_EQ(a.tha, asker.mac);
    EXPECT_EQ(a.tpa.host(), asker.ip.value);
    EXPECT_EQ(eth_src(f), kGatewayMac);
    EXPECT_EQ(eth_dst(f), asker.mac);
}

// ARP that `v` should not see: anything but an answer to its own who-has-gateway. warm_up()
// repeats that request until the first answer, so on a busy machine later answers to the
// repeats may still be on their way when a test starts watching for silence.
FramePredicate unexpected_arp_at(const Vm& v) {
    return [&v](const Bytes& f) {
        if (!is_arp(f)) return false;
        const ArpHdr a = arp_of(f);
        const bool warm_up_answer = a.oper.host() == 2 && a.spa.host() == v.gateway.value &&
                                    a.tha == v.mac && eth_dst(f) == v.mac;
        return !warm_up_answer;
    };
}

// ARP sent by the NIC with MAC `sha` (a request flooded or passed on to another instance).
FramePredicate arp_sent_by(const MacAddr& sha) {
    return [sha](const Bytes& f) { return is_arp(f) && arp_of(f).sha == sha; };
}

TEST_F(GatewayTest, ArpForTheGatewayIsAnsweredWithTheGatewayMac) {
    for (const Vm* v : kVms) {
        SCOPED_TRACE(v->name);
        auto r = vm(*v).request(arp_request(v->mac, v->ip, v->gateway), kReply,
                                is_arp_reply_for(v->gateway));
        ASSERT_TRUE(r);
        expect_gateway_arp_reply(*r, *v, v->gateway);
    }
}

TEST_F(GatewayTest, ArpForAnyOtherAddressIsAnsweredWithTheGatewayMac) {
    // Another instance (on another network), a free address in the VM's own subnet, and an
    // address outside every network: calyx answers all of them like Calico, there is no L2.
    for (const Ipv4Addr target : {kApp.ip, Ipv4Addr::from_octets(203, 0, 113, 77), kUnrouted}) {
        SCOPED_TRACE(text(target));
        auto r = vm(kWeb).request(arp_request(kWeb.mac, kWeb.ip, target), kReply,
                                  is_arp_reply_for(target));
        ASSERT_TRUE(r);
        expect_gateway_arp_reply(*r, kWeb, target);
    }
    // The ARP request itself is never flooded to other instances.
    expect_nothing(kApp, arp_sent_by(kWeb.mac), "ARP from web-1");
    expect_nothing(kDb, arp_sent_by(kWeb.mac), "ARP from web-1");
}

TEST_F(GatewayTest, ArpForOwnAddressAndGratuitousArpAreNotAnswered) {
    vm(kWeb).drain();
    // Duplicate address detection (RFC 5227 probe: sender 0.0.0.0) and a plain request for
    // the VM's own address.
    ASSERT_TRUE(vm(kWeb).send(arp_request(kWeb.mac, Ipv4Addr{}, kWeb.ip)));
    ASSERT_TRUE(vm(kWeb).send(arp_request(kWeb.mac, kWeb.ip, kWeb.ip)));
    expect_nothing(kWeb, unexpected_arp_at(kWeb), "ARP for its own address");
    // Gratuitous ARP reply (announcement).
    ASSERT_TRUE(vm(kWeb).send(FrameBuilder()
                                  .eth(kWeb.mac, MacAddr::broadcast(), ethertype::kArp)
                                  .arp(2, kWeb.mac, kWeb.ip, MacAddr::broadcast(), kWeb.ip)
                                  .build()));
    expect_nothing(kWeb, unexpected_arp_at(kWeb), "gratuitous ARP");
    expect_nothing(kApp, arp_sent_by(kWeb.mac), "gratuitous ARP from web-1");
    // The port still answers: the silence above was not a dead port.
    auto r = vm(kWeb).request(arp_request(kWeb.mac, kWeb.ip, kWeb.gateway), kReply,
                              is_arp_reply_for(kWeb.gateway));
    EXPECT_TRUE(r) << "gateway ARP no longer answered";
}

// ------------------------------------------------------------------------------------------
// ICMP echo and routing

TEST_F(GatewayTest, PingToTheGatewayIsAnswered) {
    uint16_t seq = 1;
    for (const Vm* v : kVms) expect_gateway_answers_ping(*v, 0x100, seq++);
}

TEST_F(GatewayTest, PingBetweenInstancesIsRoutedThroughCalyx) {
    expect_ping_between(kWeb, kApp, 0x200, 1);
    expect_ping_between(kApp, kDb, 0x201, 1);
    expect_ping_between(kDb, kWeb, 0x202, 1);
    // Nothing leaks to the third instance.
    expect_nothing(kDb, is_echo_request(0x200, 1), "web-1 -> app-1 traffic");
}

TEST_F(GatewayTest, PingToAnUnroutedAddressGetsDestinationUnreachable) {
    const Bytes req = ping_frame(kWeb, kUnrouted, 0x300, 1);
    auto err = vm(kWeb).request(req, kReply, is_icmp_error(icmp::kDestUnreachable), 1s);
    ASSERT_TRUE(err) << "no ICMP destination unreachable for " << text(kUnrouted);
    EXPECT_EQ(eth_src(*err), kGatewayMac);
    EXPECT_EQ(eth_dst(*err), kWeb.mac);
    EXPECT_EQ(ipv4_of(*err).src.host(), kWeb.gateway.value);
    EXPECT_EQ(ipv4_of(*err).dst.host(), kWeb.ip.value);
    const uint8_t code = icmp_of(*err).code;
    EXPECT_TRUE(code == icmp::kNetUnreachable || code == icmp::kHostUnreachable)
        << "code " << int{code};
    EXPECT_TRUE(ipv4_checksums_ok(*err)) << describe_frame(*err);
    const auto quoted = quoted_ipv4(*err);
    ASSERT_TRUE(quoted) << "ICMP error must quote the offending header";
    EXPECT_EQ(quoted->src.host(), kWeb.ip.value);
    EXPECT_EQ(quoted->dst.host(), kUnrouted.value);
    for (const Vm* v : {&kApp, &kDb}) expect_nothing(*v, is_echo_request(0x300, 1), "unrouted");
}

TEST_F(GatewayTest, TtlOneGetsTimeExceededAndIsNotForwarded) {
    const Bytes req = ping_frame(kWeb, kApp.ip, 0x400, 1, /*ttl=*/1);
    auto err = vm(kWeb).request(req, kReply, is_icmp_error(icmp::kTimeExceeded), 1s);
    ASSERT_TRUE(err) << "no ICMP time exceeded for TTL 1";
    EXPECT_EQ(icmp_of(*err).code, 0);
    EXPECT_EQ(eth_src(*err), kGatewayMac);
    EXPECT_EQ(eth_dst(*err), kWeb.mac);
    EXPECT_EQ(ipv4_of(*err).src.host(), kWeb.gateway.value);
    EXPECT_EQ(ipv4_of(*err).dst.host(), kWeb.ip.value);
    EXPECT_TRUE(ipv4_checksums_ok(*err)) << describe_frame(*err);
    const auto quoted = quoted_ipv4(*err);
    ASSERT_TRUE(quoted);
    EXPECT_EQ(quoted->dst.host(), kApp.ip.value);
    expect_nothing(kApp, is_echo_request(0x400, 1), "a TTL 1 packet");
    // TTL 2 does get through (with TTL 1).
    ASSERT_TRUE(vm(kWeb).send(ping_frame(kWeb, kApp.ip, 0x401, 1, 2)));
    auto fwd = vm(kApp).receive(kReply, is_echo_request(0x401, 1));
    ASSERT_TRUE(fwd) << "TTL 2 packet not forwarded";
    EXPECT_EQ(ipv4_of(*fwd).ttl, 1);
}

// ------------------------------------------------------------------------------------------
// Anti-spoofing

TEST_F(GatewayTest, SpoofedSourceAddressIsDropped) {
    // Not web-1's address: a free one in its subnet, and another instance's.
    const Ipv4Addr spoofed[] = {Ipv4Addr::from_octets(203, 0, 113, 99), kDb.ip};
    uint16_t seq = 1;
    for (const Ipv4Addr src : spoofed) {
        SCOPED_TRACE("source " + text(src));
        ASSERT_TRUE(vm(kWeb).send(echo_request(kWeb.mac, kGatewayMac, src, kApp.ip, 0x500, seq++)));
    }
    expect_nothing(kApp, is_echo_request(0x500, 1), "spoofed source 203.0.113.99");
    expect_nothing(kApp, is_echo_request(0x500, 2), "spoofed source 10.20.0.7 (db-1)");
    // Spoofed ping to the gateway: no reply either.
    ASSERT_TRUE(vm(kWeb).send(echo_request(
        kWeb.mac, kGatewayMac, Ipv4Addr::from_octets(203, 0, 113, 99), kWeb.gateway, 0x501, 1)));
    expect_nothing(kWeb, is_echo_reply(0x501, 1), "ping to the gateway from a spoofed source");
    // The same packet with the right source goes through.
    ASSERT_TRUE(vm(kWeb).send(ping_frame(kWeb, kApp.ip, 0x500, 9)));
    EXPECT_TRUE(vm(kApp).receive(kReply, is_echo_request(0x500, 9)))
        << "unspoofed control packet not forwarded";
}

TEST_F(GatewayTest, SpoofedSourceMacIsDropped) {
    const MacAddr stranger{{0x52, 0x54, 0x00, 0x00, 0x01, 0x99}};
    ASSERT_TRUE(vm(kWeb).send(echo_request(stranger, kGatewayMac, kWeb.ip, kApp.ip, 0x600, 1)));
    ASSERT_TRUE(vm(kWeb).send(echo_request(kApp.mac, kGatewayMac, kWeb.ip, kApp.ip, 0x600, 2)));
    expect_nothing(kApp, is_echo_request(0x600, 1), "spoofed source MAC");
    expect_nothing(kApp, is_echo_request(0x600, 2), "app-1's own MAC as source");
    // ARP from a MAC that is not the instance's: no answer.
    ASSERT_TRUE(vm(kWeb).send(arp_request(stranger, kWeb.ip, kWeb.gateway)));
    expect_nothing(kWeb, unexpected_arp_at(kWeb), "ARP with a spoofed source MAC");
    ASSERT_TRUE(vm(kWeb).send(ping_frame(kWeb, kApp.ip, 0x600, 9)));
    EXPECT_TRUE(vm(kApp).receive(kReply, is_echo_request(0x600, 9)))
        << "unspoofed control packet not forwarded";
}

// ------------------------------------------------------------------------------------------
// A VM goes away and comes back

TEST_F(GatewayTest, VmDetachesAndReattachesWhileOthersAreUnaffected) {
    expect_ping_between(kWeb, kApp, 0x700, 1);
    for (uint16_t round = 1; round <= 2; ++round) {
        SCOPED_TRACE(fmt::format("round {}", round));
        vm(kWeb).detach();
        peers_.erase(kWeb.name);
        // The others keep working while web-1 is gone, and traffic towards it harms nothing.
        ASSERT_TRUE(vm(kApp).send(ping_frame(kApp, kWeb.ip, 0x701, round)));
        expect_ping_between(kApp, kDb, 0x702, round);
        expect_gateway_answers_ping(kDb, 0x703, round);
        ASSERT_FALSE(HasFatalFailure());

        ASSERT_NO_FATAL_FAILURE(attach(kWeb));
        ASSERT_NO_FATAL_FAILURE(warm_up(kWeb));
        expect_gateway_answers_ping(kWeb, 0x704, round);
        expect_ping_between(kWeb, kApp, 0x705, round);
        expect_ping_between(kDb, kWeb, 0x706, round);
    }
}

TEST_F(GatewayTest, SigtermStopsCalyxCleanly) {
    for (auto& [name, p] : peers_) p->detach();
    const int st = calyx_->stop(5s);
    EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
        << "calyx on SIGTERM: " << describe_status(st);
    for (const Vm* v : kVms)
        EXPECT_FALSE(fs::exists(socket_of(*v))) << v->name << ": socket left behind";
    // A new calyx on the same config comes up and serves re-attached VMs.
    ASSERT_NO_FATAL_FAILURE(start_calyx());
    for (const Vm* v : {&kWeb, &kApp}) ASSERT_NO_FATAL_FAILURE(attach(*v));
    for (const Vm* v : {&kWeb, &kApp}) ASSERT_NO_FATAL_FAILURE(warm_up(*v));
    expect_ping_between(kWeb, kApp, 0x800, 1);
}

// ------------------------------------------------------------------------------------------
// Client mode: the VM side (QEMU with server=on) owns the socket and calyx connects.

class ClientModeTest : public CalyxFixture {
  protected:
    void SetUp() override { ASSERT_NO_FATAL_FAILURE(start_all({.client_mode = {"web-1"}})); }
};

TEST_F(ClientModeTest, CalyxConnectsToTheVmAndRoutes) {
    expect_gateway_answers_ping(kWeb, 0x900, 1);
    expect_ping_between(kWeb, kApp, 0x901, 1);
}

TEST_F(ClientModeTest, CalyxReconnectsWhenTheVmComesBack) {
    // QEMU killed and restarted: the socket disappears, then a new one appears.
    vm(kWeb).detach();
    peers_.erase(kWeb.name);
    expect_ping_between(kApp, kDb, 0x910, 1);
    ASSERT_NO_FATAL_FAILURE(attach(kWeb));  // waits up to kReconnect for calyx to connect
    ASSERT_NO_FATAL_FAILURE(warm_up(kWeb));
    expect_ping_between(kWeb, kApp, 0x911, 1);
}

TEST_F(ClientModeTest, VmsReconnectAfterCalyxRestarts) {
    calyx_->stop(5s);
    ASSERT_NO_FATAL_FAILURE(start_calyx(options_));
    // Every VM resets its NIC, like a guest driver whose backend went away (the harness cannot
    // keep a server-mode NIC across a backend restart, see vm_peer.hpp). The server-mode ports
    // are calyx's new sockets; web-1 listens on its socket again and calyx connects to it by
    // itself.
    for (const Vm* v : kVms) {
        vm(*v).detach();
        ASSERT_NO_FATAL_FAILURE(attach(*v));
    }
    for (const Vm* v : kVms) ASSERT_NO_FATAL_FAILURE(warm_up(*v));
    expect_ping_between(kWeb, kApp, 0x920, 1);
    expect_ping_between(kDb, kWeb, 0x921, 1);
}

// ------------------------------------------------------------------------------------------
// --check

TEST(ConfigCheck, ValidConfigPassesAndStartsNothing) {
    TempDir dir;
    const auto cfg = dir.write("calyx.yaml", gateway_config(dir));
    const auto r = run_check(cfg);
    EXPECT_EQ(r.exit_code, 0) << "stderr:\n" << r.err << "\nstdout:\n" << r.out;
    for (const Vm* v : kVms)
        EXPECT_FALSE(fs::exists(dir / (v->name + ".sock"))) << "--check created a socket";
}

TEST(ConfigCheck, InvalidConfigReportsEveryErrorWithItsLocation) {
    TempDir dir;
    const std::string yaml = fmt::format(R"(dataplane:
  workers: [1]
  eal_args: ["--no-huge", "-m", "512"]
  bogus_key: 1
networks:
  - name: public
    kind: public
    cidr: 203.0.113.0/24
    gateway: 203.0.113.1
instances:
  - name: web-1
    network: public
    mac: 52:54:00:00:01:01
    ipv4: 198.51.100.10
    port: {{type: vhost-user, socket: {dir}/web-1.sock, mode: server}}
  - name: web-2
    network: nowhere
    mac: 52:54:00:00:01:01
    ipv4: 203.0.113.11
    port: {{type: vhost-user, socket: {dir}/web-2.sock, mode: server}}
)",
                                         fmt::arg("dir", dir.path().string()));
    const auto cfg = dir.write("bad.yaml", yaml);
    const auto r = run_check(cfg);
    EXPECT_NE(r.exit_code, 0) << "--check accepted an invalid config";
    EXPECT_NE(r.exit_code, -1) << "--check did not exit normally: " << r.err;
    const auto errors = located_errors(r.err);
    EXPECT_GE(errors.size(), 4u) << "every error at once, as file:line:col: message; stderr:\n"
                                 << r.err;
    std::set<int> lines;
    for (const auto& e : errors) {
        EXPECT_EQ(e.file, cfg.string());
        EXPECT_GT(e.column, 0) << e.message;
        lines.insert(e.line);
    }
    const int bogus = line_of(yaml, "bogus_key");
    const int outside = line_of(yaml, "198.51.100.10");
    const int unknown_net = line_of(yaml, "nowhere");
    const int mac1 = line_of(yaml, "mac: 52:54");
    const int mac2 =
        line_of(yaml.substr(yaml.find("web-2")), "mac: 52:54") + line_of(yaml, "web-2") - 1;
    EXPECT_TRUE(lines.contains(bogus)) << "unknown key at line " << bogus << "; stderr:\n" << r.err;
    EXPECT_TRUE(lines.contains(outside))
        << "address outside its network at line " << outside << "; stderr:\n"
        << r.err;
    EXPECT_TRUE(lines.contains(unknown_net))
        << "unknown network at line " << unknown_net << "; stderr:\n"
        << r.err;
    EXPECT_TRUE(lines.contains(mac1) || lines.contains(mac2))
        << "duplicate MAC at line " << mac2 << "; stderr:\n"
        << r.err;
    EXPECT_FALSE(fs::exists(dir / "web-1.sock"));
}

}  // namespace
}  // namespace calyx::test

int main(int argc, char** argv) {
    return calyx::test::run_integration_tests(argc, argv);
}

namespace calyx::test {
namespace {

using namespace std::chrono_literals;

// vhost-user multi-queue with two workers: each of an instance's two queue pairs is polled by
// its own worker, and each worker sends on its own pair of the destination.
class MultiQueueTest : public CalyxFixture {};

// Pings from web-1 on both of its queue pairs reach app-1 and are answered (each reply on the
// other pair, so by the other worker); both VMs receive on both pairs (one per transmitting
// worker).
TEST_F(MultiQueueTest, EveryQueuePairIsPolledAndUsed) {
    // web-1 may ping app-1, nothing may reach web-1: its replies pass only by connection
    // tracking, across workers.
    SecurityPolicy policy;
    policy.group("client", {"{direction: egress, protocol: icmp}"})
        .group("server", {"{direction: ingress, protocol: icmp}"})
        .member(kWeb, {"client"})
        .member(kApp, {"server"});
    ASSERT_NO_FATAL_FAILURE(
        start_all({.security = policy, .workers = 2, .queues = {{kWeb.name, 2}, {kApp.name, 2}}}));
    for (uint16_t seq = 1; seq <= 20; ++seq) {
        const uint16_t queue = seq % 2;
        ASSERT_TRUE(vm(kWeb).send(ping_frame(kWeb, kApp.ip, 0x700, seq), queue));
        auto request = vm(kApp).receive(kReply, is_echo_request(0x700, seq));
        ASSERT_TRUE(request) << "request " << seq << " sent on queue pair " << queue;
        // The reply goes in on the other pair: the connection's two directions meet on
        // different workers (one shared connection table, doc/architecture.md).
        const auto other = static_cast<uint16_t>(1 - queue);
        ASSERT_TRUE(vm(kApp).send(echo_reply(kApp.mac, kGatewayMac, kApp.ip, kWeb.ip, 0x700, seq, 64), other));
        ASSERT_TRUE(vm(kWeb).receive(kReply, is_echo_reply(0x700, seq))) << "reply " << seq;
    }
    EXPECT_GT(vm(kApp).received_on(0), 0u);
    EXPECT_GT(vm(kApp).received_on(1), 0u);
    EXPECT_GT(vm(kWeb).received_on(0), 0u);
    EXPECT_GT(vm(kWeb).received_on(1), 0u);
}

// A guest that runs fewer queue pairs than calyx offers (Linux: one per vCPU) still receives
// everything: a worker whose pair the guest left off sends on the guest's first pair.
TEST_F(MultiQueueTest, GuestWithFewerPairsReceivesFromEveryWorker) {
    ASSERT_NO_FATAL_FAILURE(start_all({.workers = 2,
                                       .queues = {{kWeb.name, 2}, {kApp.name, 2}},
                                       .guest_queues = {{kApp.name, 1}}}));
    for (uint16_t seq = 1; seq <= 20; ++seq) {
        ASSERT_TRUE(vm(kWeb).send(ping_frame(kWeb, kApp.ip, 0x701, seq), seq % 2));
        ASSERT_TRUE(vm(kApp).receive(kReply, is_echo_request(0x701, seq)))
            << "request " << seq << " (sent on web-1's queue pair " << seq % 2 << ")";
    }
}

}  // namespace
}  // namespace calyx::test
