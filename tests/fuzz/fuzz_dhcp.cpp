// libFuzzer target: the DHCP server. An input is one byte of framing choices and a BOOTP
// payload:
//   bits 0-1  the client instance (0 web-1, 1 app-1, 2 db-1)
//   bit 2     from the instance's address to its gateway (a renewing client), else from
//             0.0.0.0 to 255.255.255.255 (a client in INIT)
// The payload goes to parse_dhcp directly and, as a UDP datagram from port 68 to 67 in a frame
// with valid checksums, through the whole pipeline; a reply must be a well-formed IPv4/UDP
// datagram to port 68 (or 67 through a relay) inside its buffer. tests/fuzz/corpus/dhcp holds
// the seed inputs (the messages udhcpc and Windows-like clients send).
#include <cstddef>
#include <cstdint>

#include "calyx/headers.hpp"
#include "dp/dhcp.hpp"
#include "fuzz_site.hpp"
#include "support/frame_builder.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    calyx::fuzz::init_eal();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace calyx;
    using namespace calyx::fuzz;
    static Site site;
    if (size < 1 || size > 1400) return 0;
    const uint8_t flags = data[0];
    const std::vector<uint8_t> payload(data + 1, data + size);
    (void)dp::parse_dhcp(payload.data(), payload.size());

    const uint16_t port = static_cast<uint16_t>((flags & 3) % 3);
    const config::InstanceConfig& inst = site.config.instances[port];
    const config::NetworkConfig& net = *site.config.find_network(inst.network);
    const bool renewing = flags & 4;
    const auto frame = test::FrameBuilder()
                           .eth(inst.mac, renewing ? MacAddr{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}} : MacAddr::broadcast())
                           .ipv4(renewing ? inst.ipv4 : Ipv4Addr{}, renewing ? net.gateway : Ipv4Addr{0xffffffff},
                                 ipproto::kUdp)
                           .udp(dp::kDhcpClientPort, dp::kDhcpServerPort, payload)
                           .build();
    dp::Batch batch;
    auto buffer = std::make_unique<uint8_t[]>(kHeadroom + kDataRoom);
    const uint32_t len = static_cast<uint32_t>(std::min<size_t>(frame.size(), kDataRoom));
    std::memcpy(buffer.get() + kHeadroom, frame.data(), len);
    batch.count = 1;
    batch.frames[0] = dp::Frame{buffer.get(), kHeadroom + kDataRoom, kHeadroom, len};
    batch.admit(0, port);
    dp::run_pipeline(batch, *site.snap, site.ctx);
    const dp::PacketMeta& m = batch.meta[0];
    const dp::Frame& f = batch.frames[0];
    static const bool verbose = std::getenv("CALYX_FUZZ_VERBOSE") != nullptr;  // to see what a seed does
    if (verbose)
        std::fprintf(stderr, "verdict %d reason %s\n", static_cast<int>(m.verdict), drop_reason_info(m.reason).name.data());
    CALYX_FUZZ_CHECK(m.verdict != dp::Verdict::pending, "a verdict");
    CALYX_FUZZ_CHECK(uint64_t{f.off} + f.len <= f.buf_len, "inside its buffer");
    if (m.verdict != dp::Verdict::reply) return 0;
    const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, sizeof(EtherHdr));
    CALYX_FUZZ_CHECK(ip, "a reply has an IPv4 header");
    CALYX_FUZZ_CHECK(internet_checksum(ip, ip->header_length()) == 0, "a reply's IPv4 checksum is valid");
    CALYX_FUZZ_CHECK(sizeof(EtherHdr) + ip->total_length.host() <= f.len, "a reply's IPv4 length fits the frame");
    if (ip->protocol != ipproto::kUdp) return 0;  // an ICMP error about it
    const auto* udp = header_at<UdpHdr>(f.data(), f.len, sizeof(EtherHdr) + ip->header_length());
    CALYX_FUZZ_CHECK(udp, "a reply has a UDP header");
    CALYX_FUZZ_CHECK(udp->length.host() == ip->total_length.host() - ip->header_length(), "UDP length matches IPv4's");
    CALYX_FUZZ_CHECK(udp->src_port.host() == dp::kDhcpServerPort, "from the server port");
    CALYX_FUZZ_CHECK(udp->length.host() >= sizeof(UdpHdr) + dp::kBootpMinReplyLength, "a reply is at least 300 bytes of BOOTP");
    return 0;
}
