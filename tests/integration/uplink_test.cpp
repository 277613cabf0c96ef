// The uplink end to end: the real calyx with a tap uplink whose Linux end the test moves into
// a network namespace that plays the Internet (its router 198.51.100.1, a TCP server on
// 192.0.2.80:443 that answers every connection with the address and port it sees), and
// virtio-user "VMs" that speak TCP by hand. The seed's frames 2, 3 and 7, and the private
// network, with every refusal checked under its reason in calyx's counters.
#include <unistd.h>

#include <fstream>
#include <future>
#include <thread>

#include <fmt/format.h>

#include "calyx_fixture.hpp"
#include "netns.hpp"

namespace calyx::test {
namespace {

using namespace std::chrono_literals;

// Answers each connection with "IP:PORT\n" of its peer, then closes it.
constexpr const char* kServerScript = R"(import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.0.2.80", 443))
s.listen(16)
open(sys.argv[1], "w").close()
while True:
    c, peer = s.accept()
    c.sendall(f"{peer[0]}:{peer[1]}\n".encode())
    c.close()
)";

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

class UplinkTest : public CalyxFixture {
protected:
    void SetUp() override {
        tap_ = fmt::format("cxi{}", ::getpid() % 1000000);
        ns_ = std::make_unique<Namespace>(fmt::format("calyx-it-{}", ::getpid()));
        ASSERT_TRUE(ns_->created());
        ASSERT_NO_FATAL_FAILURE(start_all({.security = frame7_policy(), .uplink_tap = tap_}));
        ASSERT_NO_FATAL_FAILURE(build_internet());
    }
    void TearDown() override {
        if (server_pid_ > 0) sh(fmt::format("kill {}", server_pid_));
        CalyxFixture::TearDown();  // calyx removes the tap (inside the namespace by now)
        ns_.reset();
    }

    // The tap calyx created goes into the namespace: the Internet side of the uplink.
    void build_internet() {
        ASSERT_TRUE(ip(fmt::format("link set {} netns {}", tap_, ns_->name())));
        ASSERT_TRUE(ns_->ip("link set lo up"));
        ASSERT_TRUE(ns_->ip(fmt::format("addr add {}/24 dev {}", text(kUpstream), tap_)));
        ASSERT_TRUE(ns_->ip(fmt::format("addr add {}/32 dev lo", text(kInternetServer))));
        ASSERT_TRUE(ns_->ip(fmt::format("link set {} up", tap_)));
        // web-1's address on-link, so the router ARPs for it and calyx answers; the nat and
        // private networks routed to the host address, as a confused upstream might.
        ASSERT_TRUE(ns_->ip(fmt::format("route add {}/32 dev {}", text(kWeb.ip), tap_)));
        ASSERT_TRUE(ns_->ip(fmt::format("route add 10.10.0.0/24 via {}", text(kHostAddress))));
        ASSERT_TRUE(ns_->ip(fmt::format("route add 10.20.0.0/24 via {}", text(kHostAddress))));
        const auto script = dir_ / "server.py";
        std::ofstream(script) << kServerScript;
        const auto ready = dir_ / "server.ready";
        const auto started = ns_->exec(fmt::format("python3 {} {} >/dev/null 2>&1 & echo $!",
                                                   script.string(), ready.string()));
        server_pid_ = std::atoi(started.output.c_str());
        ASSERT_GT(server_pid_, 0) << started.output;
        for (int i = 0; i < 100 && !fs::exists(ready); ++i) std::this_thread::sleep_for(50ms);
        ASSERT_TRUE(fs::exists(ready)) << "the Internet server did not start";
        // The router asks for the host address: calyx answers and learns the router's MAC (it
        // is also the configured gateway), and ping proves the way in.
        const auto ping = ns_->exec(fmt::format("ping -c 1 -W 3 {}", text(kHostAddress)));
        ASSERT_EQ(ping.status, 0) << "ping to the uplink address: " << ping.output;
    }

    static Bytes tcp_frame(const Vm& vm, Ipv4Addr dst, uint16_t sport, uint16_t dport, uint8_t flags,
                           uint32_t seq, uint32_t ack) {
        return FrameBuilder()
            .eth(vm.mac, kGatewayMac)
            .ipv4(vm.ip, dst, ipproto::kTcp)
            .tcp(sport, dport, flags, seq, ack)
            .build();
    }
    static FramePredicate tcp_to(const Vm& vm, uint16_t port, uint8_t flags) {
        return [&vm, port, flags](const Bytes& f) {
            return is_tcp(f) && Ipv4Addr::from_be(ipv4_of(f).dst) == vm.ip &&
                   tcp_of(f).dst_port.host() == port && (tcp_of(f).flags & flags) == flags;
        };
    }
    static std::string tcp_payload(const Bytes& f) {
        const size_t at = l4_offset(f) + tcp_of(f).header_length();
        const size_t end = kEthLen + ipv4_of(f).total_length.host();
        return at < end ? std::string(f.begin() + static_cast<long>(at), f.begin() + static_cast<long>(end)) : "";
    }

    // A connection from the VM to the Internet server by hand (SYN, SYN-ACK, ACK); returns
    // the line the server sends: the address and port it saw the connection come from.
    std::optional<std::string> fetch_seen_address(const Vm& from, uint16_t sport) {
        VmPeer& v = vm(from);
        v.send(tcp_frame(from, kInternetServer, sport, 443, TcpHdr::kSyn, 1000, 0));
        const auto syn_ack = v.receive(kReply, tcp_to(from, sport, TcpHdr::kSyn | TcpHdr::kAck));
        if (!syn_ack) return std::nullopt;
        const uint32_t server_seq = tcp_of(*syn_ack).seq.host();
        v.send(tcp_frame(from, kInternetServer, sport, 443, TcpHdr::kAck, 1001, server_seq + 1));
        const auto data = v.receive(kReply, [&](const Bytes& f) {
            return tcp_to(from, sport, TcpHdr::kAck)(f) && !tcp_payload(f).empty();
        });
        if (!data) return std::nullopt;
        const std::string line = tcp_payload(*data);
        const uint32_t next = server_seq + 1 + static_cast<uint32_t>(line.size());
        v.send(tcp_frame(from, kInternetServer, sport, 443, TcpHdr::kRst | TcpHdr::kAck, 1001, next));
        return line;
    }

    // Writes `frame` onto the provider segment from the namespace (an attacker there, or the
    // new VRRP master announcing itself).
    void send_from_internet(const Bytes& frame) {
        std::string hex;
        for (uint8_t b : frame) hex += fmt::format("{:02x}", b);
        const auto r = ns_->exec(fmt::format(
            "python3 -c \"import socket; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); "
            "s.bind(('{}', 0)); s.send(bytes.fromhex('{}'))\"",
            tap_, hex));
        ASSERT_EQ(r.status, 0) << r.output;
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

    std::string tap_;
    std::unique_ptr<Namespace> ns_;
    int server_pid_ = 0;
};

TEST_F(UplinkTest, Frame2PublicInstanceReachesTheInternetWithItsOwnAddress) {
    const auto seen = fetch_seen_address(kWeb, 41000);
    ASSERT_TRUE(seen.has_value()) << "no answer from the Internet server";
    EXPECT_EQ(*seen, fmt::format("{}:41000\n", text(kWeb.ip)));
}

TEST_F(UplinkTest, Frame3InternetReachesPublicInstanceOn443Only) {
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

TEST_F(UplinkTest, Frame7NatInstanceIsSeenAsTheHostAddress) {
    const auto seen = fetch_seen_address(kApp, 42000);
    ASSERT_TRUE(seen.has_value()) << "no answer from the Internet server";
    EXPECT_EQ(*seen, fmt::format("{}:42000\n", text(kHostAddress))) << "masqueraded, source port preserved";
    // A second connection from the same port number towards the same server after the first
    // was reset: a new external port or the same, but always the host address.
    const auto again = fetch_seen_address(kApp, 42001);
    ASSERT_TRUE(again.has_value());
    EXPECT_TRUE(again->starts_with(text(kHostAddress) + ":")) << *again;
}

TEST_F(UplinkTest, NothingFromTheInternetOpensAConnectionToTheNatNetwork) {
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

TEST_F(UplinkTest, PrivateInstanceHasNoInternetEvenWithAllowAllGroups) {
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
TEST_F(UplinkTest, PoisonedArpForTheGatewayChangesNothingWhileTheRealGatewayAnswers) {
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
TEST_F(UplinkTest, GatewayFailoverAnnouncedByGratuitousArpIsFollowedWithinSeconds) {
    ASSERT_TRUE(gateway_answers(1, kWarmUp)) << "the gateway does not answer before the failover";
    const MacAddr new_master{{0x02, 0x00, 0x00, 0x00, 0x77, 0x77}};
    ASSERT_TRUE(ns_->ip(fmt::format("link set dev {} address {}", tap_, text(new_master))));
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

}  // namespace
}  // namespace calyx::test

int main(int argc, char** argv) {
    return calyx::test::run_integration_tests(argc, argv);
}
