// The uplink end to end: the real calyx with an uplink whose far end is in a network namespace
// that plays the Internet (its router 198.51.100.1, a TCP server on 192.0.2.80:443 that
// answers every connection with the address and port it sees), and virtio-user "VMs" that
// speak TCP by hand. The seed's frames 2, 3 and 7, and the private network, with every refusal
// checked under its reason in calyx's counters; many connections from the Internet and to it;
// ARP poisoning from the provider segment and a gateway failover.
// Each test runs with three uplinks:
//   tap                        a tap whose Linux end the test moves into the namespace, one worker;
//   tap_2workers_4queues       the same with two workers polling four queues (q mod 2);
//   afpacket_2workers_2queues  af_packet on one end of a veth pair whose other end is in the
//                              namespace, two workers, two queues (the PMD's hash fanout).
// The vhost-user uplink, whose far end is a virtio-user peer the test plays, is VhostUplinkTest.
#include <future>
#include <map>
#include <regex>
#include <thread>

#include <fmt/format.h>

#include "internet_fixture.hpp"
#include "support/reference_checksum.hpp"

namespace calyx::test {
namespace {

using namespace std::chrono_literals;

// A TCP connect from the namespace; exit status 0 when the handshake completed.
std::string connect_command(Ipv4Addr to, uint16_t port) {
    return fmt::format(
        "timeout 10 python3 -c \"import socket; socket.create_connection(('{}', {}), timeout=3)\"",
        text(to), port);
}

// The seed after frame 7: web-1 takes 443 from anywhere and may go anywhere; app-1 and db-1
// may go anywhere (db-1 also takes anything: its network alone must keep the Internet out).
SecurityPolicy frame7_policy() {
    SecurityPolicy p;
    p.group("public-sg", {"{direction: egress, protocol: any, remote: 0.0.0.0/0}",
                          "{direction: ingress, protocol: tcp, ports: 443, remote: 0.0.0.0/0}"});
    p.group("everywhere", {"{direction: egress, protocol: any, remote: 0.0.0.0/0}",
                           "{direction: ingress, protocol: any, remote: 0.0.0.0/0}"});
    p.member(kWeb, {"public-sg"}).member(kApp, {"everywhere"}).member(kDb, {"everywhere"});
    return p;
}

struct UplinkKind {
    const char* label;
    bool af_packet;
    unsigned workers;
    uint16_t queues;  // 0: calyx's default, one per worker
};
void PrintTo(const UplinkKind& k, std::ostream* os) { *os << k.label; }

class UplinkTest : public InternetFixture, public ::testing::WithParamInterface<UplinkKind> {
protected:
    void SetUp() override {
        const UplinkKind& kind = GetParam();
        ASSERT_NO_FATAL_FAILURE(start_with_internet({.security = frame7_policy(), .workers = kind.workers},
                                                    {.af_packet = kind.af_packet, .queues = kind.queues}));
    }

    // An ARP for the gateway's address, sent with Ethernet source `eth_src` and sender hardware
    // address `sha`: a reply to calyx, or (gratuitous) a broadcast request for itself.
    static Bytes gateway_arp(MacAddr eth_src, MacAddr sha, bool gratuitous) {
        return FrameBuilder()
            .eth(eth_src, MacAddr::broadcast(), ethertype::kArp)
            .arp(gratuitous ? 1 : 2, sha, kUpstream, MacAddr{}, gratuitous ? kUpstream : kHostAddress)
            .build();
    }
    // web-1 pings the gateway's own address (on-link: the same ARP entry as everything routed
    // through it); whether the answer came within `wait`.
    bool gateway_answers(uint16_t seq, std::chrono::milliseconds wait = kReply) {
        VmPeer& web = vm(kWeb);
        if (!web.send(ping_frame(kWeb, kUpstream, 0x4a, seq))) return false;
        return web.receive(wait, is_echo_reply(0x4a, seq)).has_value();
    }

    // Packets each worker lcore received so far (calyx_lcore_packets_total), from a scrape.
    std::map<std::string, double> lcore_packets() {
        const auto r = sh(fmt::format(
            "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{}/metrics', "
            "timeout=5).read().decode())\"",
            identity_.metrics_port));
        std::map<std::string, double> out;
        const std::regex series(R"re(calyx_lcore_packets_total\{lcore="(\d+)"\} ([0-9.e+]+))re");
        for (auto it = std::sregex_iterator(r.output.begin(), r.output.end(), series); it != std::sregex_iterator(); ++it)
            out[(*it)[1].str()] = std::stod((*it)[2].str());
        return out;
    }
};

TEST_P(UplinkTest, Frame2PublicInstanceReachesTheInternetWithItsOwnAddress) {
    const auto seen = fetch_seen_address(kWeb, 41000);
    ASSERT_TRUE(seen.has_value()) << "no answer from the Internet server";
    EXPECT_EQ(*seen, fmt::format("{}:41000\n", text(kWeb.ip)));
}

TEST_P(UplinkTest, Frame3InternetReachesPublicInstanceOn443Only) {
    // The namespace's client connects; web-1's "stack" (this test) answers the SYN.
    auto client = std::async(std::launch::async, [&] { return ns_->exec(connect_command(kWeb.ip, 443)); });
    VmPeer& web = vm(kWeb);
    const auto syn = web.receive(kWarmUp, tcp_to(kWeb, 443, TcpHdr::kSyn));
    ASSERT_TRUE(syn.has_value()) << "the SYN from the Internet never reached web-1";
    const TcpHdr h = tcp_of(*syn);
    const Ipv4Addr client_ip = Ipv4Addr::from_be(ipv4_of(*syn).src);
    EXPECT_EQ(client_ip, kUpstream) << "public: no translation inbound";
    web.send(FrameBuilder()
                 .eth(kWeb.mac, kGatewayMac)
                 .ipv4(kWeb.ip, client_ip, ipproto::kTcp)
                 .tcp(443, h.src_port.host(), TcpHdr::kSyn | TcpHdr::kAck, 7000, h.seq.host() + 1)
                 .build());
    const auto connected = client.get();
    EXPECT_EQ(connected.status, 0) << "connect to 203.0.113.10:443 from the Internet: " << connected.output;

    // Port 22 is not open to the Internet: the SYN dies in calyx, counted on the uplink.
    const auto refused = ns_->exec(connect_command(kWeb.ip, 22));
    EXPECT_NE(refused.status, 0);
    const auto report = wait_for_drops("uplink", "sg_no_ingress_rule", 1);
    ASSERT_TRUE(report.has_value());
    EXPECT_GE(report->drops("uplink", "sg_no_ingress_rule"), 1u) << report->text;
}

TEST_P(UplinkTest, Frame7NatInstanceIsSeenAsTheHostAddress) {
    const auto seen = fetch_seen_address(kApp, 42000);
    ASSERT_TRUE(seen.has_value()) << "no answer from the Internet server";
    EXPECT_EQ(*seen, fmt::format("{}:42000\n", text(kHostAddress))) << "masqueraded, source port preserved";
    // A second connection from the same port number towards the same server after the first
    // was reset: a new external port or the same, but always the host address.
    const auto again = fetch_seen_address(kApp, 42001);
    ASSERT_TRUE(again.has_value());
    EXPECT_TRUE(again->starts_with(text(kHostAddress) + ":")) << *again;
}

TEST_P(UplinkTest, NothingFromTheInternetOpensAConnectionToTheNatNetwork) {
    // Straight to the instance's address (routed to the host by the namespace)...
    EXPECT_NE(ns_->exec(connect_command(kApp.ip, 22)).status, 0);
    // ...and to the host address, where no masquerade mapping exists.
    EXPECT_NE(ns_->exec(connect_command(kHostAddress, 42000)).status, 0);
    auto report = wait_for_drops("uplink", "nat_unsolicited", 1);
    ASSERT_TRUE(report.has_value());
    EXPECT_GE(report->drops("uplink", "nat_unsolicited"), 1u) << report->text;
    EXPECT_GE(report->drops("uplink", "nat_no_mapping"), 1u) << report->text;
    expect_nothing(kApp, tcp_to(kApp, 22, TcpHdr::kSyn), "an unsolicited SYN at app-1");
}

TEST_P(UplinkTest, PrivateInstanceHasNoInternetEvenWithAllowAllGroups) {
    VmPeer& db = vm(kDb);
    db.send(tcp_frame(kDb, kInternetServer, 43000, 443, TcpHdr::kSyn, 1000, 0));
    expect_nothing(kDb, tcp_to(kDb, 43000, TcpHdr::kSyn | TcpHdr::kAck), "a SYN-ACK from the Internet");
    EXPECT_NE(ns_->exec(connect_command(kDb.ip, 22)).status, 0);
    const auto report = wait_for_drops("uplink", "private_isolated", 1);
    ASSERT_TRUE(report.has_value());
    EXPECT_EQ(report->drops("db-1", "private_isolated"), 1u) << report->text;
    EXPECT_GE(report->drops("uplink", "private_isolated"), 1u) << report->text;
    // Inside the site db-1 still reaches what its groups allow: the gateway at least.
    expect_gateway_answers_ping(kDb, 9, 1);
}

// ARP poisoning from the provider segment: forged replies claim the gateway's address for
// another MAC, again and again, for longer than calyx's verification takes, while the real
// gateway answers calyx's probes. Not one of web-1's pings to the gateway is lost; the forged
// frames are counted.
TEST_P(UplinkTest, PoisonedArpForTheGatewayChangesNothingWhileTheRealGatewayAnswers) {
    ASSERT_TRUE(gateway_answers(1, kWarmUp)) << "the gateway does not answer before the attack";
    const MacAddr attacker{{0x02, 0x00, 0x00, 0x00, 0x66, 0x66}};
    // One whose Ethernet source is not its sender hardware address: dropped outright.
    ASSERT_NO_FATAL_FAILURE(send_from_internet(gateway_arp(attacker, MacAddr{{0x02, 0, 0, 0, 0x66, 0x67}}, false)));
    uint16_t seq = 2;
    const auto until = std::chrono::steady_clock::now() + 6s;
    int forged = 0;
    while (std::chrono::steady_clock::now() < until) {
        ASSERT_NO_FATAL_FAILURE(send_from_internet(gateway_arp(attacker, attacker, forged % 2 == 1)));
        ++forged;
        EXPECT_TRUE(gateway_answers(seq)) << "ping " << seq << " lost after " << forged << " forged ARPs";
        ++seq;
        std::this_thread::sleep_for(200ms);
    }
    const auto report = wait_for_drops("uplink", "arp_change_unverified", static_cast<uint64_t>(forged));
    ASSERT_TRUE(report.has_value());
    EXPECT_EQ(report->drops("uplink", "arp_change_unverified"), static_cast<uint64_t>(forged)) << report->text;
    EXPECT_EQ(report->drops("uplink", "arp_sender_mismatch"), 1u) << report->text;
    const auto seen = fetch_seen_address(kApp, 42100);
    ASSERT_TRUE(seen.has_value()) << "masqueraded traffic no longer reaches the Internet";
}

// A failover as keepalived does it: the gateway's address moves to a router with another MAC
// (here: the namespace's interface takes a new MAC, so the old one goes silent) and the new
// master announces itself by gratuitous ARP. calyx follows within a few seconds.
TEST_P(UplinkTest, GatewayFailoverAnnouncedByGratuitousArpIsFollowedWithinSeconds) {
    ASSERT_TRUE(gateway_answers(1, kWarmUp)) << "the gateway does not answer before the failover";
    const MacAddr new_master{{0x02, 0x00, 0x00, 0x00, 0x77, 0x77}};
    ASSERT_TRUE(ns_->ip(fmt::format("link set dev {} address {}", internet_end_, text(new_master))));
    const auto announced = std::chrono::steady_clock::now();
    ASSERT_NO_FATAL_FAILURE(send_from_internet(gateway_arp(new_master, new_master, true)));
    std::optional<std::chrono::milliseconds> followed;
    for (uint16_t seq = 2; seq < 200 && !followed; ++seq) {
        if (gateway_answers(seq, 200ms))
            followed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - announced);
        else if (std::chrono::steady_clock::now() - announced > 15s)
            break;
    }
    ASSERT_TRUE(followed.has_value()) << "calyx never followed the new gateway MAC";
    EXPECT_LE(followed->count(), 6000) << "failover took " << followed->count() << " ms";
    EXPECT_GE(followed->count(), 2000) << "the change was believed before the old MAC was probed";
    std::printf("gateway failover followed after %lld ms\n", static_cast<long long>(followed->count()));
    const auto seen = fetch_seen_address(kApp, 42200);
    ASSERT_TRUE(seen.has_value()) << "masqueraded traffic does not reach the Internet after the failover";
}

// Many connections from the Internet to web-1, each from its own source port: the kernel (or
// the PMD's fanout) spreads them over every uplink queue, and with two workers the replies
// leave on the other worker's queue; every one must complete, and every worker must have
// received some of them.
TEST_P(UplinkTest, ManyConnectionsFromTheInternetAllReachThePublicInstance) {
    constexpr int kConnections = 32;
    const auto before = lcore_packets();
    auto client = std::async(std::launch::async, [&] {
        return ns_->exec(fmt::format(
            "timeout 60 python3 -c \"import socket\n"
            "ok = 0\n"
            "for i in range({}):\n"
            "    try:\n"
            "        socket.create_connection(('{}', 443), timeout=5).close(); ok += 1\n"
            "    except OSError: pass\n"
            "print(ok)\"",
            kConnections, text(kWeb.ip)));
    });
    // web-1's "stack": every SYN to 443 gets its SYN-ACK, until the client is done.
    VmPeer& web = vm(kWeb);
    int answered = 0;
    while (client.wait_for(0ms) != std::future_status::ready) {
        const auto syn = web.receive(200ms, tcp_to(kWeb, 443, TcpHdr::kSyn));
        if (!syn || (tcp_of(*syn).flags & TcpHdr::kAck)) continue;
        const TcpHdr h = tcp_of(*syn);
        web.send(FrameBuilder()
                     .eth(kWeb.mac, kGatewayMac)
                     .ipv4(kWeb.ip, Ipv4Addr::from_be(ipv4_of(*syn).src), ipproto::kTcp)
                     .tcp(443, h.src_port.host(), TcpHdr::kSyn | TcpHdr::kAck, 7000, h.seq.host() + 1)
                     .build());
        ++answered;
    }
    const auto done = client.get();
    EXPECT_EQ(done.status, 0) << done.output;
    EXPECT_EQ(std::atoi(done.output.c_str()), kConnections) << "connections completed; SYNs answered: " << answered;
    const auto after = lcore_packets();
    for (unsigned w = 1; w <= GetParam().workers; ++w) {
        const std::string lcore = std::to_string(w);
        ASSERT_TRUE(after.contains(lcore)) << "no calyx_lcore_packets_total for lcore " << lcore;
        EXPECT_GT(after.at(lcore), before.contains(lcore) ? before.at(lcore) : 0.0)
            << "worker lcore " << lcore << " received none of the connections' packets";
    }
}

// Masqueraded connections from app-1, each from its own port: all seen from the host address,
// their replies translated back whichever worker receives them.
TEST_P(UplinkTest, ManyMasqueradedConnectionsComeBack) {
    for (uint16_t sport = 44000; sport < 44008; ++sport) {
        const auto seen = fetch_seen_address(kApp, sport);
        ASSERT_TRUE(seen.has_value()) << "no answer to the connection from port " << sport;
        EXPECT_EQ(*seen, fmt::format("{}:{}\n", text(kHostAddress), sport)) << "masqueraded, port preserved";
    }
}

// A vhost-user uplink (a router VM's NIC) in the real binary: the far end is a virtio-user
// peer in this process that plays the upstream router and everything behind it, by hand.
class VhostUplinkTest : public CalyxFixture {
protected:
    static constexpr MacAddr kRouterMac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}};

    void SetUp() override {
        socket_ = dir_ / "uplink.sock";
        ASSERT_NO_FATAL_FAILURE(start_all(
            {.security = frame7_policy(), .uplink_port = fmt::format("{{type: vhost-user, socket: {}}}", socket_.string()),
             .workers = 2}));
        for (int i = 0; i < 100 && !fs::exists(socket_); ++i) std::this_thread::sleep_for(50ms);
        ASSERT_TRUE(fs::exists(socket_)) << "calyx created no uplink socket";
        // As many queue pairs as the uplink has (one per worker). With fewer, what the workers
        // without an enabled pair send is lost as tx_full: net_vhost has no fallback to
        // another pair, unlike calyx's instance ports.
        auto peer = VmPeer::attach({.socket = socket_.string(), .mac = kRouterMac, .queues = 2});
        ASSERT_TRUE(peer) << peer.error();
        router_ = std::move(*peer);
        // calyx asks for its gateway once the link is up: the router answers and learns the
        // uplink's MAC from the question.
        const auto who_has = router_->receive(kWarmUp, [](const Bytes& f) {
            return is_arp(f) && arp_of(f).oper.host() == 1 && Ipv4Addr::from_be(arp_of(f).tpa) == kUpstream;
        });
        ASSERT_TRUE(who_has) << "calyx never asked for its gateway " << text(kUpstream);
        uplink_mac_ = eth_src(*who_has);
        EXPECT_EQ(Ipv4Addr::from_be(arp_of(*who_has).spa), kHostAddress);
        ASSERT_TRUE(router_->send(FrameBuilder()
                                      .eth(kRouterMac, uplink_mac_, ethertype::kArp)
                                      .arp(2, kRouterMac, kUpstream, uplink_mac_, kHostAddress)
                                      .build()));
    }
    void TearDown() override {
        router_.reset();
        CalyxFixture::TearDown();
    }

    static Bytes tcp(MacAddr src_mac, MacAddr dst_mac, Ipv4Addr src, Ipv4Addr dst, uint16_t sport, uint16_t dport,
                     uint8_t flags, uint32_t seq, uint32_t ack) {
        return FrameBuilder().eth(src_mac, dst_mac).ipv4(src, dst, ipproto::kTcp).tcp(sport, dport, flags, seq, ack).build();
    }
    static FramePredicate tcp_from_to(Ipv4Addr src, Ipv4Addr dst, uint8_t flags) {
        return [=](const Bytes& f) {
            return is_tcp(f) && Ipv4Addr::from_be(ipv4_of(f).src) == src && Ipv4Addr::from_be(ipv4_of(f).dst) == dst &&
                   (tcp_of(f).flags & flags) == flags;
        };
    }
    static std::string checksum_errors(const Bytes& f) {
        return ref::ipv4_checksum_errors(f.data() + kEthLen, f.size() - kEthLen);
    }

    fs::path socket_;
    std::unique_ptr<VmPeer> router_;
    MacAddr uplink_mac_;
};

// app-1's connection leaves masqueraded (host address, its port kept), the router's answer
// comes back translated to app-1.
TEST_F(VhostUplinkTest, NatInstanceReachesTheInternetMasqueraded) {
    VmPeer& app = vm(kApp);
    const Bytes syn = tcp(kApp.mac, kGatewayMac, kApp.ip, kInternetServer, 45000, 443, TcpHdr::kSyn, 1000, 0);
    // The first SYN asks calyx to resolve the router by ARP and is dropped meanwhile
    // (neighbor_unresolved; the router answers while the test waits): send it again, as TCP does.
    std::optional<Bytes> out;
    for (int attempt = 0; attempt < 3 && !out; ++attempt) {
        ASSERT_TRUE(app.send(syn));
        out = router_->receive(std::chrono::milliseconds(1000), tcp_from_to(kHostAddress, kInternetServer, TcpHdr::kSyn));
    }
    ASSERT_TRUE(out) << "the SYN never left through the vhost-user uplink";
    EXPECT_EQ(eth_dst(*out), kRouterMac);
    EXPECT_EQ(eth_src(*out), uplink_mac_);
    EXPECT_EQ(tcp_of(*out).src_port.host(), 45000) << "port preserved";
    EXPECT_EQ(checksum_errors(*out), "");
    ASSERT_TRUE(router_->send(tcp(kRouterMac, uplink_mac_, kInternetServer, kHostAddress, 443, 45000,
                                  TcpHdr::kSyn | TcpHdr::kAck, 9000, 1001)));
    const auto back = app.receive(kReply, tcp_from_to(kInternetServer, kApp.ip, TcpHdr::kSyn | TcpHdr::kAck));
    ASSERT_TRUE(back) << "the SYN-ACK never reached app-1";
    EXPECT_EQ(tcp_of(*back).dst_port.host(), 45000);
    EXPECT_EQ(checksum_errors(*back), "");
}

// The Internet reaches web-1 on 443 (untranslated, both ways); nothing unsolicited reaches
// the nat network through the host address.
TEST_F(VhostUplinkTest, InternetReachesThePublicInstanceAndNothingElse) {
    const Ipv4Addr client = Ipv4Addr::from_octets(192, 0, 2, 99);
    ASSERT_TRUE(router_->send(tcp(kRouterMac, uplink_mac_, client, kWeb.ip, 50000, 443, TcpHdr::kSyn, 5000, 0)));
    VmPeer& web = vm(kWeb);
    const auto in = web.receive(kReply, tcp_from_to(client, kWeb.ip, TcpHdr::kSyn));
    ASSERT_TRUE(in) << "the SYN from the Internet never reached web-1";
    EXPECT_EQ(checksum_errors(*in), "");
    ASSERT_TRUE(web.send(tcp(kWeb.mac, kGatewayMac, kWeb.ip, client, 443, 50000, TcpHdr::kSyn | TcpHdr::kAck, 7000, 5001)));
    const auto out = router_->receive(kReply, tcp_from_to(kWeb.ip, client, TcpHdr::kSyn | TcpHdr::kAck));
    ASSERT_TRUE(out) << "web-1's SYN-ACK never left";
    EXPECT_EQ(eth_dst(*out), kRouterMac);

    ASSERT_TRUE(router_->send(tcp(kRouterMac, uplink_mac_, client, kHostAddress, 50001, 45001, TcpHdr::kSyn, 1, 0)));
    const auto report = wait_for_drops("uplink", "nat_no_mapping", 1);
    ASSERT_TRUE(report.has_value());
    EXPECT_EQ(report->drops("uplink", "nat_no_mapping"), 1u) << report->text;
    expect_nothing(kApp, [](const Bytes& f) { return is_tcp(f); }, "a SYN at app-1");
}

INSTANTIATE_TEST_SUITE_P(Uplinks, UplinkTest,
                         ::testing::Values(UplinkKind{"tap", false, 1, 0}, UplinkKind{"tap_2workers_4queues", false, 2, 4},
                                           UplinkKind{"afpacket_2workers_2queues", true, 2, 2}),
                         [](const auto& info) { return std::string(info.param.label); });

}  // namespace
}  // namespace calyx::test

int main(int argc, char** argv) {
    return calyx::test::run_integration_tests(argc, argv);
}
