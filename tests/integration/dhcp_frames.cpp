#include "dhcp_frames.hpp"

#include "calyx/headers.hpp"
#include "test_frames.hpp"

namespace calyx::test {
namespace {

constexpr size_t kBootpFixed = 236;  // op .. file
constexpr uint8_t kMagic[4] = {99, 130, 83, 99};

void put_u32(Bytes& b, uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}
void put_ip(Bytes& b, Ipv4Addr a) {
    put_u32(b, a.value);
}

uint32_t get_u32(const uint8_t* p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

}  // namespace

Bytes dhcp_payload(const DhcpClientMessage& m) {
    Bytes b;
    b.push_back(1);  // op: BOOTREQUEST
    b.push_back(1);  // htype: Ethernet
    b.push_back(6);  // hlen
    b.push_back(0);  // hops
    put_u32(b, m.xid);
    b.push_back(0);  // secs
    b.push_back(0);
    b.push_back(m.broadcast_flag ? 0x80 : 0);  // flags
    b.push_back(0);
    put_ip(b, m.ciaddr);
    put_ip(b, Ipv4Addr{});  // yiaddr
    put_ip(b, Ipv4Addr{});  // siaddr
    put_ip(b, Ipv4Addr{});  // giaddr
    b.insert(b.end(), m.mac.bytes.begin(), m.mac.bytes.end());
    b.resize(b.size() + 10 + 64 + 128, 0);  // chaddr padding, sname, file
    b.insert(b.end(), std::begin(kMagic), std::end(kMagic));
    b.insert(b.end(), {dhcp::kMessageType, 1, m.type});
    if (m.requested) {
        b.insert(b.end(), {dhcp::kRequestedAddress, 4});
        put_ip(b, *m.requested);
    }
    if (m.server_id) {
        b.insert(b.end(), {dhcp::kServerId, 4});
        put_ip(b, *m.server_id);
    }
    if (!m.parameter_list.empty()) {
        b.push_back(dhcp::kParameterList);
        b.push_back(static_cast<uint8_t>(m.parameter_list.size()));
        b.insert(b.end(), m.parameter_list.begin(), m.parameter_list.end());
    }
    b.push_back(dhcp::kEnd);
    // Real clients pad to the 300-byte BOOTP minimum.
    if (b.size() < 300) b.resize(300, dhcp::kPad);
    return b;
}

Bytes dhcp_client_frame(const DhcpClientMessage& m) {
    return FrameBuilder()
        .eth(m.mac, MacAddr::broadcast())
        .ipv4(m.ciaddr, Ipv4Addr{0xffffffffu}, ipproto::kUdp, 64, 0)
        .udp(dhcp::kClientPort, dhcp::kServerPort, dhcp_payload(m))
        .build();
}

std::optional<DhcpMessage> DhcpMessage::parse(const Bytes& f) {
    if (!is_udp(f)) return std::nullopt;
    const size_t start = l4_offset(f) + sizeof(UdpHdr);
    const uint16_t udp_len = udp_of(f).length.host();
    if (udp_len < sizeof(UdpHdr) || l4_offset(f) + udp_len > f.size()) return std::nullopt;
    const size_t end = l4_offset(f) + udp_len;
    if (end - start < kBootpFixed + 4) return std::nullopt;
    const uint8_t* p = f.data() + start;
    DhcpMessage m;
    m.op = p[0];
    if (p[1] != 1 || p[2] != 6) return std::nullopt;
    m.xid = get_u32(p + 4);
    m.ciaddr = Ipv4Addr{get_u32(p + 12)};
    m.yiaddr = Ipv4Addr{get_u32(p + 16)};
    m.siaddr = Ipv4Addr{get_u32(p + 20)};
    m.giaddr = Ipv4Addr{get_u32(p + 24)};
    std::copy(p + 28, p + 34, m.chaddr.bytes.begin());
    if (std::memcmp(p + kBootpFixed, kMagic, 4) != 0) return std::nullopt;
    size_t i = kBootpFixed + 4;
    const size_t n = end - start;
    while (i < n) {
        const uint8_t code = p[i++];
        if (code == dhcp::kPad) continue;
        if (code == dhcp::kEnd) return m;
        if (i >= n) return std::nullopt;
        const uint8_t len = p[i++];
        if (i + len > n) return std::nullopt;
        m.options[code] = Bytes(p + i, p + i + len);
        i += len;
    }
    return std::nullopt;  // no END option
}

std::optional<uint8_t> DhcpMessage::message_type() const {
    auto it = options.find(dhcp::kMessageType);
    if (it == options.end() || it->second.size() != 1) return std::nullopt;
    return it->second[0];
}

std::optional<Ipv4Addr> DhcpMessage::ip_option(uint8_t code) const {
    auto it = options.find(code);
    if (it == options.end() || it->second.size() != 4) return std::nullopt;
    return Ipv4Addr{get_u32(it->second.data())};
}

std::vector<Ipv4Addr> DhcpMessage::ip_list_option(uint8_t code) const {
    std::vector<Ipv4Addr> out;
    auto it = options.find(code);
    if (it == options.end() || it->second.size() % 4 != 0) return out;
    for (size_t i = 0; i < it->second.size(); i += 4)
        out.push_back(Ipv4Addr{get_u32(it->second.data() + i)});
    return out;
}

std::optional<uint32_t> DhcpMessage::u32_option(uint8_t code) const {
    auto it = options.find(code);
    if (it == options.end() || it->second.size() != 4) return std::nullopt;
    return get_u32(it->second.data());
}

std::optional<uint16_t> DhcpMessage::u16_option(uint8_t code) const {
    auto it = options.find(code);
    if (it == options.end() || it->second.size() != 2) return std::nullopt;
    return static_cast<uint16_t>((it->second[0] << 8) | it->second[1]);
}

std::optional<std::vector<std::pair<Ipv4Prefix, Ipv4Addr>>> DhcpMessage::classless_routes() const {
    auto it = options.find(dhcp::kClasslessRoutes);
    if (it == options.end()) return std::nullopt;
    const Bytes& v = it->second;
    std::vector<std::pair<Ipv4Prefix, Ipv4Addr>> routes;
    size_t i = 0;
    while (i < v.size()) {
        const uint8_t len = v[i++];
        if (len > 32) return std::nullopt;
        const size_t octets = (len + 7) / 8;
        if (i + octets + 4 > v.size()) return std::nullopt;
        uint32_t dst = 0;
        for (size_t k = 0; k < octets; ++k) dst |= uint32_t{v[i + k]} << (24 - 8 * k);
        i += octets;
        const Ipv4Addr router{get_u32(v.data() + i)};
        i += 4;
        routes.push_back({Ipv4Prefix{Ipv4Addr{dst}, len}, router});
    }
    return routes;
}

FramePredicate is_dhcp_reply(uint8_t type, uint32_t xid) {
    return [=](const Bytes& f) {
        if (!is_any_dhcp_reply(f)) return false;
        auto m = DhcpMessage::parse(f);
        return m && m->op == 2 && m->xid == xid && m->message_type() == type;
    };
}

bool is_any_dhcp_reply(const Bytes& f) {
    return is_udp(f) && udp_of(f).src_port.host() == dhcp::kServerPort &&
           udp_of(f).dst_port.host() == dhcp::kClientPort;
}

}  // namespace calyx::test
