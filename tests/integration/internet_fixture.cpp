#include "internet_fixture.hpp"

#include <unistd.h>

#include <fstream>
#include <thread>

#include <fmt/format.h>

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

}  // namespace

void InternetFixture::start_with_internet(ConfigOptions opts, UplinkVariant variant) {
    const unsigned id = static_cast<unsigned>(::getpid()) % 1000000;
    ns_ = std::make_unique<Namespace>(fmt::format("calyx-it-{}", ::getpid()));
    ASSERT_TRUE(ns_->created());
    const std::string queues = variant.queues ? fmt::format(", queues: {}", variant.queues) : "";
    if (variant.af_packet) {
        // calyx's end here, the Internet's end in the namespace; deleting the namespace
        // deletes the pair whatever happens.
        host_end_ = fmt::format("cxu{}", id);
        internet_end_ = fmt::format("cxv{}", id);
        ASSERT_TRUE(ip(fmt::format("link add {} type veth peer name {} netns {}", host_end_, internet_end_,
                                   ns_->name())));
        ASSERT_TRUE(ip(fmt::format("link set {} up", host_end_)));
        // The kernel hands af_packet partial checksums unless the veth computes them.
        ASSERT_EQ(ns_->exec(fmt::format("ethtool -K {} tx off", internet_end_)).status, 0);
        uplink_port_ = fmt::format("{{type: af_packet, iface: {}{}}}", host_end_, queues);
    } else {
        internet_end_ = fmt::format("cxi{}", id);
        uplink_port_ = fmt::format("{{type: tap, name: {}{}}}", internet_end_, queues);
    }
    opts.uplink_port = uplink_port_;
    ASSERT_NO_FATAL_FAILURE(start_all(opts));
    ASSERT_NO_FATAL_FAILURE(build_internet());
}

void InternetFixture::TearDown() {
    if (server_pid_ > 0) sh(fmt::format("kill {}", server_pid_));
    CalyxFixture::TearDown();  // calyx removes a tap (inside the namespace by now)
    ns_.reset();
    if (!host_end_.empty()) sh(fmt::format("{} link del {} 2>/dev/null", kIpTool, host_end_));
}

// The uplink's far end in the namespace, the Internet side: a tap calyx created moves there.
// Again after calyx restarted with a tap uplink (its new tap); an af_packet uplink's veth pair
// outlives calyx and keeps its addresses.
void InternetFixture::connect_uplink() {
    const std::string& dev = internet_end_;
    if (!host_end_.empty() && far_end_ready_) return;
    if (host_end_.empty()) {
        ASSERT_TRUE(ip(fmt::format("link set {} netns {}", dev, ns_->name())));
        // The router announces itself when its link comes up (a gratuitous ARP), as routers do
        // on link up: calyx's own first request for its gateway may have left through the new
        // tap before the tap got here, and its retry is a second later (the restart tests'
        // gaps would then measure this harness, not calyx).
        ASSERT_EQ(ns_->exec(fmt::format("sysctl -qw net.ipv4.conf.{}.arp_notify=1", dev)).status, 0);
    }
    ASSERT_TRUE(ns_->ip(fmt::format("addr add {}/24 dev {}", text(kUpstream), dev)));
    ASSERT_TRUE(ns_->ip(fmt::format("link set {} up", dev)));
    // web-1's address on-link, so the router ARPs for it and calyx answers; the nat and
    // private networks routed to the host address, as a confused upstream might.
    ASSERT_TRUE(ns_->ip(fmt::format("route add {}/32 dev {}", text(kWeb.ip), dev)));
    ASSERT_TRUE(ns_->ip(fmt::format("route add 10.10.0.0/24 via {}", text(kHostAddress))));
    ASSERT_TRUE(ns_->ip(fmt::format("route add 10.20.0.0/24 via {}", text(kHostAddress))));
    far_end_ready_ = true;
}

void InternetFixture::build_internet() {
    ASSERT_TRUE(ns_->ip("link set lo up"));
    ASSERT_TRUE(ns_->ip(fmt::format("addr add {}/32 dev lo", text(kInternetServer))));
    ASSERT_NO_FATAL_FAILURE(connect_uplink());
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

Bytes InternetFixture::tcp_frame(const Vm& vm, Ipv4Addr dst, uint16_t sport, uint16_t dport, uint8_t flags,
                                 uint32_t seq, uint32_t ack, uint8_t ttl) {
    return FrameBuilder()
        .eth(vm.mac, kGatewayMac)
        .ipv4(vm.ip, dst, ipproto::kTcp, ttl)
        .tcp(sport, dport, flags, seq, ack)
        .build();
}

FramePredicate InternetFixture::tcp_to(const Vm& vm, uint16_t port, uint8_t flags) {
    return [&vm, port, flags](const Bytes& f) {
        return is_tcp(f) && Ipv4Addr::from_be(ipv4_of(f).dst) == vm.ip && tcp_of(f).dst_port.host() == port &&
               (tcp_of(f).flags & flags) == flags;
    };
}

std::string InternetFixture::tcp_payload(const Bytes& f) {
    const size_t at = l4_offset(f) + tcp_of(f).header_length();
    const size_t end = kEthLen + ipv4_of(f).total_length.host();
    return at < end ? std::string(f.begin() + static_cast<long>(at), f.begin() + static_cast<long>(end)) : "";
}

std::optional<std::string> InternetFixture::fetch_seen_address(const Vm& from, uint16_t sport,
                                                               std::chrono::milliseconds wait) {
    VmPeer& v = vm(from);
    v.send(tcp_frame(from, kInternetServer, sport, 443, TcpHdr::kSyn, 1000, 0));
    const auto syn_ack = v.receive(wait, tcp_to(from, sport, TcpHdr::kSyn | TcpHdr::kAck));
    if (!syn_ack) return std::nullopt;
    const uint32_t server_seq = tcp_of(*syn_ack).seq.host();
    v.send(tcp_frame(from, kInternetServer, sport, 443, TcpHdr::kAck, 1001, server_seq + 1));
    const auto data = v.receive(wait, [&](const Bytes& f) {
        return tcp_to(from, sport, TcpHdr::kAck)(f) && !tcp_payload(f).empty();
    });
    if (!data) return std::nullopt;
    const std::string line = tcp_payload(*data);
    const uint32_t next = server_seq + 1 + static_cast<uint32_t>(line.size());
    v.send(tcp_frame(from, kInternetServer, sport, 443, TcpHdr::kRst | TcpHdr::kAck, 1001, next));
    return line;
}

void InternetFixture::send_from_internet(const Bytes& frame) {
    std::string hex;
    for (uint8_t b : frame) hex += fmt::format("{:02x}", b);
    const auto r = ns_->exec(fmt::format(
        "python3 -c \"import socket; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); "
        "s.bind(('{}', 0)); s.send(bytes.fromhex('{}'))\"",
        internet_end_, hex));
    ASSERT_EQ(r.status, 0) << r.output;
}

}  // namespace calyx::test
