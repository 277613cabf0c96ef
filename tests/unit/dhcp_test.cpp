// DHCP server: handshakes, destinations, option encoding, and malformed input.
//
// Replies are decoded here with a small decoder of their own (plain big-endian reads, its own
// checksum), so the tests do not trust the code they check.
#include "dp/dhcp.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <random>
#include <string>

#include "support/frame_builder.hpp"

namespace calyx::dp {
namespace {

using test::FrameBuilder;
using test::TestFrame;

constexpr MacAddr kVmMac{{0x52, 0x54, 0x00, 0x00, 0x01, 0x01}};
constexpr MacAddr kStrangerMac{{0x52, 0x54, 0x00, 0x00, 0x09, 0x09}};
constexpr MacAddr kGatewayMac{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}};
constexpr Ipv4Addr kGateway = Ipv4Addr::from_octets(203, 0, 113, 1);
constexpr Ipv4Addr kOtherServer = Ipv4Addr::from_octets(203, 0, 113, 2);
constexpr Ipv4Addr kVmIp = Ipv4Addr::from_octets(203, 0, 113, 10);
constexpr Ipv4Addr kWrongIp = Ipv4Addr::from_octets(203, 0, 113, 99);
constexpr Ipv4Addr kRelay = Ipv4Addr::from_octets(203, 0, 113, 200);
constexpr Ipv4Addr kZero{};
constexpr Ipv4Addr kAllOnes{0xffffffffu};
constexpr uint32_t kXid = 0xdeadbeef;

using Bytes = std::vector<uint8_t>;

Bytes ip_bytes(Ipv4Addr a) {
    return {static_cast<uint8_t>(a.value >> 24), static_cast<uint8_t>(a.value >> 16),
            static_cast<uint8_t>(a.value >> 8), static_cast<uint8_t>(a.value)};
}
Bytes be32_bytes(uint32_t x) {
    return ip_bytes(Ipv4Addr{x});
}
Bytes cat(std::initializer_list<Bytes> parts) {
    Bytes out;
    for (const Bytes& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
}

// An RFC 3442 route via the gateway: prefix length and significant destination octets, then the
// router.
Bytes via_gateway(const Bytes& destination) {
    return cat({destination, ip_bytes(kGateway)});
}

DhcpNetworkSettings public_network() {
    DhcpNetworkSettings n;
    n.cidr = Ipv4Prefix{Ipv4Addr::from_octets(203, 0, 113, 0), 24};
    n.gateway = kGateway;
    n.dns = {Ipv4Addr::from_octets(203, 0, 113, 53), Ipv4Addr::from_octets(198, 51, 100, 53)};
    n.domain = "cloud.example";
    n.mtu = 1450;
    n.lease_seconds = 3600;
    n.routes = {Ipv4Prefix{Ipv4Addr::from_octets(10, 0, 0, 0), 8},
                Ipv4Prefix{Ipv4Addr::from_octets(192, 168, 5, 0), 24},
                Ipv4Prefix{Ipv4Addr::from_octets(198, 51, 100, 7), 32}};
    return n;
}

// ---- client messages -------------------------------------------------------------------------

// A client's BOOTP payload, field by field. Options end with END and nothing after it, so
// cutting the message anywhere makes it malformed.
class ClientMessage {
  public:
    explicit ClientMessage(DhcpMessageType type) : type_(static_cast<uint8_t>(type)) {}
    ClientMessage& chaddr(MacAddr m) { return set(chaddr_, m), *this; }
    ClientMessage& ciaddr(Ipv4Addr a) { return set(ciaddr_, a), *this; }
    ClientMessage& giaddr(Ipv4Addr a) { return set(giaddr_, a), *this; }
    ClientMessage& broadcast_flag() { return set(broadcast_, true), *this; }
    ClientMessage& requested_ip(Ipv4Addr a) {
        return option(dhcp_option::kRequestedIp, ip_bytes(a));
    }
    ClientMessage& server_id(Ipv4Addr a) { return option(dhcp_option::kServerId, ip_bytes(a)); }
    ClientMessage& option(uint8_t code, const Bytes& value) {
        options_.push_back(code);
        options_.push_back(static_cast<uint8_t>(value.size()));
        options_.insert(options_.end(), value.begin(), value.end());
        return *this;
    }

    // The 240 fixed bytes (cookie included).
    Bytes fixed() const {
        Bytes b(kBootpFixedLength, 0);
        b[0] = 1;  // BOOTREQUEST
        b[1] = 1;  // Ethernet
        b[2] = 6;
        put(b, 4, be32_bytes(kXid));
        b[8] = 0;
        b[9] = 3;  // secs
        if (broadcast_) b[10] = 0x80;
        put(b, 12, ip_bytes(ciaddr_));
        put(b, 24, ip_bytes(giaddr_));
        put(b, 28, Bytes(chaddr_.bytes.begin(), chaddr_.bytes.end()));
        put(b, 236, {99, 130, 83, 99});
        return b;
    }
    Bytes options() const {
        Bytes o{dhcp_option::kMessageType, 1, type_};
        o.insert(o.end(), options_.begin(), options_.end());
        o.push_back(dhcp_option::kEnd);
        return o;
    }
    Bytes bootp() const { return cat({fixed(), options()}); }

    static void put(Bytes& b, size_t at, const Bytes& v) {
        std::copy(v.begin(), v.end(), b.begin() + static_cast<std::ptrdiff_t>(at));
    }

  private:
    template <typename T>
    static void set(T& field, T v) {
        field = v;
    }
    uint8_t type_;
    MacAddr chaddr_ = kVmMac;
    Ipv4Addr ciaddr_;
    Ipv4Addr giaddr_;
    bool broadcast_ = false;
    Bytes options_;
};

// The frame a VM sends: from its MAC, to the broadcast MAC, UDP 68 -> 67.
Bytes client_frame(const Bytes& bootp, Ipv4Addr src = kZero, Ipv4Addr dst = kAllOnes) {
    return FrameBuilder()
        .eth(kVmMac, MacAddr::broadcast())
        .ipv4(src, dst, ipproto::kUdp, 64, 0)
        .udp(kDhcpClientPort, kDhcpServerPort, bootp)
        .build();
}

PacketMeta udp_meta() {
    PacketMeta m;
    m.in_port = 0;
    m.is_ipv4 = true;
    m.l3_offset = sizeof(EtherHdr);
    m.l4_offset = sizeof(EtherHdr) + sizeof(Ipv4Hdr);
    m.ip_proto = ipproto::kUdp;
    return m;
}

// ---- reply decoder (independent of calyx's headers) -----------------------------------------

uint16_t be16_at(const Bytes& b, size_t i) {
    return static_cast<uint16_t>(b.at(i) << 8 | b.at(i + 1));
}
uint32_t be32_at(const Bytes& b, size_t i) {
    return uint32_t{b.at(i)} << 24 | uint32_t{b.at(i + 1)} << 16 | uint32_t{b.at(i + 2)} << 8 |
           b.at(i + 3);
}
MacAddr mac_at(const Bytes& b, size_t i) {
    MacAddr m;
    for (size_t k = 0; k < 6; ++k) m.bytes[k] = b.at(i + k);
    return m;
}

// One's complement sum of big-endian words: zero over data that carries a correct checksum.
uint16_t reference_checksum(const Bytes& b) {
    uint64_t sum = 0;
    for (size_t i = 0; i < b.size(); i += 2)
        sum += uint32_t{b[i]} << 8 | (i + 1 < b.size() ? b[i + 1] : 0);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum & 0xffff);
}

struct DecodedReply {
    MacAddr eth_dst, eth_src;
    uint16_t ethertype = 0;
    uint8_t ip_version_ihl = 0, ttl = 0, protocol = 0;
    uint16_t ip_total = 0, frag = 0;
    Ipv4Addr ip_src, ip_dst;
    bool ip_checksum_ok = false;
    uint16_t sport = 0, dport = 0, udp_len = 0;
    bool udp_checksum_ok = false;
    size_t bootp_len = 0;
    uint8_t op = 0, htype = 0, hlen = 0;
    uint32_t xid = 0;
    uint16_t secs = 0, flags = 0;
    Ipv4Addr ciaddr, yiaddr, siaddr, giaddr;
    MacAddr chaddr;
    bool sname_file_zero = false;
    uint32_t cookie = 0;
    std::vector<uint8_t> order;        // option codes as they appear
    std::map<uint8_t, Bytes> options;  // RFC 3396: repeated codes concatenated
    bool has_end = false;

    Ipv4Addr option_ip(uint8_t code) const { return Ipv4Addr{be32_at(options.at(code), 0)}; }
    uint32_t option_u32(uint8_t code) const { return be32_at(options.at(code), 0); }
    uint8_t message_type() const { return options.at(dhcp_option::kMessageType).at(0); }
};

DecodedReply decode_reply(const Bytes& f) {
    DecodedReply r;
    r.eth_dst = mac_at(f, 0);
    r.eth_src = mac_at(f, 6);
    r.ethertype = be16_at(f, 12);
    const size_t ip = 14;
    r.ip_version_ihl = f.at(ip);
    r.ip_total = be16_at(f, ip + 2);
    r.frag = be16_at(f, ip + 6);
    r.ttl = f.at(ip + 8);
    r.protocol = f.at(ip + 9);
    r.ip_src = Ipv4Addr{be32_at(f, ip + 12)};
    r.ip_dst = Ipv4Addr{be32_at(f, ip + 16)};
    r.ip_checksum_ok = reference_checksum(Bytes(f.begin() + ip, f.begin() + ip + 20)) == 0;
    const size_t udp = ip + 20;
    r.sport = be16_at(f, udp);
    r.dport = be16_at(f, udp + 2);
    r.udp_len = be16_at(f, udp + 4);
    Bytes pseudo = cat(
        {Bytes(f.begin() + ip + 12, f.begin() + ip + 20),
         {0, ipproto::kUdp, static_cast<uint8_t>(r.udp_len >> 8), static_cast<uint8_t>(r.udp_len)},
         Bytes(f.begin() + udp, f.begin() + udp + r.udp_len)});
    r.udp_checksum_ok = be16_at(f, udp + 6) != 0 && reference_checksum(pseudo) == 0;
    const size_t b = udp + 8;
    r.bootp_len = f.size() - b;
    r.op = f.at(b);
    r.htype = f.at(b + 1);
    r.hlen = f.at(b + 2);
    r.xid = be32_at(f, b + 4);
    r.secs = be16_at(f, b + 8);
    r.flags = be16_at(f, b + 10);
    r.ciaddr = Ipv4Addr{be32_at(f, b + 12)};
    r.yiaddr = Ipv4Addr{be32_at(f, b + 16)};
    r.siaddr = Ipv4Addr{be32_at(f, b + 20)};
    r.giaddr = Ipv4Addr{be32_at(f, b + 24)};
    r.chaddr = mac_at(f, b + 28);
    r.sname_file_zero =
        std::all_of(f.begin() + b + 34, f.begin() + b + 236, [](uint8_t x) { return x == 0; });
    r.cookie = be32_at(f, b + 236);
    for (size_t i = b + 240; i < f.size();) {
        const uint8_t code = f[i];
        if (code == 0) {
            ++i;
            continue;
        }
        if (code == 255) {
            r.has_end = true;
            break;
        }
        const size_t len = f.at(i + 1);
        if (r.order.empty() || r.order.back() != code) r.order.push_back(code);
        Bytes& v = r.options[code];
        v.insert(v.end(), f.begin() + i + 2, f.begin() + i + 2 + len);
        i += 2 + len;
    }
    return r;
}

// ---- fixture ---------------------------------------------------------------------------------

class DhcpServer : public ::testing::Test {
  protected:
    DhcpServer() {
        const DhcpNetworkSettings cfg = public_network();
        net.name = "public";
        net.cidr = cfg.cidr;
        net.gateway = cfg.gateway;
        net.mtu = cfg.mtu;
        net.dhcp_lease_options = encode_dhcp_network_options(cfg, true);
        net.dhcp_inform_options = encode_dhcp_network_options(cfg, false);
        inst.name = "web-1";
        inst.mac = kVmMac;
        inst.ipv4 = kVmIp;
    }

    struct Result {
        DhcpOutcome outcome;
        Bytes before;
        Bytes after;
        DecodedReply reply() const { return decode_reply(after); }
    };

    Result respond(const Bytes& frame, PacketMeta meta = udp_meta()) {
        TestFrame tf(frame);
        const DhcpOutcome out = dhcp_respond(tf.frame, meta, inst, net, kGatewayMac);
        return {out, frame, tf.bytes()};
    }
    Result respond_to(const ClientMessage& m, Ipv4Addr src = kZero, Ipv4Addr dst = kAllOnes) {
        return respond(client_frame(m.bootp(), src, dst));
    }

    static void expect_dropped(const Result& r, DropReason reason) {
        EXPECT_EQ(r.outcome.verdict, Verdict::drop);
        EXPECT_EQ(r.outcome.reason, reason) << drop_reason_info(r.outcome.reason).name;
        EXPECT_EQ(r.after, r.before) << "a dropped request must be left as it was";
    }

    // Everything a reply from this server has, whatever its type.
    static void expect_well_formed_reply(const DecodedReply& r) {
        EXPECT_EQ(r.eth_src, kGatewayMac);
        EXPECT_EQ(r.ethertype, ethertype::kIpv4);
        EXPECT_EQ(r.ip_version_ihl, 0x45);
        EXPECT_EQ(r.ip_total, 20 + r.udp_len);
        EXPECT_EQ(r.frag, 0) << "DF clear, not a fragment";
        EXPECT_EQ(r.ttl, 64);
        EXPECT_EQ(r.protocol, ipproto::kUdp);
        EXPECT_EQ(r.ip_src, kGateway);
        EXPECT_TRUE(r.ip_checksum_ok);
        EXPECT_EQ(r.sport, kDhcpServerPort);
        EXPECT_EQ(r.udp_len, 8 + r.bootp_len);
        EXPECT_TRUE(r.udp_checksum_ok);
        EXPECT_GE(r.bootp_len, 300u);
        EXPECT_EQ(r.op, 2);
        EXPECT_EQ(r.htype, 1);
        EXPECT_EQ(r.hlen, 6);
        EXPECT_EQ(r.xid, kXid);
        EXPECT_EQ(r.siaddr, kZero);
        EXPECT_EQ(r.chaddr, kVmMac);
        EXPECT_TRUE(r.sname_file_zero);
        EXPECT_EQ(r.cookie, kDhcpMagicCookie);
        EXPECT_TRUE(r.has_end);
        ASSERT_FALSE(r.order.empty());
        EXPECT_EQ(r.order.front(), dhcp_option::kMessageType);
        EXPECT_EQ(r.options.at(dhcp_option::kServerId), ip_bytes(kGateway));
    }

    // The options of the public network, as a client reads them.
    static void expect_network_options(const DecodedReply& r) {
        EXPECT_EQ(r.option_ip(dhcp_option::kSubnetMask), Ipv4Addr::from_octets(255, 255, 255, 0));
        EXPECT_EQ(r.options.at(dhcp_option::kRouter), ip_bytes(kGateway));
        EXPECT_EQ(r.options.at(dhcp_option::kDns), cat({{203, 0, 113, 53}, {198, 51, 100, 53}}));
        const Bytes domain = r.options.at(dhcp_option::kDomainName);
        EXPECT_EQ(std::string(domain.begin(), domain.end()), "cloud.example");
        EXPECT_EQ(r.options.at(dhcp_option::kInterfaceMtu), (Bytes{0x05, 0xaa}));  // 1450
        EXPECT_EQ(r.options.at(dhcp_option::kClasslessRoutes),
                  cat({
                      via_gateway({0}),                    // 0.0.0.0/0
                      via_gateway({8, 10}),                // 10.0.0.0/8
                      via_gateway({24, 192, 168, 5}),      // 192.168.5.0/24
                      via_gateway({32, 198, 51, 100, 7}),  // 198.51.100.7/32
                  }));
    }
    static void expect_lease_times(const DecodedReply& r) {
        EXPECT_EQ(r.option_u32(dhcp_option::kLeaseTime), 3600u);
        EXPECT_EQ(r.option_u32(dhcp_option::kRenewalTime), 1800u);
        EXPECT_EQ(r.option_u32(dhcp_option::kRebindingTime), 3150u);
    }

    NetworkView net;
    InstanceView inst;
};

// ---- handshakes ------------------------------------------------------------------------------

TEST_F(DhcpServer, DiscoverOfferRequestAckGivesTheConfiguredAddressAndOptions) {
    const Result offer = respond_to(ClientMessage(DhcpMessageType::discover));
    ASSERT_EQ(offer.outcome.verdict, Verdict::reply);
    EXPECT_EQ(offer.outcome.reply, DhcpReplyType::offer);
    const DecodedReply o = offer.reply();
    expect_well_formed_reply(o);
    EXPECT_EQ(o.message_type(), static_cast<uint8_t>(DhcpMessageType::offer));
    EXPECT_EQ(o.yiaddr, kVmIp);
    EXPECT_EQ(o.ciaddr, kZero);
    EXPECT_EQ(o.giaddr, kZero);
    EXPECT_EQ(o.flags, 0);
    expect_network_options(o);
    expect_lease_times(o);
    // No broadcast flag: unicast to the offered address at the client's MAC.
    EXPECT_EQ(o.eth_dst, kVmMac);
    EXPECT_EQ(o.ip_dst, kVmIp);
    EXPECT_EQ(o.dport, kDhcpClientPort);
    EXPECT_EQ(offer.after.size(), 14u + 20 + 8 + o.bootp_len);

    // The client takes the offer, naming the server it chose.
    const Result ack = respond_to(ClientMessage(DhcpMessageType::request)
                                      .requested_ip(o.yiaddr)
                                      .server_id(o.option_ip(dhcp_option::kServerId))
                                      .broadcast_flag());
    ASSERT_EQ(ack.outcome.verdict, Verdict::reply);
    EXPECT_EQ(ack.outcome.reply, DhcpReplyType::ack);
    const DecodedReply a = ack.reply();
    expect_well_formed_reply(a);
    EXPECT_EQ(a.message_type(), static_cast<uint8_t>(DhcpMessageType::ack));
    EXPECT_EQ(a.yiaddr, kVmIp);
    EXPECT_EQ(a.flags, kBootpBroadcastFlag);
    expect_network_options(a);
    expect_lease_times(a);
    // Broadcast flag: broadcast at both layers.
    EXPECT_EQ(a.eth_dst, MacAddr::broadcast());
    EXPECT_EQ(a.ip_dst, kAllOnes);
}

TEST_F(DhcpServer, OfferOptionsComeInTheEncodedOrder) {
    const DecodedReply o = respond_to(ClientMessage(DhcpMessageType::discover)).reply();
    EXPECT_EQ(o.order, (Bytes{53, 54, 51, 58, 59, 1, 3, 6, 15, 26, 121}));
}

TEST_F(DhcpServer, DiscoverWithBroadcastFlagIsAnsweredByBroadcast) {
    const DecodedReply o =
        respond_to(ClientMessage(DhcpMessageType::discover).broadcast_flag()).reply();
    expect_well_formed_reply(o);
    EXPECT_EQ(o.eth_dst, MacAddr::broadcast());
    EXPECT_EQ(o.ip_dst, kAllOnes);
    EXPECT_EQ(o.yiaddr, kVmIp);
}

TEST_F(DhcpServer, DiscoverAskingForAnotherAddressIsOfferedTheConfiguredOne) {
    const DecodedReply o =
        respond_to(ClientMessage(DhcpMessageType::discover).requested_ip(kWrongIp)).reply();
    EXPECT_EQ(o.yiaddr, kVmIp);
}

TEST_F(DhcpServer, RequestForAWrongAddressIsNakedByBroadcast) {
    const Result r = respond_to(
        ClientMessage(DhcpMessageType::request).requested_ip(kWrongIp).server_id(kGateway));
    ASSERT_EQ(r.outcome.verdict, Verdict::reply);
    EXPECT_EQ(r.outcome.reply, DhcpReplyType::nak);
    const DecodedReply n = r.reply();
    expect_well_formed_reply(n);
    EXPECT_EQ(n.message_type(), static_cast<uint8_t>(DhcpMessageType::nak));
    EXPECT_EQ(n.yiaddr, kZero);
    EXPECT_EQ(n.ciaddr, kZero);
    EXPECT_EQ(n.eth_dst, MacAddr::broadcast());
    EXPECT_EQ(n.ip_dst, kAllOnes);
    // RFC 2131 table 3: a NAK carries the server identifier and nothing about a lease.
    EXPECT_EQ(n.order, (Bytes{dhcp_option::kMessageType, dhcp_option::kServerId}));
}

TEST_F(DhcpServer, RequestSelectingAnotherServerIsIgnored) {
    const Result r = respond_to(
        ClientMessage(DhcpMessageType::request).requested_ip(kVmIp).server_id(kOtherServer));
    expect_dropped(r, DropReason::dhcp_not_for_us);
}

TEST_F(DhcpServer, InitRebootRequestIsAckedForTheConfiguredAddressOnly) {
    const Result ok = respond_to(ClientMessage(DhcpMessageType::request).requested_ip(kVmIp));
    ASSERT_EQ(ok.outcome.verdict, Verdict::reply);
    EXPECT_EQ(ok.outcome.reply, DhcpReplyType::ack);
    const DecodedReply a = ok.reply();
    expect_well_formed_reply(a);
    EXPECT_EQ(a.yiaddr, kVmIp);
    EXPECT_EQ(a.eth_dst, kVmMac);
    EXPECT_EQ(a.ip_dst, kVmIp);

    const Result bad = respond_to(ClientMessage(DhcpMessageType::request).requested_ip(kWrongIp));
    EXPECT_EQ(bad.outcome.reply, DhcpReplyType::nak);
    EXPECT_EQ(bad.reply().ip_dst, kAllOnes);
}

TEST_F(DhcpServer, RenewingRequestIsAckedToTheClientAddress) {
    const Result r =
        respond_to(ClientMessage(DhcpMessageType::request).ciaddr(kVmIp), kVmIp, kGateway);
    ASSERT_EQ(r.outcome.verdict, Verdict::reply);
    EXPECT_EQ(r.outcome.reply, DhcpReplyType::ack);
    const DecodedReply a = r.reply();
    expect_well_formed_reply(a);
    EXPECT_EQ(a.ciaddr, kVmIp);
    EXPECT_EQ(a.yiaddr, kVmIp);
    EXPECT_EQ(a.eth_dst, kVmMac);
    EXPECT_EQ(a.ip_dst, kVmIp);
    expect_lease_times(a);
}

TEST_F(DhcpServer, RebindingRequestWithBroadcastFlagStillGoesToTheClientAddress) {
    // RFC 2131 4.1: ciaddr set means unicast to ciaddr, whatever the flag says.
    const DecodedReply a =
        respond_to(ClientMessage(DhcpMessageType::request).ciaddr(kVmIp).broadcast_flag(), kVmIp)
            .reply();
    EXPECT_EQ(a.message_type(), static_cast<uint8_t>(DhcpMessageType::ack));
    EXPECT_EQ(a.ip_dst, kVmIp);
}

TEST_F(DhcpServer, RenewingAnotherAddressIsNaked) {
    const Result r =
        respond_to(ClientMessage(DhcpMessageType::request).ciaddr(kWrongIp), kWrongIp, kGateway);
    ASSERT_EQ(r.outcome.verdict, Verdict::reply);
    EXPECT_EQ(r.outcome.reply, DhcpReplyType::nak);
    const DecodedReply n = r.reply();
    expect_well_formed_reply(n);
    EXPECT_EQ(n.ciaddr, kZero);
    EXPECT_EQ(n.ip_dst, kAllOnes);
    EXPECT_EQ(n.eth_dst, MacAddr::broadcast());
}

TEST_F(DhcpServer, RequestWithNeitherAddressNorCiaddrIsNaked) {
    const Result r = respond_to(ClientMessage(DhcpMessageType::request));
    EXPECT_EQ(r.outcome.reply, DhcpReplyType::nak);
}

TEST_F(DhcpServer, InformIsAckedWithoutLeaseTimesToTheClientAddress) {
    const Result r =
        respond_to(ClientMessage(DhcpMessageType::inform).ciaddr(kVmIp), kVmIp, kAllOnes);
    ASSERT_EQ(r.outcome.verdict, Verdict::reply);
    EXPECT_EQ(r.outcome.reply, DhcpReplyType::ack);
    const DecodedReply a = r.reply();
    expect_well_formed_reply(a);
    EXPECT_EQ(a.message_type(), static_cast<uint8_t>(DhcpMessageType::ack));
    EXPECT_EQ(a.yiaddr, kZero);
    EXPECT_EQ(a.ciaddr, kVmIp);
    EXPECT_EQ(a.ip_dst, kVmIp);
    EXPECT_EQ(a.eth_dst, kVmMac);
    expect_network_options(a);
    EXPECT_FALSE(a.options.contains(dhcp_option::kLeaseTime));
    EXPECT_FALSE(a.options.contains(dhcp_option::kRenewalTime));
    EXPECT_FALSE(a.options.contains(dhcp_option::kRebindingTime));
}

TEST_F(DhcpServer, InformWithoutClientAddressIsBroadcast) {
    const DecodedReply a = respond_to(ClientMessage(DhcpMessageType::inform)).reply();
    EXPECT_EQ(a.yiaddr, kZero);
    EXPECT_EQ(a.ip_dst, kAllOnes);
    EXPECT_EQ(a.eth_dst, MacAddr::broadcast());
}

TEST_F(DhcpServer, ReleaseIsConsumedWithoutReply) {
    const Result r = respond_to(
        ClientMessage(DhcpMessageType::release).ciaddr(kVmIp).server_id(kGateway), kVmIp, kGateway);
    EXPECT_EQ(r.outcome.verdict, Verdict::consumed);
    EXPECT_TRUE(r.outcome.released);
    EXPECT_FALSE(r.outcome.declined);
    EXPECT_FALSE(r.outcome.reply.has_value());
    EXPECT_EQ(r.after, r.before);
}

// RFC 768: a UDP checksum that computes to zero is sent as all ones (zero means "none"). The
// transaction id goes into the reply, so some id makes its checksum compute to zero: search.
TEST_F(DhcpServer, AReplyWhoseChecksumComputesToZeroCarriesAllOnes) {
    const Bytes base = client_frame(ClientMessage(DhcpMessageType::discover).bootp());
    const size_t xid_at = sizeof(EtherHdr) + sizeof(Ipv4Hdr) + sizeof(UdpHdr) + 4;
    const size_t checksum_at = sizeof(EtherHdr) + sizeof(Ipv4Hdr) + 6;
    bool all_ones = false;
    for (uint32_t xid = 0; xid < (1u << 20) && !all_ones; ++xid) {
        Bytes f = base;
        ClientMessage::put(f, xid_at, be32_bytes(xid));
        const Result r = respond(f);
        ASSERT_EQ(r.outcome.verdict, Verdict::reply) << xid;
        const uint16_t sum = be16_at(r.after, checksum_at);
        ASSERT_NE(sum, 0) << "xid " << xid << ": a reply without a checksum";
        ASSERT_TRUE(decode_reply(r.after).udp_checksum_ok) << "xid " << xid;  // every one, not only this
        all_ones = sum == 0xffff;
    }
    EXPECT_TRUE(all_ones) << "no transaction id made the checksum compute to zero";
}

TEST_F(DhcpServer, DeclineIsConsumedWithoutReply) {
    const Result r =
        respond_to(ClientMessage(DhcpMessageType::decline).requested_ip(kVmIp).server_id(kGateway));
    EXPECT_EQ(r.outcome.verdict, Verdict::consumed);
    EXPECT_TRUE(r.outcome.declined);
    EXPECT_FALSE(r.outcome.released);
    EXPECT_EQ(r.after, r.before);
}

TEST_F(DhcpServer, ReleaseToAnotherServerIsNotOurs) {
    expect_dropped(
        respond_to(ClientMessage(DhcpMessageType::release).ciaddr(kVmIp).server_id(kOtherServer)),
        DropReason::dhcp_not_for_us);
}

TEST_F(DhcpServer, UnknownClientHardwareAddressGetsNoAnswer) {
    for (DhcpMessageType t : {DhcpMessageType::discover, DhcpMessageType::request,
                              DhcpMessageType::inform, DhcpMessageType::release}) {
        SCOPED_TRACE(static_cast<int>(t));
        expect_dropped(respond_to(ClientMessage(t).chaddr(kStrangerMac).requested_ip(kVmIp)),
                       DropReason::dhcp_unknown_client);
    }
}

TEST_F(DhcpServer, ServerMessagesFromAClientAreIgnored) {
    for (DhcpMessageType t : {DhcpMessageType::offer, DhcpMessageType::ack, DhcpMessageType::nak}) {
        SCOPED_TRACE(static_cast<int>(t));
        expect_dropped(respond_to(ClientMessage(t)), DropReason::dhcp_not_for_us);
    }
}

TEST_F(DhcpServer, RelayedRequestIsAnsweredToTheRelayServerPort) {
    const Result r =
        respond_to(ClientMessage(DhcpMessageType::discover).giaddr(kRelay), kRelay, kGateway);
    ASSERT_EQ(r.outcome.verdict, Verdict::reply);
    const DecodedReply o = r.reply();
    expect_well_formed_reply(o);
    EXPECT_EQ(o.giaddr, kRelay);
    EXPECT_EQ(o.ip_dst, kRelay);
    EXPECT_EQ(o.dport, kDhcpServerPort);
    EXPECT_EQ(o.eth_dst, kVmMac);  // the Ethernet source of the relayed request
}

TEST_F(DhcpServer, LongRequestIsShrunkToTheReply) {
    // A request carrying long vendor options gets the same reply as a short one.
    const Result plain = respond_to(ClientMessage(DhcpMessageType::discover));
    const Result r = respond_to(ClientMessage(DhcpMessageType::discover)
                                    .option(43, Bytes(255, 0x11))
                                    .option(43, Bytes(255, 0x22)));
    ASSERT_EQ(r.outcome.verdict, Verdict::reply);
    EXPECT_LT(r.after.size(), r.before.size());
    const DecodedReply o = r.reply();
    expect_well_formed_reply(o);
    EXPECT_EQ(r.after, plain.after);
}

TEST_F(DhcpServer, TrailingEthernetPaddingIsAccepted) {
    Bytes f = client_frame(ClientMessage(DhcpMessageType::discover).bootp());
    f.resize(f.size() + 20, 0);  // beyond the IPv4 total length
    EXPECT_EQ(respond(f).outcome.verdict, Verdict::reply);
}

TEST_F(DhcpServer, ReplyThatDoesNotFitTheBufferIsDroppedForLackOfBuffer) {
    Bytes bytes = client_frame(ClientMessage(DhcpMessageType::discover).bootp());
    Bytes storage(bytes.size() + 10);  // no room to grow to the padded reply
    std::copy(bytes.begin(), bytes.end(), storage.begin());
    Frame frame{storage.data(), static_cast<uint32_t>(storage.size()), 0,
                static_cast<uint32_t>(bytes.size())};
    // Minimal DISCOVER: 42 + 244 bytes, shorter than the 42 + 300 reply.
    const DhcpOutcome out = dhcp_respond(frame, udp_meta(), inst, net, kGatewayMac);
    EXPECT_EQ(out.verdict, Verdict::drop);
    EXPECT_EQ(out.reason, DropReason::no_buffer);
    EXPECT_EQ(frame.len, bytes.size());
    EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), storage.begin()));
}

// ---- parser ----------------------------------------------------------------------------------

TEST(DhcpParse, RecordsTheFieldsTheServerNeeds) {
    ClientMessage m(DhcpMessageType::request);
    m.ciaddr(kVmIp).giaddr(kRelay).broadcast_flag().requested_ip(kVmIp).server_id(kGateway);
    const Bytes b = m.bootp();
    const auto msg = parse_dhcp(b.data(), b.size());
    ASSERT_TRUE(msg.has_value());
    EXPECT_EQ(msg->type, DhcpMessageType::request);
    EXPECT_EQ(msg->xid, kXid);
    EXPECT_EQ(msg->secs, 3);
    EXPECT_TRUE(msg->broadcast());
    EXPECT_EQ(msg->ciaddr, kVmIp);
    EXPECT_EQ(msg->giaddr, kRelay);
    EXPECT_EQ(msg->chaddr, kVmMac);
    EXPECT_EQ(msg->requested_ip, kVmIp);
    EXPECT_EQ(msg->server_id, kGateway);
}

TEST(DhcpParse, OptionalOptionsAreAbsentWhenNotSent) {
    const Bytes b = ClientMessage(DhcpMessageType::discover).bootp();
    const auto msg = parse_dhcp(b.data(), b.size());
    ASSERT_TRUE(msg.has_value());
    EXPECT_FALSE(msg->broadcast());
    EXPECT_FALSE(msg->requested_ip.has_value());
    EXPECT_FALSE(msg->server_id.has_value());
}

// A message whose options continue in file (at 108) and/or sname (at 44).
Bytes overloaded(const Bytes& options, const Bytes& file, const Bytes& sname) {
    Bytes b = cat({ClientMessage(DhcpMessageType::discover).fixed(), options});
    ClientMessage::put(b, 108, file);
    ClientMessage::put(b, 44, sname);
    return b;
}

TEST(DhcpParse, OverloadedOptionsAreReadFromFileThenSname) {
    const Bytes b = overloaded({52, 1, 3, 255}, {53, 1, 3, 50, 4, 203, 0, 113, 10, 255},
                               {54, 4, 203, 0, 113, 1, 255});
    const auto msg = parse_dhcp(b.data(), b.size());
    ASSERT_TRUE(msg.has_value());
    EXPECT_EQ(msg->type, DhcpMessageType::request);
    EXPECT_EQ(msg->requested_ip, kVmIp);
    EXPECT_EQ(msg->server_id, kGateway);
}

TEST(DhcpParse, OverloadInsideFileIsIgnoredSoAreasCannotChainOrLoop) {
    // file names itself and sname again; sname holds garbage without END. Were the inner
    // overload honoured, file would be walked again or sname would be read and rejected.
    Bytes sname(64, 0);
    sname[0] = 53;
    sname[1] = 200;
    const Bytes b = overloaded({52, 1, 1, 255}, {52, 1, 3, 53, 1, 1, 255}, sname);
    const auto msg = parse_dhcp(b.data(), b.size());
    ASSERT_TRUE(msg.has_value());
    EXPECT_EQ(msg->type, DhcpMessageType::discover);
}

TEST(DhcpParse, PadsBeforeOptionsAndAfterEndAreFine) {
    const Bytes b = cat({ClientMessage(DhcpMessageType::discover).fixed(),
                         {0, 0, 53, 1, 1, 0, 255, 0, 0, 0, 7, 7}});
    EXPECT_TRUE(parse_dhcp(b.data(), b.size()).has_value());
}

// Shorter than the fixed part and its magic cookie (240 bytes), or no buffer at all: malformed,
// without reading the cookie or options beyond what was given.
TEST(DhcpParse, AMessageShorterThanItsFixedPartIsMalformed) {
    const Bytes b = ClientMessage(DhcpMessageType::discover).bootp();
    ASSERT_TRUE(parse_dhcp(b.data(), b.size()).has_value());
    for (const size_t len : {size_t{0}, size_t{239}}) {
        const auto msg = parse_dhcp(b.data(), len);
        ASSERT_FALSE(msg.has_value()) << len;
        EXPECT_EQ(msg.error(), DropReason::dhcp_malformed) << len;
    }
    EXPECT_FALSE(parse_dhcp(nullptr, b.size()).has_value());
}

// ---- malformed input -------------------------------------------------------------------------

struct MalformedCase {
    std::string name;
    Bytes bootp;
    DropReason reason = DropReason::dhcp_malformed;
};

std::ostream& operator<<(std::ostream& os, const MalformedCase& c) {
    return os << c.name;
}

std::vector<MalformedCase> malformed_cases() {
    const Bytes fixed = ClientMessage(DhcpMessageType::discover).fixed();
    const Bytes valid = ClientMessage(DhcpMessageType::discover).bootp();
    const auto with_options = [&](const Bytes& o) { return cat({fixed, o}); };
    const auto patched = [&](size_t at, uint8_t v) {
        Bytes b = valid;
        b[at] = v;
        return b;
    };
    const auto cut = [&](size_t n) {
        return Bytes(valid.begin(), valid.begin() + static_cast<std::ptrdiff_t>(n));
    };
    const Bytes ip4{203, 0, 113, 10};
    return {
        {"empty", {}},
        {"truncated_in_fixed_header", cut(100)},
        {"truncated_in_chaddr", cut(30)},
        {"truncated_before_cookie", cut(236)},
        {"truncated_in_cookie", cut(238)},
        {"cookie_without_options", cut(240)},
        {"truncated_before_option_length", cut(241)},
        {"truncated_in_option_value", cut(242)},
        {"truncated_before_end", cut(243)},
        {"bad_cookie", patched(239, 0x64)},
        {"bootreply_op", patched(0, 2)},
        {"unknown_op", patched(0, 3)},
        {"htype_not_ethernet", patched(1, 6)},
        {"hlen_not_6", patched(2, 16)},
        {"option_length_past_end", with_options({53, 1, 1, 12, 200, 'v', 'm'})},
        {"option_length_exactly_one_past_end", with_options({53, 1, 1, 12, 3, 'v', 'm'})},
        {"option_code_without_length", with_options({53, 1, 1, 12})},
        {"missing_end", with_options({53, 1, 1})},
        {"missing_end_only_pads_after", with_options({53, 1, 1, 0, 0, 0, 0})},
        {"end_swallowed_by_option_length", with_options({53, 1, 1, 12, 1, 255})},
        {"missing_message_type", with_options({50, 4, 203, 0, 113, 10, 255})},
        {"only_end", with_options({255})},
        {"duplicate_message_type", with_options({53, 1, 1, 53, 1, 1, 255})},
        {"duplicate_message_type_conflicting", with_options({53, 1, 1, 53, 1, 3, 255})},
        {"message_type_length_0", with_options({53, 0, 255})},
        {"message_type_length_2", with_options({53, 2, 1, 1, 255})},
        {"message_type_0", with_options({53, 1, 0, 255})},
        {"message_type_9", with_options({53, 1, 9, 255})},
        {"message_type_255", with_options({53, 1, 255, 255})},
        {"requested_ip_length_3", with_options(cat({{53, 1, 3, 50, 3}, {203, 0, 113}, {255}}))},
        {"requested_ip_length_5", with_options(cat({{53, 1, 3, 50, 5}, ip4, {0, 255}}))},
        {"requested_ip_twice", with_options(cat({{53, 1, 3, 50, 4}, ip4, {50, 4}, ip4, {255}}))},
        {"server_id_length_2", with_options({53, 1, 3, 54, 2, 203, 0, 255})},
        {"server_id_length_0", with_options({53, 1, 3, 54, 0, 255})},
        {"server_id_twice", with_options(cat({{53, 1, 3, 54, 4}, ip4, {54, 4}, ip4, {255}}))},
        {"overload_length_2", with_options({53, 1, 1, 52, 2, 1, 0, 255})},
        {"overload_value_0", with_options({53, 1, 1, 52, 1, 0, 255})},
        {"overload_value_4", with_options({53, 1, 1, 52, 1, 4, 255})},
        {"overload_twice", with_options({53, 1, 1, 52, 1, 1, 52, 1, 1, 255})},
        {"overload_into_empty_file", with_options({53, 1, 1, 52, 1, 1, 255})},
        {"overload_into_empty_sname", with_options({53, 1, 1, 52, 1, 2, 255})},
        {"overload_file_without_end", overloaded({52, 1, 1, 255}, {52, 1, 3, 53, 1, 1}, {})},
        {"overload_sname_option_past_field",
         overloaded({53, 1, 1, 52, 1, 2, 255}, {}, cat({Bytes(60, 0), {12, 10, 'x', 'y'}}))},
        {"overload_looping_file_repeats_message_type",
         overloaded({53, 1, 1, 52, 1, 1, 255}, {52, 1, 1, 53, 1, 1, 255}, {})},
        {"overload_both_with_message_type_in_each",
         overloaded({52, 1, 3, 255}, {52, 1, 2, 53, 1, 1, 255}, {52, 1, 1, 53, 1, 1, 255})},
    };
}

class DhcpMalformed : public DhcpServer, public ::testing::WithParamInterface<MalformedCase> {};

TEST_P(DhcpMalformed, IsDroppedWithItsReason) {
    const MalformedCase& c = GetParam();
    const auto parsed = parse_dhcp(c.bootp.data(), c.bootp.size());
    ASSERT_FALSE(parsed.has_value());
    EXPECT_EQ(parsed.error(), c.reason);
    expect_dropped(respond(client_frame(c.bootp)), c.reason);
}

INSTANTIATE_TEST_SUITE_P(Table, DhcpMalformed, ::testing::ValuesIn(malformed_cases()),
                         [](const auto& info) { return info.param.name; });

// Broken framing around the DHCP message: UDP and IPv4 lengths against the frame.
TEST_F(DhcpServer, UdpLengthLongerThanTheFrameIsMalformed) {
    Bytes f = client_frame(ClientMessage(DhcpMessageType::discover).bootp());
    const size_t udp_len_at = 14 + 20 + 4;
    const uint16_t real = be16_at(f, udp_len_at);
    const uint16_t overlong = static_cast<uint16_t>(real + 1);
    f[udp_len_at] = static_cast<uint8_t>(overlong >> 8);
    f[udp_len_at + 1] = static_cast<uint8_t>(overlong);
    expect_dropped(respond(f), DropReason::dhcp_malformed);
}

TEST_F(DhcpServer, UdpLengthShorterThanItsHeaderIsMalformed) {
    Bytes f = client_frame(ClientMessage(DhcpMessageType::discover).bootp());
    f[14 + 20 + 4] = 0;
    f[14 + 20 + 5] = 7;
    expect_dropped(respond(f), DropReason::dhcp_malformed);
}

TEST_F(DhcpServer, UdpLengthCuttingTheMessageShortIsMalformed) {
    // The frame holds the whole message but UDP says it ends before END.
    Bytes f = client_frame(ClientMessage(DhcpMessageType::discover).bootp());
    const uint16_t shorter = static_cast<uint16_t>(be16_at(f, 14 + 20 + 4) - 1);
    f[14 + 20 + 4] = static_cast<uint8_t>(shorter >> 8);
    f[14 + 20 + 5] = static_cast<uint8_t>(shorter);
    expect_dropped(respond(f), DropReason::dhcp_malformed);
}

TEST_F(DhcpServer, Ipv4TotalLengthLongerThanTheFrameIsMalformed) {
    Bytes f = client_frame(ClientMessage(DhcpMessageType::discover).bootp());
    f.pop_back();  // the frame lost its END; IPv4 and UDP lengths still count it
    expect_dropped(respond(f), DropReason::dhcp_malformed);
}

TEST_F(DhcpServer, DiscoverTruncatedAtEveryLengthIsDropped) {
    const Bytes bootp = ClientMessage(DhcpMessageType::discover)
                            .requested_ip(kVmIp)
                            .option(12, {'w', 'e', 'b'})
                            .bootp();
    ASSERT_EQ(respond(client_frame(bootp)).outcome.verdict, Verdict::reply);
    for (size_t n = 0; n < bootp.size(); ++n) {
        SCOPED_TRACE(n);
        // Consistent headers around a short message...
        const Bytes short_message(bootp.begin(), bootp.begin() + static_cast<std::ptrdiff_t>(n));
        expect_dropped(respond(client_frame(short_message)), DropReason::dhcp_malformed);
        // ...and a frame cut short under headers that promise more.
        Bytes cut_frame = client_frame(bootp);
        cut_frame.resize(14 + 20 + 8 + n);
        expect_dropped(respond(cut_frame), DropReason::dhcp_malformed);
    }
    // Frames cut inside the IPv4 or UDP header.
    for (size_t n = 14; n < 14 + 20 + 8; ++n) {
        SCOPED_TRACE(n);
        Bytes cut_frame = client_frame(bootp);
        cut_frame.resize(n);
        expect_dropped(respond(cut_frame), DropReason::dhcp_malformed);
    }
}

TEST_F(DhcpServer, RandomlyCorruptedRequestsNeverCrashOrMisreply) {
    const Bytes bootp = ClientMessage(DhcpMessageType::request)
                            .requested_ip(kVmIp)
                            .server_id(kGateway)
                            .option(52, {3})
                            .option(12, {'w', 'e', 'b'})
                            .bootp();
    std::mt19937 rng(20240601);
    for (int round = 0; round < 20000; ++round) {
        Bytes b = bootp;
        const int flips = 1 + static_cast<int>(rng() % 4);
        for (int k = 0; k < flips; ++k) {
            // Bias corruption towards the options, where the parsing happens.
            const size_t at = rng() % 2 ? 236 + rng() % (b.size() - 236) : rng() % b.size();
            b[at] = static_cast<uint8_t>(rng());
        }
        if (rng() % 4 == 0) b.resize(rng() % (b.size() + 1));
        const Result r = respond(client_frame(b));
        if (r.outcome.verdict == Verdict::reply) {
            const DecodedReply d = r.reply();
            EXPECT_TRUE(d.ip_checksum_ok);
            EXPECT_TRUE(d.udp_checksum_ok);
            EXPECT_EQ(d.chaddr, kVmMac);
            EXPECT_TRUE(d.has_end);
        } else {
            EXPECT_TRUE(r.outcome.verdict == Verdict::drop ||
                        r.outcome.verdict == Verdict::consumed);
        }
        if (HasFailure()) {
            ADD_FAILURE() << "round " << round;
            break;
        }
    }
}

// ---- option encoding -------------------------------------------------------------------------

// Options of an encoded blob by code, repeated codes concatenated (RFC 3396).
std::map<uint8_t, Bytes> decode_blob(const Bytes& blob) {
    std::map<uint8_t, Bytes> out;
    for (size_t i = 0; i < blob.size();) {
        const uint8_t code = blob[i];
        EXPECT_NE(code, 0);
        EXPECT_NE(code, 255);
        const size_t len = blob.at(i + 1);
        EXPECT_LE(i + 2 + len, blob.size());
        Bytes& v = out[code];
        v.insert(v.end(), blob.begin() + static_cast<std::ptrdiff_t>(i + 2),
                 blob.begin() + static_cast<std::ptrdiff_t>(i + 2 + len));
        i += 2 + len;
    }
    return out;
}

TEST(DhcpEncode, ClasslessRoutesFollowRfc3442) {
    DhcpNetworkSettings n = public_network();
    n.routes = {Ipv4Prefix{Ipv4Addr::from_octets(10, 0, 0, 0), 8},
                Ipv4Prefix{Ipv4Addr::from_octets(192, 168, 5, 0), 24},
                Ipv4Prefix{Ipv4Addr::from_octets(198, 51, 100, 7), 32},
                Ipv4Prefix{Ipv4Addr::from_octets(172, 16, 0, 0), 12},
                Ipv4Prefix{Ipv4Addr::from_octets(100, 64, 0, 0), 10}};
    const auto opts = decode_blob(encode_dhcp_network_options(n, true));
    EXPECT_EQ(opts.at(dhcp_option::kClasslessRoutes),
              cat({
                  via_gateway({0}),                    // 0.0.0.0/0: no destination octets
                  via_gateway({8, 10}),                // /8: one
                  via_gateway({24, 192, 168, 5}),      // /24: three
                  via_gateway({32, 198, 51, 100, 7}),  // /32: four
                  via_gateway({12, 172, 16}),          // /12: two (rounded up)
                  via_gateway({10, 100, 64}),          // /10: two
              }));
}

TEST(DhcpEncode, DefaultRouteIsAlwaysAnnouncedOnce) {
    DhcpNetworkSettings n = public_network();
    n.routes = {};
    EXPECT_EQ(decode_blob(encode_dhcp_network_options(n, true)).at(dhcp_option::kClasslessRoutes),
              (Bytes{0, 203, 0, 113, 1}));
    n.routes = {Ipv4Prefix{}};  // an explicit default route adds nothing
    EXPECT_EQ(decode_blob(encode_dhcp_network_options(n, true)).at(dhcp_option::kClasslessRoutes),
              (Bytes{0, 203, 0, 113, 1}));
}

TEST(DhcpEncode, LeaseBlobHasEveryOptionButMessageTypeAndEnd) {
    const Bytes blob = encode_dhcp_network_options(public_network(), true);
    const auto opts = decode_blob(blob);
    EXPECT_EQ(opts.at(dhcp_option::kServerId), (Bytes{203, 0, 113, 1}));
    EXPECT_EQ(opts.at(dhcp_option::kLeaseTime), be32_bytes(3600));
    EXPECT_EQ(opts.at(dhcp_option::kRenewalTime), be32_bytes(1800));
    EXPECT_EQ(opts.at(dhcp_option::kRebindingTime), be32_bytes(3150));
    EXPECT_EQ(opts.at(dhcp_option::kSubnetMask), (Bytes{255, 255, 255, 0}));
    EXPECT_EQ(opts.at(dhcp_option::kRouter), (Bytes{203, 0, 113, 1}));
    EXPECT_EQ(opts.at(dhcp_option::kDns), (Bytes{203, 0, 113, 53, 198, 51, 100, 53}));
    EXPECT_EQ(opts.at(dhcp_option::kDomainName),
              (Bytes{'c', 'l', 'o', 'u', 'd', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e'}));
    EXPECT_EQ(opts.at(dhcp_option::kInterfaceMtu), (Bytes{0x05, 0xaa}));
    EXPECT_FALSE(opts.contains(dhcp_option::kMessageType));
    EXPECT_EQ(opts.size(), 10u);
    EXPECT_LE(blob.size(), kDhcpMaxOptionBlob);
}

TEST(DhcpEncode, InformBlobHasNoLeaseTimes) {
    const auto opts = decode_blob(encode_dhcp_network_options(public_network(), false));
    EXPECT_FALSE(opts.contains(dhcp_option::kLeaseTime));
    EXPECT_FALSE(opts.contains(dhcp_option::kRenewalTime));
    EXPECT_FALSE(opts.contains(dhcp_option::kRebindingTime));
    EXPECT_TRUE(opts.contains(dhcp_option::kServerId));
    EXPECT_TRUE(opts.contains(dhcp_option::kClasslessRoutes));
    EXPECT_EQ(opts.size(), 7u);
}

TEST(DhcpEncode, DnsAndDomainAreLeftOutWhenNotConfigured) {
    DhcpNetworkSettings n = public_network();
    n.dns.clear();
    n.domain.reset();
    const auto opts = decode_blob(encode_dhcp_network_options(n, true));
    EXPECT_FALSE(opts.contains(dhcp_option::kDns));
    EXPECT_FALSE(opts.contains(dhcp_option::kDomainName));
    n.domain = "";
    EXPECT_FALSE(
        decode_blob(encode_dhcp_network_options(n, true)).contains(dhcp_option::kDomainName));
}

TEST(DhcpEncode, MaskAndMtuFollowTheNetwork) {
    DhcpNetworkSettings n = public_network();
    n.cidr = Ipv4Prefix{Ipv4Addr::from_octets(10, 128, 0, 0), 9};
    n.mtu = 9000;
    const auto opts = decode_blob(encode_dhcp_network_options(n, true));
    EXPECT_EQ(opts.at(dhcp_option::kSubnetMask), (Bytes{255, 128, 0, 0}));
    EXPECT_EQ(opts.at(dhcp_option::kInterfaceMtu), (Bytes{0x23, 0x28}));
}

TEST(DhcpEncode, InfiniteLeaseHasNoRenewalTimes) {
    DhcpNetworkSettings n = public_network();
    n.lease_seconds = 0xffffffffu;
    const auto opts = decode_blob(encode_dhcp_network_options(n, true));
    EXPECT_EQ(opts.at(dhcp_option::kLeaseTime), be32_bytes(0xffffffffu));
    EXPECT_FALSE(opts.contains(dhcp_option::kRenewalTime));
    EXPECT_FALSE(opts.contains(dhcp_option::kRebindingTime));
}

TEST(DhcpEncode, OptionsLongerThan255BytesAreSplitPerRfc3396) {
    DhcpNetworkSettings n = public_network();
    n.routes.clear();
    Bytes expected{0, 203, 0, 113, 1};
    for (uint8_t i = 1; i <= 40; ++i) {
        n.routes.push_back(Ipv4Prefix{Ipv4Addr::from_octets(10, i, 0, 1), 32});
        expected.insert(expected.end(), {32, 10, i, 0, 1, 203, 0, 113, 1});
    }
    const Bytes blob = encode_dhcp_network_options(n, true);
    // Two consecutive 121 options, the first full.
    size_t count = 0;
    for (size_t i = 0; i < blob.size(); i += 2 + blob[i + 1]) {
        if (blob[i] == dhcp_option::kClasslessRoutes) {
            ++count;
            if (count == 1) {
                EXPECT_EQ(blob[i + 1], 255);
            }
        }
    }
    EXPECT_EQ(count, 2u);
    EXPECT_EQ(decode_blob(blob).at(dhcp_option::kClasslessRoutes), expected);
}

}  // namespace
}  // namespace calyx::dp
