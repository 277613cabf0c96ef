// DHCP server for instance links: strict parser, in-place responder, option encoder.
#include "dp/dhcp.hpp"

#include <algorithm>
#include <cstring>
#include <span>

namespace calyx::dp {
namespace {

// ---- parsing ---------------------------------------------------------------------------------

enum class Overload : uint8_t { none = 0, file = 1, sname = 2, both = 3 };

struct OptionState {
    bool has_type = false;
    uint8_t type = 0;
    bool has_overload = false;
    uint8_t overload = 0;
    std::optional<Ipv4Addr> requested_ip;
    std::optional<Ipv4Addr> server_id;
};

// Host values of fields in packed headers, taken by value: a field of a packed struct need not
// be aligned, so calling Be16/Be32 members on it in place would be undefined behaviour.
uint16_t host(Be16 v) {
    return v.host();
}
uint32_t host(Be32 v) {
    return v.host();
}

Ipv4Addr read_ipv4(const uint8_t* p) {
    return Ipv4Addr::from_octets(p[0], p[1], p[2], p[3]);
}

// Walks one option area [p, p+n). `primary` is the options field proper: only there is
// option 52 honoured. Returns false on anything malformed, including a missing END.
// Every iteration advances by at least one byte, so the walk ends after at most n steps.
bool walk_options(const uint8_t* p, size_t n, bool primary, OptionState& st) {
    size_t i = 0;
    while (i < n) {
        const uint8_t code = p[i];
        if (code == dhcp_option::kPad) {
            ++i;
            continue;
        }
        if (code == dhcp_option::kEnd) return true;
        if (n - i < 2) return false;
        const size_t olen = p[i + 1];
        if (n - i - 2 < olen) return false;
        const uint8_t* v = p + i + 2;
        switch (code) {
            case dhcp_option::kMessageType:
                if (st.has_type || olen != 1) return false;
                if (v[0] < static_cast<uint8_t>(DhcpMessageType::discover) ||
                    v[0] > static_cast<uint8_t>(DhcpMessageType::inform))
                    return false;
                st.has_type = true;
                st.type = v[0];
                break;
            case dhcp_option::kRequestedIp:
                if (st.requested_ip || olen != 4) return false;
                st.requested_ip = read_ipv4(v);
                break;
            case dhcp_option::kServerId:
                if (st.server_id || olen != 4) return false;
                st.server_id = read_ipv4(v);
                break;
            case dhcp_option::kOverload:
                // Inside file/sname an overload option would point at itself or back: ignore it.
                if (!primary) break;
                if (st.has_overload || olen != 1 || v[0] < 1 || v[0] > 3) return false;
                st.has_overload = true;
                st.overload = v[0];
                break;
            default:
                break;
        }
        i += 2 + olen;
    }
    return false;  // ran off the end without END
}

// ---- replying --------------------------------------------------------------------------------

struct Decision {
    DhcpMessageType type;  // offer, ack or nak
    Ipv4Addr yiaddr;
    Ipv4Addr ciaddr;  // echoed in ACK, zero otherwise
    std::span<const uint8_t> options;
};

DhcpReplyType counter_type(DhcpMessageType t) {
    switch (t) {
        case DhcpMessageType::offer:
            return DhcpReplyType::offer;
        case DhcpMessageType::ack:
            return DhcpReplyType::ack;
        default:
            return DhcpReplyType::nak;
    }
}

uint8_t* put_option(uint8_t* p, uint8_t code, const void* value, uint8_t len) {
    p[0] = code;
    p[1] = len;
    std::memcpy(p + 2, value, len);
    return p + 2 + len;
}

struct Reply {
    const DhcpMessage& msg;
    const Decision& d;
    const NetworkView& net;
    MacAddr gateway_mac;
    MacAddr request_src;  // the Ethernet source of the request (a relay, when giaddr is set)
};

// Builds the reply from the first byte of the frame. Everything it needs from the request is in
// `r` already, so overwriting the request is safe.
DhcpOutcome build_reply(Frame& frame, const Reply& r) {
    const bool nak = r.d.type == DhcpMessageType::nak;
    const size_t options_len = 3 + r.d.options.size() + (nak ? 6 : 0) + 1;
    const size_t bootp_len = std::max(kBootpFixedLength + options_len, kBootpMinReplyLength);
    constexpr size_t kHeaders = sizeof(EtherHdr) + sizeof(Ipv4Hdr) + sizeof(UdpHdr);
    const size_t total = kHeaders + bootp_len;
    if (total - sizeof(EtherHdr) > 0xffff || !frame.resize(static_cast<uint32_t>(total)))
        return DhcpOutcome::dropped(DropReason::no_buffer);

    uint8_t* data = frame.data();
    std::memset(data, 0, total);
    auto* eth = reinterpret_cast<EtherHdr*>(data);
    auto* ip = reinterpret_cast<Ipv4Hdr*>(data + sizeof(EtherHdr));
    auto* udp = reinterpret_cast<UdpHdr*>(data + sizeof(EtherHdr) + sizeof(Ipv4Hdr));
    auto* bootp = reinterpret_cast<BootpHdr*>(data + kHeaders);

    // Destination, RFC 2131 4.1.
    const DhcpMessage& m = r.msg;
    uint16_t flags = m.flags;
    Ipv4Addr ip_dst = Ipv4Addr{0xffffffffu};
    MacAddr eth_dst = MacAddr::broadcast();
    uint16_t dst_port = kDhcpClientPort;
    if (!m.giaddr.is_zero()) {
        // Through a relay: to its server port; a NAK asks the relay to broadcast.
        ip_dst = m.giaddr;
        eth_dst = r.request_src;
        dst_port = kDhcpServerPort;
        if (nak) flags |= kBootpBroadcastFlag;
    } else if (nak) {
        // broadcast
    } else if (!m.ciaddr.is_zero()) {
        // RENEWING, REBINDING and INFORM: the client has its address configured.
        ip_dst = m.ciaddr;
        eth_dst = m.chaddr;
    } else if (!m.broadcast() && !r.d.yiaddr.is_zero()) {
        ip_dst = r.d.yiaddr;
        eth_dst = m.chaddr;
    }

    eth->dst = eth_dst;
    eth->src = r.gateway_mac;
    eth->type = Be16::from_host(ethertype::kIpv4);

    bootp->op = BootpHdr::kBootReply;
    bootp->htype = BootpHdr::kHtypeEthernet;
    bootp->hlen = 6;
    bootp->xid = Be32::from_host(m.xid);
    bootp->flags = Be16::from_host(flags);
    bootp->ciaddr = r.d.ciaddr.to_be();
    bootp->yiaddr = r.d.yiaddr.to_be();
    bootp->giaddr = m.giaddr.to_be();
    std::memcpy(bootp->chaddr, m.chaddr.bytes.data(), 6);
    bootp->cookie = Be32::from_host(kDhcpMagicCookie);

    uint8_t* opt = data + kHeaders + kBootpFixedLength;
    const uint8_t type = static_cast<uint8_t>(r.d.type);
    opt = put_option(opt, dhcp_option::kMessageType, &type, 1);
    if (nak) {
        const Be32 server = r.net.gateway.to_be();
        opt = put_option(opt, dhcp_option::kServerId, &server, 4);
    }
    if (!r.d.options.empty()) {
        std::memcpy(opt, r.d.options.data(), r.d.options.size());
        opt += r.d.options.size();
    }
    *opt = dhcp_option::kEnd;  // the rest is already zero: PAD

    const size_t udp_len = sizeof(UdpHdr) + bootp_len;
    ip->version_ihl = 0x45;
    ip->total_length = Be16::from_host(static_cast<uint16_t>(sizeof(Ipv4Hdr) + udp_len));
    ip->ttl = 64;
    ip->protocol = ipproto::kUdp;
    ip->src = r.net.gateway.to_be();
    ip->dst = ip_dst.to_be();
    ip->checksum = internet_checksum(ip, sizeof(Ipv4Hdr));

    udp->src_port = Be16::from_host(kDhcpServerPort);
    udp->dst_port = Be16::from_host(dst_port);
    udp->length = Be16::from_host(static_cast<uint16_t>(udp_len));
    const uint16_t sum = l4_checksum_ipv4(*ip, udp, udp_len);
    udp->checksum = sum == 0 ? 0xffff : sum;  // 0 would mean "no checksum" (RFC 768)

    DhcpOutcome out;
    out.verdict = Verdict::reply;
    out.reply = counter_type(r.d.type);
    return out;
}

// ---- encoding --------------------------------------------------------------------------------

void append_be32(std::vector<uint8_t>& v, uint32_t x) {
    v.push_back(static_cast<uint8_t>(x >> 24));
    v.push_back(static_cast<uint8_t>(x >> 16));
    v.push_back(static_cast<uint8_t>(x >> 8));
    v.push_back(static_cast<uint8_t>(x));
}

// One option; a value longer than 255 bytes becomes several consecutive options with the same
// code, which the client concatenates (RFC 3396).
void append_option(std::vector<uint8_t>& out, uint8_t code, const std::vector<uint8_t>& value) {
    size_t done = 0;
    do {
        const size_t chunk = std::min<size_t>(value.size() - done, 255);
        out.push_back(code);
        out.push_back(static_cast<uint8_t>(chunk));
        out.insert(out.end(), value.begin() + static_cast<std::ptrdiff_t>(done),
                   value.begin() + static_cast<std::ptrdiff_t>(done + chunk));
        done += chunk;
    } while (done < value.size());
}

void append_u32_option(std::vector<uint8_t>& out, uint8_t code, uint32_t x) {
    std::vector<uint8_t> v;
    append_be32(v, x);
    append_option(out, code, v);
}

// RFC 3442: prefix length, the significant octets of the destination, the router.
void append_classless_route(std::vector<uint8_t>& v, const Ipv4Prefix& dst, Ipv4Addr router) {
    v.push_back(dst.length);
    const uint32_t a = dst.addr.value & dst.mask();
    for (int i = 0; i < (dst.length + 7) / 8; ++i)
        v.push_back(static_cast<uint8_t>(a >> (24 - 8 * i)));
    append_be32(v, router.value);
}

}  // namespace

std::expected<DhcpMessage, DropReason> parse_dhcp(const uint8_t* bootp, size_t len) noexcept {
    const auto bad = std::unexpected(DropReason::dhcp_malformed);
    if (bootp == nullptr || len < kBootpFixedLength) return bad;
    const auto* h = reinterpret_cast<const BootpHdr*>(bootp);
    if (h->op != BootpHdr::kBootRequest || h->htype != BootpHdr::kHtypeEthernet || h->hlen != 6)
        return bad;
    if (host(h->cookie) != kDhcpMagicCookie) return bad;

    OptionState st;
    if (!walk_options(bootp + kBootpFixedLength, len - kBootpFixedLength, true, st)) return bad;
    // RFC 2131 4.1 / RFC 3396: the options field, then file, then sname; each ends with END.
    if ((st.overload & static_cast<uint8_t>(Overload::file)) &&
        !walk_options(h->file, sizeof(h->file), false, st))
        return bad;
    if ((st.overload & static_cast<uint8_t>(Overload::sname)) &&
        !walk_options(h->sname, sizeof(h->sname), false, st))
        return bad;
    if (!st.has_type) return bad;

    DhcpMessage m;
    m.type = static_cast<DhcpMessageType>(st.type);
    m.xid = host(h->xid);
    m.secs = host(h->secs);
    m.flags = host(h->flags);
    m.ciaddr = Ipv4Addr::from_be(h->ciaddr);
    m.giaddr = Ipv4Addr::from_be(h->giaddr);
    std::memcpy(m.chaddr.bytes.data(), h->chaddr, 6);
    m.requested_ip = st.requested_ip;
    m.server_id = st.server_id;
    return m;
}

DhcpOutcome dhcp_respond(Frame& frame, const PacketMeta& meta, const InstanceView& inst,
                         const NetworkView& net, MacAddr gateway_mac) noexcept {
    uint8_t* data = frame.data();
    const auto* eth = header_at<EtherHdr>(data, frame.len, 0);
    const auto* ip = header_at<Ipv4Hdr>(data, frame.len, meta.l3_offset);
    if (eth == nullptr || ip == nullptr) return DhcpOutcome::dropped(DropReason::dhcp_malformed);
    // The UDP datagram must lie inside the IPv4 packet, which must lie inside the frame
    // (trailing Ethernet padding is allowed).
    const size_t ip_end = size_t{meta.l3_offset} + host(ip->total_length);
    if (ip_end > frame.len) return DhcpOutcome::dropped(DropReason::dhcp_malformed);
    const auto* udp = header_at<UdpHdr>(data, ip_end, meta.l4_offset);
    if (udp == nullptr) return DhcpOutcome::dropped(DropReason::dhcp_malformed);
    const size_t udp_len = host(udp->length);
    if (udp_len < sizeof(UdpHdr) || udp_len > ip_end - meta.l4_offset)
        return DhcpOutcome::dropped(DropReason::dhcp_malformed);
    // The UDP checksum is not verified: a virtio guest may hand over a partial checksum that
    // the device was asked to complete.

    const auto parsed =
        parse_dhcp(data + meta.l4_offset + sizeof(UdpHdr), udp_len - sizeof(UdpHdr));
    if (!parsed) return DhcpOutcome::dropped(parsed.error());
    const DhcpMessage& m = *parsed;
    if (m.chaddr != inst.mac) return DhcpOutcome::dropped(DropReason::dhcp_unknown_client);

    const std::span<const uint8_t> lease_options{net.dhcp_lease_options};
    const std::span<const uint8_t> inform_options{net.dhcp_inform_options};
    const bool for_us = !m.server_id || *m.server_id == net.gateway;
    Decision d{DhcpMessageType::nak, Ipv4Addr{}, Ipv4Addr{}, {}};
    switch (m.type) {
        case DhcpMessageType::discover:
            d = {DhcpMessageType::offer, inst.ipv4, Ipv4Addr{}, lease_options};
            break;
        case DhcpMessageType::request: {
            if (!for_us) return DhcpOutcome::dropped(DropReason::dhcp_not_for_us);
            bool ok = false;
            if (m.requested_ip) {
                ok = *m.requested_ip == inst.ipv4;  // SELECTING or INIT-REBOOT
            } else if (!m.ciaddr.is_zero()) {
                ok = m.ciaddr == inst.ipv4;  // RENEWING or REBINDING
            }
            if (ok) d = {DhcpMessageType::ack, inst.ipv4, m.ciaddr, lease_options};
            break;
        }
        case DhcpMessageType::inform:
            if (!for_us) return DhcpOutcome::dropped(DropReason::dhcp_not_for_us);
            d = {DhcpMessageType::ack, Ipv4Addr{}, m.ciaddr, inform_options};
            break;
        case DhcpMessageType::release:
        case DhcpMessageType::decline: {
            if (!for_us) return DhcpOutcome::dropped(DropReason::dhcp_not_for_us);
            DhcpOutcome out;
            out.verdict = Verdict::consumed;
            out.released = m.type == DhcpMessageType::release;
            out.declined = m.type == DhcpMessageType::decline;
            return out;
        }
        case DhcpMessageType::offer:
        case DhcpMessageType::ack:
        case DhcpMessageType::nak:
            return DhcpOutcome::dropped(DropReason::dhcp_not_for_us);
    }
    return build_reply(frame, Reply{m, d, net, gateway_mac, eth->src});
}

std::vector<uint8_t> encode_dhcp_network_options(const DhcpNetworkSettings& net,
                                                 bool with_lease) {
    std::vector<uint8_t> out;
    std::vector<uint8_t> v;
    const auto ipv4_value = [&v](Ipv4Addr a) -> const std::vector<uint8_t>& {
        v.clear();
        append_be32(v, a.value);
        return v;
    };

    append_option(out, dhcp_option::kServerId, ipv4_value(net.gateway));
    if (with_lease) {
        const uint32_t lease = net.lease_seconds;
        append_u32_option(out, dhcp_option::kLeaseTime, lease);
        if (lease != 0xffffffffu) {  // an infinite lease is never renewed
            append_u32_option(out, dhcp_option::kRenewalTime, lease / 2);
            append_u32_option(out, dhcp_option::kRebindingTime,
                              static_cast<uint32_t>(uint64_t{lease} * 7 / 8));
        }
    }
    append_option(out, dhcp_option::kSubnetMask, ipv4_value(Ipv4Addr{net.cidr.mask()}));
    append_option(out, dhcp_option::kRouter, ipv4_value(net.gateway));
    if (!net.dns.empty()) {
        v.clear();
        for (const Ipv4Addr& a : net.dns) append_be32(v, a.value);
        append_option(out, dhcp_option::kDns, v);
    }
    if (net.domain && !net.domain->empty()) {
        v.assign(net.domain->begin(), net.domain->end());
        append_option(out, dhcp_option::kDomainName, v);
    }
    v.clear();
    v.push_back(static_cast<uint8_t>(net.mtu >> 8));
    v.push_back(static_cast<uint8_t>(net.mtu));
    append_option(out, dhcp_option::kInterfaceMtu, v);

    v.clear();
    append_classless_route(v, Ipv4Prefix{}, net.gateway);
    for (const Ipv4Prefix& p : net.routes) {
        if (p.length == 0) continue;  // the default route is always there already
        append_classless_route(v, p, net.gateway);
    }
    append_option(out, dhcp_option::kClasslessRoutes, v);
    return out;
}

}  // namespace calyx::dp
