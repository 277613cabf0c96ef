// Writes the fuzz targets' seed corpora: frames as the seed's VMs send them (ARP for their
// gateway, DHCP as udhcpc sends it, pings, TCP handshakes to the Internet, DNS, fragments,
// oversized and expiring packets, ICMP errors) and as the Internet sends them to the uplink
// (ARP, connections to public instances, replies to masqueraded ones, ICMP errors, fragments),
// in the input format of each target (see fuzz_pipeline.cpp, fuzz_dhcp.cpp).
//
//   calyx_fuzz_corpus DIR   # writes DIR/{instance,uplink,dhcp}/NAME; config seeds are files
// The output is kept in tests/fuzz/corpus; run it again when the input formats change.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "calyx/headers.hpp"
#include "support/frame_builder.hpp"

namespace calyx::fuzz {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<uint8_t>;
using test::FrameBuilder;

const MacAddr kGw{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}};
const MacAddr kWebMac{{0x52, 0x54, 0x00, 0x00, 0x01, 0x01}}, kAppMac{{0x52, 0x54, 0x00, 0x00, 0x02, 0x01}},
    kDbMac{{0x52, 0x54, 0x00, 0x00, 0x03, 0x01}};
const MacAddr kUplinkMac{{0x02, 0xca, 0x1e, 0x00, 0x00, 0x01}}, kUpstreamMac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}};
const Ipv4Addr kWeb = Ipv4Addr::from_octets(203, 0, 113, 10), kWebGw = Ipv4Addr::from_octets(203, 0, 113, 1);
const Ipv4Addr kApp = Ipv4Addr::from_octets(10, 10, 0, 5), kDb = Ipv4Addr::from_octets(10, 20, 0, 7);
const Ipv4Addr kHost = Ipv4Addr::from_octets(198, 51, 100, 10), kUpstream = Ipv4Addr::from_octets(198, 51, 100, 1);
const Ipv4Addr kServer = Ipv4Addr::from_octets(192, 0, 2, 80), kDns = Ipv4Addr::from_octets(192, 0, 2, 53);
constexpr uint8_t kSyn = TcpHdr::kSyn, kAck = TcpHdr::kAck;

// One frame of a burst: port bits and "fix" flags as fuzz_pipeline.cpp reads them.
struct Frame {
    uint8_t flags;
    Bytes bytes;
};

Bytes burst(const std::vector<Frame>& frames) {
    Bytes out{static_cast<uint8_t>(frames.size() - 1)};
    for (const auto& f : frames) {
        out.push_back(f.flags);
        out.push_back(static_cast<uint8_t>(f.bytes.size() >> 8));
        out.push_back(static_cast<uint8_t>(f.bytes.size()));
        out.insert(out.end(), f.bytes.begin(), f.bytes.end());
    }
    return out;
}

// A DHCP client message as udhcpc sends it (client id, hostname, parameter list).
Bytes bootp(uint8_t type, MacAddr mac, uint32_t xid, Ipv4Addr ciaddr = {}, std::optional<Ipv4Addr> requested = {},
            std::optional<Ipv4Addr> server = {}, bool broadcast = false, bool overload = false) {
    Bytes b(240, 0);
    b[0] = 1;
    b[1] = 1;
    b[2] = 6;
    for (int i = 0; i < 4; ++i) b[4 + i] = static_cast<uint8_t>(xid >> (24 - 8 * i));
    if (broadcast) b[10] = 0x80;
    for (int i = 0; i < 4; ++i) b[12 + i] = static_cast<uint8_t>(ciaddr.value >> (24 - 8 * i));
    for (size_t i = 0; i < 6; ++i) b[28 + i] = mac.bytes[i];
    b[236] = 99, b[237] = 130, b[238] = 83, b[239] = 99;
    auto opt = [&](uint8_t code, Bytes v) {
        b.push_back(code);
        b.push_back(static_cast<uint8_t>(v.size()));
        b.insert(b.end(), v.begin(), v.end());
    };
    auto ip = [](Ipv4Addr a) { return Bytes{static_cast<uint8_t>(a.value >> 24), static_cast<uint8_t>(a.value >> 16),
                                            static_cast<uint8_t>(a.value >> 8), static_cast<uint8_t>(a.value)}; };
    opt(53, {type});
    opt(61, {1, mac.bytes[0], mac.bytes[1], mac.bytes[2], mac.bytes[3], mac.bytes[4], mac.bytes[5]});
    if (requested) opt(50, ip(*requested));
    if (server) opt(54, ip(*server));
    opt(12, {'w', 'e', 'b', '-', '1'});
    opt(57, {0x02, 0x40});
    opt(55, {1, 3, 6, 12, 15, 26, 28, 42, 121});
    if (overload) {
        opt(52, {1});
        b[108] = 12, b[109] = 3, b[110] = 'v', b[111] = 'm', b[112] = '1', b[113] = 255;  // file field
    }
    b.push_back(255);
    return b;
}

Bytes dhcp_frame(MacAddr mac, const Bytes& payload) {
    return FrameBuilder().eth(mac, MacAddr::broadcast()).ipv4(Ipv4Addr{}, Ipv4Addr{0xffffffff}, ipproto::kUdp)
        .udp(68, 67, payload).build();
}

Bytes tcp(MacAddr src_mac, MacAddr dst_mac, Ipv4Addr src, Ipv4Addr dst, uint16_t sport, uint16_t dport, uint8_t flags,
          uint32_t seq, uint32_t ack, const Bytes& payload = {}) {
    return FrameBuilder().eth(src_mac, dst_mac).ipv4(src, dst, ipproto::kTcp).tcp(sport, dport, flags, seq, ack, payload).build();
}

Bytes with_id(Bytes frame, uint16_t id) {
    auto* ip = reinterpret_cast<Ipv4Hdr*>(frame.data() + sizeof(EtherHdr));
    ip->id = Be16::from_host(id);
    ip->checksum = 0;
    ip->checksum = internet_checksum(ip, sizeof(Ipv4Hdr));
    return frame;
}

// An ICMP error from `from` quoting the first `quote` bytes of `about`'s IPv4 datagram.
Bytes icmp_error(MacAddr src_mac, MacAddr dst_mac, Ipv4Addr from, Ipv4Addr to, uint8_t type, uint8_t code,
                 const Bytes& about, size_t quote = 28, uint16_t mtu = 0) {
    Bytes q(about.begin() + sizeof(EtherHdr), about.begin() + static_cast<long>(std::min(about.size(), sizeof(EtherHdr) + quote)));
    Bytes hdr{type, code, 0, 0, 0, 0, static_cast<uint8_t>(mtu >> 8), static_cast<uint8_t>(mtu)};
    Bytes f = FrameBuilder().eth(src_mac, dst_mac).ipv4(from, to).raw(hdr).raw(q).build();
    auto* h = reinterpret_cast<IcmpHdr*>(f.data() + sizeof(EtherHdr) + sizeof(Ipv4Hdr));
    h->checksum = 0;
    h->checksum = internet_checksum(h, f.size() - sizeof(EtherHdr) - sizeof(Ipv4Hdr));
    return f;
}

void write(const fs::path& dir, const std::string& name, const Bytes& b) {
    fs::create_directories(dir);
    std::ofstream(dir / name, std::ios::binary).write(reinterpret_cast<const char*>(b.data()), static_cast<long>(b.size()));
}

void instance_corpus(const fs::path& dir) {
    constexpr uint8_t kWebP = 0, kAppP = 1, kDbP = 2, kFix = 4 | 8 | 16;
    const Bytes arp = FrameBuilder().eth(kWebMac, MacAddr::broadcast(), ethertype::kArp).arp(1, kWebMac, kWeb, {}, kWebGw).build();
    write(dir, "arp-who-has-gateway", burst({{kWebP, arp}}));
    write(dir, "arp-probe", burst({{kAppP, FrameBuilder().eth(kAppMac, MacAddr::broadcast(), ethertype::kArp)
                                                 .arp(1, kAppMac, {}, {}, kApp).build()}}));
    write(dir, "dhcp-discover-request", burst({{kWebP, dhcp_frame(kWebMac, bootp(1, kWebMac, 0x1234))},
                                               {kWebP, dhcp_frame(kWebMac, bootp(3, kWebMac, 0x1234, {}, kWeb, kWebGw))}}));
    const Bytes ping = FrameBuilder().eth(kWebMac, kGw).ipv4(kWeb, kWebGw).icmp_echo(0x77, 1, 56).build();
    write(dir, "ping-gateway", burst({{kWebP, ping}}));
    write(dir, "ping-between-instances", burst({{kWebP, FrameBuilder().eth(kWebMac, kGw).ipv4(kWeb, kApp).icmp_echo(1, 1).build()},
                                                {kAppP, FrameBuilder().eth(kAppMac, kGw).ipv4(kApp, kWeb).icmp_echo(1, 1, 32, icmp::kEchoReply).build()}}));
    write(dir, "tcp-handshake-public", burst({{kWebP, tcp(kWebMac, kGw, kWeb, kServer, 41000, 443, kSyn, 1000, 0)},
                                              {kWebP, tcp(kWebMac, kGw, kWeb, kServer, 41000, 443, kAck, 1001, 5001)},
                                              {kWebP, tcp(kWebMac, kGw, kWeb, kServer, 41000, 443, kAck | TcpHdr::kPsh, 1001, 5001,
                                                          Bytes{'G', 'E', 'T', ' ', '/', '\r', '\n'})}}));
    write(dir, "tcp-syn-masqueraded", burst({{kAppP, tcp(kAppMac, kGw, kApp, kServer, 42000, 443, kSyn, 1, 0)}}));
    write(dir, "udp-dns-masqueraded", burst({{kAppP, FrameBuilder().eth(kAppMac, kGw).ipv4(kApp, kDns, ipproto::kUdp)
                                                          .udp(53000, 53, Bytes{0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, 'w', 'w', 'w', 0, 0, 1, 0, 1}).build()}}));
    write(dir, "private-to-internet", burst({{kDbP, tcp(kDbMac, kGw, kDb, kServer, 43000, 443, kSyn, 1, 0)}}));
    const Bytes first = with_id(FrameBuilder().eth(kWebMac, kGw).ipv4(kWeb, kDb, ipproto::kUdp, 64, Ipv4Hdr::kMoreFragments)
                                    .udp(5000, 6000, Bytes(64, 1)).build(), 0x4242);
    const Bytes later = with_id(FrameBuilder().eth(kWebMac, kGw).ipv4(kWeb, kDb, ipproto::kUdp, 64, 9).raw(Bytes(40, 2)).build(), 0x4242);
    write(dir, "fragments", burst({{kWebP, first}, {kWebP, later}}));
    write(dir, "ttl-expiring", burst({{kWebP | kFix, FrameBuilder().eth(kWebMac, kGw).ipv4(kWeb, kApp, ipproto::kUdp, 1).udp(1, 2).build()}}));
    write(dir, "too-big-with-df", burst({{kWebP, FrameBuilder().eth(kWebMac, kGw).ipv4(kWeb, kApp, ipproto::kUdp).udp(1, 2, Bytes(1422, 7)).build()}}));
    const Bytes udp_in = FrameBuilder().eth(kGw, kAppMac).ipv4(kWeb, kApp, ipproto::kUdp).udp(5353, 9999, Bytes(8, 0)).build();
    write(dir, "icmp-port-unreachable", burst({{kAppP, icmp_error(kAppMac, kGw, kApp, kWeb, icmp::kDestUnreachable, 3, udp_in)}}));
    write(dir, "spoofed-source", burst({{kWebP, FrameBuilder().eth(kWebMac, kGw).ipv4(kDb, kApp).icmp_echo(1, 1).build()}}));
    write(dir, "mixed-burst", burst({{kWebP, arp}, {kWebP, ping}, {kAppP, tcp(kAppMac, kGw, kApp, kServer, 42001, 80, kSyn, 9, 0)},
                                     {kDbP, FrameBuilder().eth(kDbMac, kGw).ipv4(kDb, kWeb, ipproto::kUdp).udp(1, 2).build()}}));
}

void uplink_corpus(const fs::path& dir) {
    constexpr uint8_t kFix = 4 | 16;
    write(dir, "arp-who-has-host", burst({{0, FrameBuilder().eth(kUpstreamMac, MacAddr::broadcast(), ethertype::kArp)
                                                 .arp(1, kUpstreamMac, kUpstream, {}, kHost).build()}}));
    write(dir, "arp-reply-gateway", burst({{0, FrameBuilder().eth(kUpstreamMac, kUplinkMac, ethertype::kArp)
                                                  .arp(2, kUpstreamMac, kUpstream, kUplinkMac, kHost).build()}}));
    write(dir, "arp-gratuitous", burst({{0, FrameBuilder().eth({{0x02, 0, 0, 0, 0, 0x66}}, MacAddr::broadcast(), ethertype::kArp)
                                               .arp(1, {{0x02, 0, 0, 0, 0, 0x66}}, kUpstream, {}, kUpstream).build()}}));
    write(dir, "syn-to-public-443", burst({{kFix, tcp(kUpstreamMac, kUplinkMac, kServer, kWeb, 50000, 443, kSyn, 77, 0)}}));
    write(dir, "syn-to-public-22", burst({{kFix, tcp(kUpstreamMac, kUplinkMac, kServer, kWeb, 50001, 22, kSyn, 77, 0)}}));
    write(dir, "ping-host", burst({{0, FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, kHost).icmp_echo(5, 1).build()}}));
    write(dir, "to-nat-port-unmapped", burst({{0, tcp(kUpstreamMac, kUplinkMac, kServer, kHost, 443, 20001, kSyn | kAck, 1, 2)}}));
    write(dir, "to-nat-network", burst({{0, tcp(kUpstreamMac, kUplinkMac, kServer, kApp, 443, 42000, kSyn, 1, 0)}}));
    const Bytes out = tcp(kUplinkMac, kUpstreamMac, kHost, kServer, 20000, 443, kAck, 1, 1, Bytes(1400, 0));
    write(dir, "icmp-frag-needed", burst({{0, icmp_error(kUpstreamMac, kUplinkMac, kUpstream, kHost, icmp::kDestUnreachable,
                                                         icmp::kFragmentationNeeded, out, 28, 1280)}}));
    const Bytes first = with_id(FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, kWeb, ipproto::kUdp, 60, Ipv4Hdr::kMoreFragments)
                                    .udp(53, 5353, Bytes(64, 3)).build(), 0x99);
    const Bytes later = with_id(FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, kWeb, ipproto::kUdp, 60, 9).raw(Bytes(100, 4)).build(), 0x99);
    write(dir, "fragments-in", burst({{0, first}, {0, later}}));
    write(dir, "martian-source", burst({{0, FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(Ipv4Addr::from_octets(127, 0, 0, 1), kWeb).icmp_echo(1, 1).build()}}));
    write(dir, "transit", burst({{0, FrameBuilder().eth(kUpstreamMac, kUplinkMac).ipv4(kServer, Ipv4Addr::from_octets(192, 0, 2, 99)).icmp_echo(1, 1).build()}}));
}

void dhcp_corpus(const fs::path& dir) {
    auto in = [](uint8_t flags, const Bytes& payload) {
        Bytes b{flags};
        b.insert(b.end(), payload.begin(), payload.end());
        return b;
    };
    write(dir, "discover", in(0, bootp(1, kWebMac, 0x11)));
    write(dir, "discover-broadcast-flag", in(1, bootp(1, kAppMac, 0x12, {}, {}, {}, true)));
    write(dir, "request-selecting", in(0, bootp(3, kWebMac, 0x13, {}, kWeb, kWebGw)));
    write(dir, "request-init-reboot-wrong", in(2, bootp(3, kDbMac, 0x14, {}, Ipv4Addr::from_octets(10, 20, 0, 99))));
    write(dir, "request-renewing", in(4, bootp(3, kWebMac, 0x15, kWeb)));
    write(dir, "inform", in(4, bootp(8, kWebMac, 0x16, kWeb)));
    write(dir, "release", in(4, bootp(7, kWebMac, 0x17, kWeb, {}, kWebGw)));
    write(dir, "decline", in(0, bootp(4, kWebMac, 0x18, {}, kWeb, kWebGw)));
    write(dir, "overload-file", in(0, bootp(1, kWebMac, 0x19, {}, {}, {}, false, true)));
}

}  // namespace
}  // namespace calyx::fuzz

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const std::filesystem::path dir = argv[1];
    calyx::fuzz::instance_corpus(dir / "instance");
    calyx::fuzz::uplink_corpus(dir / "uplink");
    calyx::fuzz::dhcp_corpus(dir / "dhcp");
    return 0;
}
