// libFuzzer target: the whole pipeline on arbitrary frames, from the instance ports
// (calyx_fuzz_instance) or from the uplink (calyx_fuzz_uplink, built with CALYX_FUZZ_UPLINK).
//
// An input is a burst: a count byte, then per frame a flags byte, a 16-bit big-endian length
// and the frame. The flags let the fuzzer past the first checks without having to guess them:
//   bits 0-1  the instance port (0 web-1, 1 app-1, 2 db-1; ignored from the uplink)
//   bit 2     set the Ethernet addresses right (instance -> gateway MAC, upstream -> uplink MAC)
//   bit 3     set the IPv4 source right (the instance's own address), from instances only
//   bit 4     recompute the IPv4 header checksum
// The site (tests/fuzz/fuzz_site.hpp) lives across inputs, so a burst may hit connections an
// earlier one opened. tests/fuzz/corpus/{instance,uplink} hold the seed inputs.
#include <cstddef>
#include <cstdint>

#include "calyx/headers.hpp"
#include "fuzz_site.hpp"

namespace calyx::fuzz {
namespace {

const MacAddr kGatewayMac{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}};
const std::pair<MacAddr, Ipv4Addr> kInstances[] = {
    {{{0x52, 0x54, 0x00, 0x00, 0x01, 0x01}}, Ipv4Addr::from_octets(203, 0, 113, 10)},
    {{{0x52, 0x54, 0x00, 0x00, 0x02, 0x01}}, Ipv4Addr::from_octets(10, 10, 0, 5)},
    {{{0x52, 0x54, 0x00, 0x00, 0x03, 0x01}}, Ipv4Addr::from_octets(10, 20, 0, 7)},
};

#ifdef CALYX_FUZZ_UPLINK
constexpr bool kFromUplink = true;
#else
constexpr bool kFromUplink = false;
#endif

std::pair<uint16_t, std::vector<uint8_t>> frame_of(uint8_t flags, const uint8_t* data, size_t len) {
    std::vector<uint8_t> bytes(data, data + len);
    const uint16_t port = kFromUplink ? kUplinkPort : static_cast<uint16_t>((flags & 3) % 3);
    auto* eth = bytes.size() >= sizeof(EtherHdr) ? reinterpret_cast<EtherHdr*>(bytes.data()) : nullptr;
    if (eth && (flags & 4)) {
        eth->src = kFromUplink ? kUpstreamMac : kInstances[port].first;
        if (!eth->dst.is_multicast()) eth->dst = kFromUplink ? kUplinkMac : kGatewayMac;
    }
    auto* ip = eth && eth->type.host() == ethertype::kIpv4 && bytes.size() >= sizeof(EtherHdr) + sizeof(Ipv4Hdr)
                   ? reinterpret_cast<Ipv4Hdr*>(bytes.data() + sizeof(EtherHdr))
                   : nullptr;
    if (ip && (flags & 8) && !kFromUplink) ip->src = kInstances[port].second.to_be();
    if (ip && (flags & 16)) {
        const size_t ihl = size_t{ip->version_ihl & 0x0fu} * 4;
        if (ihl >= sizeof(Ipv4Hdr) && sizeof(EtherHdr) + ihl <= bytes.size()) {
            ip->checksum = 0;
            ip->checksum = internet_checksum(ip, ihl);
        }
    }
    return {port, std::move(bytes)};
}

}  // namespace
}  // namespace calyx::fuzz

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    calyx::fuzz::init_eal();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace calyx::fuzz;
    static Site site;
    if (size < 1) return 0;
    const size_t count = data[0] % 8 + 1;
    size_t at = 1;
    std::vector<std::pair<uint16_t, std::vector<uint8_t>>> frames;
    for (size_t i = 0; i < count && at + 3 <= size; ++i) {
        const uint8_t flags = data[at];
        size_t len = size_t{data[at + 1]} << 8 | data[at + 2];
        at += 3;
        len = std::min(len, size - at);
        frames.push_back(frame_of(flags, data + at, len));
        at += len;
    }
    if (!frames.empty()) site.run(frames);
    return 0;
}
