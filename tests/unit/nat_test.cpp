// Masquerade: translations checked against frames built from scratch (full checksum
// computation) and against an independent byte-wise checksum reference; the port allocator's
// preservation, probing, per-remote uniqueness, exhaustion, reuse and concurrency.
#include "dp/nat.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <fstream>
#include <sstream>
#include <string>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "dp/table_memory.hpp"
#include "support/frame_builder.hpp"

namespace calyx::test {
namespace {

// What /proc/self/smaps says of the mapping that holds `address`.
struct MappingInfo {
    bool found = false;
    std::string flags;            // VmFlags
    uint64_t anon_huge_kb = 0;   // AnonHugePages
};
MappingInfo mapping_of(const void* address) {
    const auto at = reinterpret_cast<uintptr_t>(address);
    std::ifstream smaps("/proc/self/smaps");
    MappingInfo info;
    bool inside = false;
    for (std::string line; std::getline(smaps, line);) {
        uintptr_t lo = 0, hi = 0;
        char dash = 0;
        std::istringstream head(line);
        if (head >> std::hex >> lo >> dash >> hi && dash == '-') {
            if (inside) break;  // the next mapping
            inside = lo <= at && at < hi;
            info.found |= inside;
            continue;
        }
        if (!inside) continue;
        if (line.starts_with("AnonHugePages:")) info.anon_huge_kb = std::stoull(line.substr(14));
        if (line.starts_with("VmFlags:")) info.flags = line.substr(8) + " ";
    }
    return info;
}


using dp::NatEndpoint;
using dp::NatResult;
using Bytes = std::vector<uint8_t>;

const MacAddr kGwMac{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}};
const MacAddr kAppMac{{0x52, 0x54, 0x00, 0x00, 0x02, 0x01}};
const MacAddr kUpstreamMac{{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}};
const Ipv4Addr kApp = Ipv4Addr::from_octets(10, 10, 0, 5);          // instance on a nat network
const Ipv4Addr kUplink = Ipv4Addr::from_octets(198, 51, 100, 10);   // uplink.address
const Ipv4Addr kServer = Ipv4Addr::from_octets(192, 0, 2, 80);      // "Internet host"
const Ipv4Addr kRouter = Ipv4Addr::from_octets(203, 0, 113, 254);   // a router on the path
constexpr size_t kL3 = sizeof(EtherHdr);

// ---- an independent checksum reference: big-endian byte pairs, no shared code ----

uint32_t ref_sum(const uint8_t* p, size_t n, uint32_t sum = 0) {
    for (size_t i = 0; i + 1 < n; i += 2) sum += uint32_t{p[i]} << 8 | p[i + 1];
    if (n % 2) sum += uint32_t{p[n - 1]} << 8;
    return sum;
}
uint16_t ref_fold(uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum & 0xffff);
}
uint16_t get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
void put16(uint8_t* p, uint16_t v) {
    p[0] = static_cast<uint8_t>(v >> 8);
    p[1] = static_cast<uint8_t>(v);
}
// A region whose stored checksum is right sums (with that checksum) to all ones.
bool ref_valid(const uint8_t* p, size_t n, uint32_t sum = 0) { return ref_fold(ref_sum(p, n, sum)) == 0; }
uint32_t ref_pseudo(const uint8_t* ip, uint8_t proto, size_t l4_len) {
    return ref_sum(ip + 12, 8) + proto + static_cast<uint32_t>(l4_len);
}

// Every checksum in an Ethernet/IPv4 frame, recomputed: IPv4 header, TCP/UDP with the
// pseudo-header (UDP 0 = none), ICMP, and for ICMP errors the quoted IPv4 header.
void expect_checksums_valid(const Bytes& f) {
    const uint8_t* ip = f.data() + kL3;
    const size_t ihl = (ip[0] & 0x0f) * 4u;
    const size_t total = get16(ip + 2);
    ASSERT_EQ(f.size(), kL3 + total);
    EXPECT_TRUE(ref_valid(ip, ihl)) << "IPv4 header checksum";
    if ((get16(ip + 6) & 0x1fff) != 0 || (get16(ip + 6) & 0x2000)) return;  // fragment
    const uint8_t* l4 = ip + ihl;
    const size_t l4_len = total - ihl;
    switch (ip[9]) {
        case ipproto::kTcp:
            EXPECT_TRUE(ref_valid(l4, l4_len, ref_pseudo(ip, ip[9], l4_len))) << "TCP checksum";
            break;
        case ipproto::kUdp:
            if (get16(l4 + 6) != 0) {
                EXPECT_TRUE(ref_valid(l4, l4_len, ref_pseudo(ip, ip[9], l4_len))) << "UDP checksum";
            }
            break;
        case ipproto::kIcmp:
            EXPECT_TRUE(ref_valid(l4, l4_len)) << "ICMP checksum";
            if (l4[0] == icmp::kDestUnreachable || l4[0] == icmp::kTimeExceeded) {
                const uint8_t* inner = l4 + 8;
                EXPECT_TRUE(ref_valid(inner, (inner[0] & 0x0f) * 4u)) << "quoted IPv4 header checksum";
            }
            break;
    }
}

// ---- frames ----

Bytes payload(size_t n, uint8_t salt = 0) {
    Bytes p(n);
    for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(i * 7 + salt);
    return p;
}

Bytes tcp_frame(Ipv4Addr src, uint16_t sport, Ipv4Addr dst, uint16_t dport, const Bytes& data = {},
                uint8_t flags = TcpHdr::kSyn) {
    return FrameBuilder().eth(kAppMac, kGwMac).ipv4(src, dst, ipproto::kTcp)
        .tcp(sport, dport, flags, 0x01020304, 0, data).build();
}
Bytes udp_frame(Ipv4Addr src, uint16_t sport, Ipv4Addr dst, uint16_t dport, const Bytes& data = payload(13)) {
    return FrameBuilder().eth(kAppMac, kGwMac).ipv4(src, dst, ipproto::kUdp).udp(sport, dport, data).build();
}
Bytes echo_frame(Ipv4Addr src, Ipv4Addr dst, uint16_t id, uint8_t type = icmp::kEchoRequest) {
    return FrameBuilder().eth(kAppMac, kGwMac).ipv4(src, dst, ipproto::kIcmp).icmp_echo(id, 3, 40, type).build();
}

// The IPv4 datagram of a frame, cut to `n` bytes (an ICMP error's quote).
Bytes quote_of(const Bytes& frame, size_t n) {
    return {frame.begin() + kL3, frame.begin() + kL3 + std::min(n, frame.size() - kL3)};
}

// An ICMP error from `src` to `dst` quoting `quote`, built from scratch.
Bytes icmp_error_frame(Ipv4Addr src, Ipv4Addr dst, uint8_t type, uint8_t code, const Bytes& quote,
                       uint16_t mtu = 0) {
    Bytes icmp{type, code, 0, 0, 0, 0, static_cast<uint8_t>(mtu >> 8), static_cast<uint8_t>(mtu)};
    icmp.insert(icmp.end(), quote.begin(), quote.end());
    put16(icmp.data() + 2, ref_fold(ref_sum(icmp.data(), icmp.size())));
    return FrameBuilder().eth(kUpstreamMac, kGwMac).ipv4(src, dst, ipproto::kIcmp).raw(icmp).build();
}

NatResult snat(Bytes& f, NatEndpoint to) { return dp::snat_outbound(f.data() + kL3, f.size() - kL3, to); }
NatResult dnat(Bytes& f, NatEndpoint to) { return dp::dnat_inbound(f.data() + kL3, f.size() - kL3, to); }
NatResult error_in(Bytes& f, NatEndpoint to) {
    return dp::translate_icmp_error_inbound(f.data() + kL3, f.size() - kL3, to);
}
NatResult error_out(Bytes& f, NatEndpoint to) {
    return dp::translate_icmp_error_outbound(f.data() + kL3, f.size() - kL3, to);
}

// ---- translations ----

TEST(NatTranslate, TcpSynLeavesWithTheUplinkAddressAndExternalPort) {
    Bytes f = tcp_frame(kApp, 40000, kServer, 443, payload(9));
    ASSERT_EQ(snat(f, {kUplink, 20001}), NatResult::ok);
    EXPECT_EQ(f, tcp_frame(kUplink, 20001, kServer, 443, payload(9)));
    expect_checksums_valid(f);
}

TEST(NatTranslate, TcpReplyIsRewrittenBackToTheInstance) {
    Bytes f = tcp_frame(kServer, 443, kUplink, 20001, payload(100), TcpHdr::kSyn | TcpHdr::kAck);
    ASSERT_EQ(dnat(f, {kApp, 40000}), NatResult::ok);
    EXPECT_EQ(f, tcp_frame(kServer, 443, kApp, 40000, payload(100), TcpHdr::kSyn | TcpHdr::kAck));
    expect_checksums_valid(f);
}

TEST(NatTranslate, UdpBothWaysWithOddPayload) {
    Bytes out = udp_frame(kApp, 5353, kServer, 53, payload(31));
    ASSERT_EQ(snat(out, {kUplink, 33333}), NatResult::ok);
    EXPECT_EQ(out, udp_frame(kUplink, 33333, kServer, 53, payload(31)));
    expect_checksums_valid(out);

    Bytes in = udp_frame(kServer, 53, kUplink, 33333, payload(77));
    ASSERT_EQ(dnat(in, {kApp, 5353}), NatResult::ok);
    EXPECT_EQ(in, udp_frame(kServer, 53, kApp, 5353, payload(77)));
    expect_checksums_valid(in);
}

TEST(NatTranslate, UdpWithoutChecksumStaysWithoutChecksum) {
    Bytes f = udp_frame(kApp, 5000, kServer, 9999);
    put16(f.data() + kL3 + 20 + 6, 0);  // sender computed no checksum
    ASSERT_EQ(snat(f, {kUplink, 20002}), NatResult::ok);
    EXPECT_EQ(get16(f.data() + kL3 + 20 + 6), 0);
    EXPECT_EQ(get16(f.data() + kL3 + 20), 20002);
    expect_checksums_valid(f);
    ASSERT_EQ(dnat(f, {kApp, 1}), NatResult::ok);  // any direction: 0 stays 0
    EXPECT_EQ(get16(f.data() + kL3 + 20 + 6), 0);
}

TEST(NatTranslate, UdpChecksumThatBecomesZeroIsSentAsAllOnes) {
    // Choose two payload bytes so that the translated datagram's checksum computes to 0.
    const NatEndpoint ext{kUplink, 24680};
    Bytes data = payload(10);
    data[0] = data[1] = 0;
    Bytes translated = udp_frame(kUplink, ext.port, kServer, 4500, data);
    uint8_t* ip = translated.data() + kL3;
    put16(ip + 20 + 6, 0);
    // Sum S without the filler; S + ~S is all ones, whose checksum is 0.
    const uint16_t filler = ref_fold(ref_sum(ip + 20, 18, ref_pseudo(ip, 17, 18)));
    put16(data.data(), filler);
    translated = udp_frame(kUplink, ext.port, kServer, 4500, data);
    ip = translated.data() + kL3;
    put16(ip + 20 + 6, 0);
    ASSERT_EQ(ref_fold(ref_sum(ip + 20, 18, ref_pseudo(ip, 17, 18))), 0) << "test setup";

    Bytes f = udp_frame(kApp, 6000, kServer, 4500, data);
    ASSERT_NE(get16(f.data() + kL3 + 26), 0);
    ASSERT_EQ(snat(f, ext), NatResult::ok);
    EXPECT_EQ(get16(f.data() + kL3 + 26), 0xffff);
    expect_checksums_valid(f);
}

TEST(NatTranslate, EchoRequestAndReplyTranslateTheIdentifier) {
    Bytes req = echo_frame(kApp, kServer, 0x0777);
    ASSERT_EQ(snat(req, {kUplink, 41000}), NatResult::ok);
    EXPECT_EQ(req, echo_frame(kUplink, kServer, 41000));
    expect_checksums_valid(req);

    Bytes rep = echo_frame(kServer, kUplink, 41000, icmp::kEchoReply);
    ASSERT_EQ(dnat(rep, {kApp, 0x0777}), NatResult::ok);
    EXPECT_EQ(rep, echo_frame(kServer, kApp, 0x0777, icmp::kEchoReply));
    expect_checksums_valid(rep);
}

TEST(NatTranslate, RoundTripRestoresTheOriginalBytes) {
    for (const Bytes& original : {tcp_frame(kApp, 40000, kServer, 443, payload(5)),
                                  udp_frame(kApp, 123, kServer, 123), echo_frame(kApp, kServer, 9)}) {
        Bytes f = original;
        ASSERT_EQ(snat(f, {kUplink, 59999}), NatResult::ok);
        ASSERT_NE(f, original);
        const uint16_t sport = original[kL3 + 9] == ipproto::kIcmp ? 9 : get16(original.data() + kL3 + 20);
        ASSERT_EQ(snat(f, {kApp, sport}), NatResult::ok);
        EXPECT_EQ(f, original);
    }
    Bytes reply = tcp_frame(kServer, 443, kUplink, 20001, payload(3), TcpHdr::kAck);
    const Bytes original = reply;
    ASSERT_EQ(dnat(reply, {kApp, 40000}), NatResult::ok);
    ASSERT_EQ(dnat(reply, {kUplink, 20001}), NatResult::ok);
    EXPECT_EQ(reply, original);
}

// Differential: thousands of random packets, each translated and compared with the same
// packet built with the translated fields (checksums computed in full), then translated back.
TEST(NatTranslate, RandomPacketsMatchAFullRecomputationBothWays) {
    std::mt19937 rng(4787);
    auto r16 = [&] { return static_cast<uint16_t>(rng()); };
    for (int i = 0; i < 3000; ++i) {
        const Ipv4Addr inside{static_cast<uint32_t>(rng())}, remote{static_cast<uint32_t>(rng())};
        const NatEndpoint in{inside, r16()}, ext{Ipv4Addr{static_cast<uint32_t>(rng())}, r16()};
        const uint16_t rport = r16();
        const Bytes data = payload(rng() % 90, static_cast<uint8_t>(rng()));
        const int kind = static_cast<int>(rng() % 3);
        auto make = [&](NatEndpoint s, Ipv4Addr d, uint16_t dport) {
            if (kind == 0) return tcp_frame(s.addr, s.port, d, dport, data, TcpHdr::kAck);
            if (kind == 1) return udp_frame(s.addr, s.port, d, dport, data);
            return echo_frame(s.addr, d, s.port);
        };
        const Bytes original = make(in, remote, rport);
        Bytes expected = make(ext, remote, kind == 2 ? ext.port : rport);
        if (kind == 1) {  // UDP: a computed zero travels as all ones; zero means none
            uint8_t* sum = expected.data() + kL3 + 26;
            if (get16(original.data() + kL3 + 26) == 0) {
                put16(sum, 0);
            } else if (get16(sum) == 0) {
                put16(sum, 0xffff);
            }
        }
        Bytes f = original;
        ASSERT_EQ(snat(f, ext), NatResult::ok);
        ASSERT_EQ(f, expected) << "packet " << i << " kind " << kind;
        ASSERT_EQ(snat(f, in), NatResult::ok);
        ASSERT_EQ(f, original) << "packet " << i << " kind " << kind;
    }
}

TEST(NatTranslate, FirstFragmentGetsTheDatagramChecksumAndLaterFragmentsTheAddress) {
    // A 60-byte UDP datagram cut after 24 bytes of L4: the first fragment's checksum must be
    // the checksum of the whole translated datagram.
    const Bytes data = payload(52);
    Bytes whole = udp_frame(kApp, 7000, kServer, 7001, data);
    Bytes first(whole.begin(), whole.begin() + kL3 + 20 + 24);
    uint8_t* ip = first.data() + kL3;
    put16(ip + 2, 44);
    put16(ip + 6, Ipv4Hdr::kMoreFragments);
    put16(ip + 10, 0);
    put16(ip + 10, ref_fold(ref_sum(ip, 20)));
    ASSERT_EQ(snat(first, {kUplink, 20500}), NatResult::ok);
    const Bytes translated_whole = udp_frame(kUplink, 20500, kServer, 7001, data);
    EXPECT_EQ(get16(first.data() + kL3 + 26), get16(translated_whole.data() + kL3 + 26));
    EXPECT_EQ(get16(first.data() + kL3 + 20), 20500);
    expect_checksums_valid(first);

    Bytes later = FrameBuilder().eth(kAppMac, kGwMac)
                      .ipv4(kApp, kServer, ipproto::kUdp, 64, 3 /* offset 24 bytes */)
                      .raw(payload(36)).build();
    const Bytes later_before = later;
    ASSERT_EQ(snat(later, {kUplink, 20500}), NatResult::ok);
    EXPECT_EQ(Ipv4Addr::from_be(reinterpret_cast<Ipv4Hdr*>(later.data() + kL3)->src), kUplink);
    EXPECT_TRUE(std::equal(later.begin() + kL3 + 20, later.end(), later_before.begin() + kL3 + 20))
        << "the payload of a later fragment is not touched";
    expect_checksums_valid(later);

    // A later fragment may be nothing but its header: still a datagram, translated.
    Bytes bare = FrameBuilder().eth(kAppMac, kGwMac).ipv4(kApp, kServer, ipproto::kUdp, 64, 3).build();
    ASSERT_EQ(bare.size(), kL3 + 20);
    ASSERT_EQ(snat(bare, {kUplink, 20500}), NatResult::ok);
    EXPECT_EQ(Ipv4Addr::from_be(reinterpret_cast<Ipv4Hdr*>(bare.data() + kL3)->src), kUplink);
    expect_checksums_valid(bare);
}

TEST(NatTranslate, RefusesWhatItCannotTranslateAndLeavesItUntouched) {
    std::vector<std::pair<Bytes, NatResult>> cases;
    cases.emplace_back(FrameBuilder().eth(kAppMac, kGwMac).ipv4(kApp, kServer, 47).raw(payload(24)).build(),
                       NatResult::unsupported);  // GRE: no port to multiplex on
    Bytes timestamp = echo_frame(kApp, kServer, 1);
    timestamp[kL3 + 20] = 13;  // ICMP timestamp request
    cases.emplace_back(timestamp, NatResult::unsupported);
    cases.emplace_back(icmp_error_frame(kApp, kServer, icmp::kDestUnreachable, icmp::kPortUnreachable,
                                        quote_of(udp_frame(kServer, 53, kApp, 5353), 28)),
                       NatResult::unsupported);  // errors have their own functions
    Bytes short_tcp = tcp_frame(kApp, 1, kServer, 2);
    short_tcp.resize(kL3 + 20 + 12);
    put16(short_tcp.data() + kL3 + 2, 32);
    cases.emplace_back(short_tcp, NatResult::malformed);
    Bytes bad_ihl = udp_frame(kApp, 1, kServer, 2);
    bad_ihl[kL3] = 0x44;
    cases.emplace_back(bad_ihl, NatResult::malformed);
    // ICMP with no message at all (total length 20); the byte after the datagram (a type
    // that has no layout) must not be read as its type.
    Bytes empty_icmp = FrameBuilder().eth(kAppMac, kGwMac).ipv4(kApp, kServer).build();
    empty_icmp.push_back(icmp::kDestUnreachable);
    cases.emplace_back(empty_icmp, NatResult::malformed);
    for (auto& [frame, expected] : cases) {
        Bytes f = frame;
        EXPECT_EQ(snat(f, {kUplink, 20000}), expected);
        EXPECT_EQ(dnat(f, {kUplink, 20000}), expected);
        EXPECT_EQ(f, frame);
    }
}

TEST(NatTranslate, WorksOnABatchFrame) {
    TestFrame tf(tcp_frame(kApp, 40000, kServer, 443));
    dp::PacketMeta m;
    m.l3_offset = kL3;
    m.l4_offset = kL3 + 20;
    ASSERT_EQ(dp::snat_outbound(tf.frame, m, {kUplink, 20001}), NatResult::ok);
    EXPECT_EQ(tf.bytes(), tcp_frame(kUplink, 20001, kServer, 443));
}

// ---- ICMP errors ----

struct Quoted {
    const char* what;
    Bytes inside;   // the datagram as the instance sent it
    Bytes outside;  // the same after masquerade
    NatEndpoint instance;
};

std::vector<Quoted> quoted_datagrams() {
    return {
        {"udp", udp_frame(kApp, 5353, kServer, 53, payload(40)), udp_frame(kUplink, 30000, kServer, 53, payload(40)),
         {kApp, 5353}},
        {"tcp", tcp_frame(kApp, 40000, kServer, 443, payload(40)),
         tcp_frame(kUplink, 20001, kServer, 443, payload(40)), {kApp, 40000}},
        {"echo", echo_frame(kApp, kServer, 0x0777), echo_frame(kUplink, kServer, 41000), {kApp, 0x0777}},
    };
}

TEST(NatIcmpError, PortUnreachableFromOutsideReachesTheInstanceQuotingItsOwnDatagram) {
    for (const Quoted& q : quoted_datagrams()) {
        for (size_t quote_len : {size_t{28}, size_t{48}, size_t{576}}) {
            SCOPED_TRACE(std::string(q.what) + " quote " + std::to_string(quote_len));
            Bytes f = icmp_error_frame(kServer, kUplink, icmp::kDestUnreachable, icmp::kPortUnreachable,
                                       quote_of(q.outside, quote_len));
            ASSERT_EQ(error_in(f, q.instance), NatResult::ok);
            EXPECT_EQ(f, icmp_error_frame(kServer, kApp, icmp::kDestUnreachable, icmp::kPortUnreachable,
                                          quote_of(q.inside, quote_len)));
            expect_checksums_valid(f);
        }
    }
}

TEST(NatIcmpError, FragmentationNeededFromARouterQuotingOnlyEightBytes) {
    // 8 bytes of TCP: the TCP checksum is not in the quote and cannot be fixed; the rest is.
    for (const Quoted& q : quoted_datagrams()) {
        SCOPED_TRACE(q.what);
        Bytes f = icmp_error_frame(kRouter, kUplink, icmp::kDestUnreachable, icmp::kFragmentationNeeded,
                                   quote_of(q.outside, 28), 1400);
        ASSERT_EQ(error_in(f, q.instance), NatResult::ok);
        EXPECT_EQ(f, icmp_error_frame(kRouter, kApp, icmp::kDestUnreachable, icmp::kFragmentationNeeded,
                                      quote_of(q.inside, 28), 1400));
        expect_checksums_valid(f);
    }
}

TEST(NatIcmpError, TcpChecksumInTheQuoteIsFixedOnlyWhenQuoted) {
    const Quoted q = quoted_datagrams()[1];
    Bytes f = icmp_error_frame(kRouter, kUplink, icmp::kTimeExceeded, 0, quote_of(q.outside, 20 + 18));
    ASSERT_EQ(error_in(f, q.instance), NatResult::ok);
    const size_t tcp_sum_at = kL3 + 20 + 8 + 20 + 16;
    EXPECT_EQ(get16(f.data() + tcp_sum_at), get16(q.inside.data() + kL3 + 20 + 16));
    expect_checksums_valid(f);

    Bytes g = icmp_error_frame(kRouter, kUplink, icmp::kTimeExceeded, 0, quote_of(q.outside, 20 + 17));
    ASSERT_EQ(error_in(g, q.instance), NatResult::ok);
    EXPECT_EQ(g[tcp_sum_at], q.outside[kL3 + 20 + 16]) << "half a checksum is left alone";
    expect_checksums_valid(g);
}

TEST(NatIcmpError, QuotedFlowNamesTheConnectionToLookUp) {
    const Quoted q = quoted_datagrams()[0];
    const Bytes f = icmp_error_frame(kServer, kUplink, icmp::kDestUnreachable, icmp::kPortUnreachable,
                                     quote_of(q.outside, 28));
    const auto flow = dp::icmp_error_quoted_flow(f.data() + kL3, f.size() - kL3);
    ASSERT_TRUE(flow);
    EXPECT_EQ(flow->proto, ipproto::kUdp);
    EXPECT_EQ(flow->src, (NatEndpoint{kUplink, 30000}));
    EXPECT_EQ(flow->dst, (NatEndpoint{kServer, 53}));

    const Bytes e = icmp_error_frame(kServer, kUplink, icmp::kTimeExceeded, 0,
                                     quote_of(quoted_datagrams()[2].outside, 28));
    const auto echo = dp::icmp_error_quoted_flow(e.data() + kL3, e.size() - kL3);
    ASSERT_TRUE(echo);
    EXPECT_EQ(echo->src, (NatEndpoint{kUplink, 41000}));
    EXPECT_EQ(echo->dst, (NatEndpoint{kServer, 41000})) << "the identifier on both sides, as ICMP keys";

    const Bytes not_error = echo_frame(kServer, kUplink, 1, icmp::kEchoReply);
    EXPECT_FALSE(dp::icmp_error_quoted_flow(not_error.data() + kL3, not_error.size() - kL3));
}

TEST(NatIcmpError, ErrorFromTheInstanceAboutAReplyLeavesWithTheExternalEndpoint) {
    // The server's reply came in as `outside` and was delivered as `inside`; the instance's
    // socket is closed and it answers port unreachable quoting what it received.
    const Bytes outside = udp_frame(kServer, 53, kUplink, 30000, payload(20));
    const Bytes inside = udp_frame(kServer, 53, kApp, 5353, payload(20));
    Bytes f = icmp_error_frame(kApp, kServer, icmp::kDestUnreachable, icmp::kPortUnreachable, quote_of(inside, 48));
    ASSERT_EQ(error_out(f, {kUplink, 30000}), NatResult::ok);
    EXPECT_EQ(f, icmp_error_frame(kUplink, kServer, icmp::kDestUnreachable, icmp::kPortUnreachable,
                                  quote_of(outside, 48)));
    expect_checksums_valid(f);
}

TEST(NatIcmpError, RefusesShortQuotesAndUntranslatableQuotes) {
    const Quoted q = quoted_datagrams()[0];
    std::vector<std::pair<Bytes, NatResult>> cases;
    cases.emplace_back(icmp_error_frame(kServer, kUplink, 3, 3, quote_of(q.outside, 27)), NatResult::malformed);
    cases.emplace_back(icmp_error_frame(kServer, kUplink, 3, 3, quote_of(q.outside, 12)), NatResult::malformed);
    Bytes gre = FrameBuilder().eth(kAppMac, kGwMac).ipv4(kUplink, kServer, 47).raw(payload(24)).build();
    cases.emplace_back(icmp_error_frame(kServer, kUplink, 3, 3, quote_of(gre, 28)), NatResult::unsupported);
    cases.emplace_back(echo_frame(kServer, kUplink, 5, icmp::kEchoReply), NatResult::unsupported);
    for (auto& [frame, expected] : cases) {
        Bytes f = frame;
        EXPECT_EQ(error_in(f, {kApp, 1}), expected);
        EXPECT_EQ(f, frame);
    }
}

// ---- port allocation ----

dp::NatPortAllocator make_allocator(dp::NatPortRange range = {}, uint32_t partitions = 64) {
    auto a = dp::NatPortAllocator::create(range, partitions, 0x5eed);
    EXPECT_TRUE(a.has_value()) << a.error();
    return std::move(*a);
}

TEST(NatPorts, KeepsTheInstancePortWhenItIsFree) {
    auto a = make_allocator();
    EXPECT_EQ(a.allocate(ipproto::kTcp, kServer, 443, 40000, 1), 40000);
    EXPECT_TRUE(a.allocated(ipproto::kTcp, kServer, 443, 40000));
    EXPECT_EQ(a.in_use(ipproto::kTcp), 1u);
}

TEST(NatPorts, ProbesWhenThePortIsTakenOrOutsideTheRange) {
    auto a = make_allocator();
    ASSERT_EQ(a.allocate(ipproto::kTcp, kServer, 443, 40000, 1), 40000);
    const auto second = a.allocate(ipproto::kTcp, kServer, 443, 40000, 2);
    ASSERT_TRUE(second);
    EXPECT_NE(*second, 40000);
    EXPECT_TRUE(a.range().contains(*second));
    const auto low = a.allocate(ipproto::kUdp, kServer, 123, 123, 3);
    ASSERT_TRUE(low);
    EXPECT_TRUE(a.range().contains(*low)) << "ports outside the range are never used";
}

TEST(NatPorts, ProbeStartDependsOnTheSeed) {
    auto a = make_allocator();
    std::set<uint16_t> ports;
    for (uint64_t seed = 0; seed < 64; ++seed) ports.insert(*a.allocate(ipproto::kUdp, kServer, 53, 0, seed * 7919));
    EXPECT_EQ(ports.size(), 64u);
    const uint16_t spread = *ports.rbegin() - *ports.begin();
    EXPECT_GT(spread, 20000) << "starts are spread over the range, not sequential";
}

TEST(NatPorts, UniqueTowardsOneRemoteEndpoint) {
    auto a = make_allocator({30000, 30099});
    std::set<uint16_t> ports;
    for (int i = 0; i < 100; ++i) {
        const auto p = a.allocate(ipproto::kTcp, kServer, 443, 30000, static_cast<uint64_t>(i));
        ASSERT_TRUE(p) << i;
        EXPECT_TRUE(ports.insert(*p).second) << "port " << *p << " given twice";
    }
    EXPECT_EQ(ports.size(), 100u);
    EXPECT_FALSE(a.allocate(ipproto::kTcp, kServer, 443, 30000, 7));
}

TEST(NatPorts, SamePortServesDifferentRemoteEndpoints) {
    auto a = make_allocator();
    // Another server port (or another server) hashed to another pool.
    uint16_t other = 1;
    while (a.partition_of(ipproto::kTcp, kServer, other) == a.partition_of(ipproto::kTcp, kServer, 443)) ++other;
    EXPECT_EQ(a.allocate(ipproto::kTcp, kServer, 443, 45000, 1), 45000);
    EXPECT_EQ(a.allocate(ipproto::kTcp, kServer, other, 45000, 2), 45000);
    EXPECT_NE(a.allocate(ipproto::kTcp, kServer, 443, 45000, 3), 45000);
    EXPECT_EQ(a.in_use(ipproto::kTcp), 3u);

    // Protocols have their own ports; ICMP identifiers depend on the remote address only.
    EXPECT_EQ(a.allocate(ipproto::kUdp, kServer, 443, 45000, 4), 45000);
    EXPECT_EQ(a.allocate(ipproto::kIcmp, kServer, 0, 45000, 5), 45000);
    EXPECT_NE(a.allocate(ipproto::kIcmp, kServer, 999, 45000, 6), 45000);

    // With one partition every port is unique per protocol, whatever the remote.
    auto global = make_allocator({}, 1);
    EXPECT_EQ(global.allocate(ipproto::kTcp, kServer, 443, 45000, 1), 45000);
    EXPECT_NE(global.allocate(ipproto::kTcp, kRouter, 80, 45000, 2), 45000);
}

TEST(NatPorts, ExhaustionRefusesNewPortsAndKeepsExistingOnes) {
    auto a = make_allocator({50000, 50002});
    std::set<uint16_t> held;
    for (int i = 0; i < 3; ++i) held.insert(*a.allocate(ipproto::kUdp, kServer, 53, 0, static_cast<uint64_t>(i)));
    EXPECT_EQ(held, (std::set<uint16_t>{50000, 50001, 50002}));
    for (uint64_t seed = 0; seed < 50; ++seed)
        EXPECT_FALSE(a.allocate(ipproto::kUdp, kServer, 53, 50001, seed));
    EXPECT_EQ(a.in_use(ipproto::kUdp), 3u);
    for (uint16_t p : held) EXPECT_TRUE(a.allocated(ipproto::kUdp, kServer, 53, p));
}

TEST(NatPorts, PortsInUseAreCountedPerProtocol) {
    auto a = make_allocator({}, 1);
    ASSERT_EQ(a.allocate(ipproto::kUdp, kServer, 53, 40000, 1), 40000);
    ASSERT_EQ(a.allocate(ipproto::kUdp, kServer, 53, 40001, 2), 40001);
    ASSERT_EQ(a.allocate(ipproto::kIcmp, kServer, 0, 40002, 3), 40002);
    EXPECT_EQ(a.in_use(ipproto::kTcp), 0u);
    EXPECT_EQ(a.in_use(ipproto::kUdp), 2u);
    EXPECT_EQ(a.in_use(ipproto::kIcmp), 1u);
}

TEST(NatPorts, OnlyTcpUdpAndIcmpHavePorts) {
    auto a = make_allocator();
    EXPECT_FALSE(a.allocate(47, kServer, 0, 30000, 0));
    EXPECT_FALSE(a.release(47, kServer, 0, 30000));
    EXPECT_EQ(a.in_use(47), 0u);
}

TEST(NatPorts, ReleasedPortIsReusedAndDoubleReleaseIsReported) {
    auto a = make_allocator({50000, 50001});
    ASSERT_EQ(a.allocate(ipproto::kTcp, kServer, 443, 50000, 0), 50000);
    ASSERT_EQ(a.allocate(ipproto::kTcp, kServer, 443, 50000, 0), 50001);
    ASSERT_FALSE(a.allocate(ipproto::kTcp, kServer, 443, 50000, 0));
    EXPECT_TRUE(a.release(ipproto::kTcp, kServer, 443, 50000));  // the connection's entry is gone
    EXPECT_FALSE(a.allocated(ipproto::kTcp, kServer, 443, 50000));
    EXPECT_EQ(a.in_use(ipproto::kTcp), 1u);
    EXPECT_EQ(a.allocate(ipproto::kTcp, kServer, 443, 12345, 99), 50000);
    EXPECT_TRUE(a.release(ipproto::kTcp, kServer, 443, 50001));
    EXPECT_FALSE(a.release(ipproto::kTcp, kServer, 443, 50001)) << "already free";
    EXPECT_FALSE(a.release(ipproto::kTcp, kServer, 443, 40000)) << "outside the range";
    EXPECT_EQ(a.in_use(ipproto::kTcp), 1u);
}

TEST(NatPorts, TailOfTheLastBitmapWordIsNeverHandedOut) {
    auto a = make_allocator({1000, 1064}, 1);  // 65 ports: one full word and one bit
    std::set<uint16_t> got;
    while (auto p = a.allocate(ipproto::kUdp, kServer, 1, 0, got.size() * 31)) got.insert(*p);
    EXPECT_EQ(got.size(), 65u);
    EXPECT_EQ(*got.begin(), 1000);
    EXPECT_EQ(*got.rbegin(), 1064);
    EXPECT_EQ(a.in_use(ipproto::kUdp), 65u);
}

TEST(NatPorts, CreateRejectsBadRangesAndPartitions) {
    EXPECT_FALSE(dp::NatPortAllocator::create({0, 100}));
    EXPECT_FALSE(dp::NatPortAllocator::create({200, 100}));
    EXPECT_FALSE(dp::NatPortAllocator::create({}, 0));
    EXPECT_FALSE(dp::NatPortAllocator::create({}, 48));
    EXPECT_FALSE(dp::NatPortAllocator::create({}, 8192));
    auto whole = dp::NatPortAllocator::create({1, 65535}, 1);
    ASSERT_TRUE(whole);
    EXPECT_EQ(whole->allocate(ipproto::kTcp, kServer, 1, 65535, 0), 65535);
    EXPECT_EQ(whole->allocate(ipproto::kTcp, kServer, 1, 1, 0), 1);
    auto defaults = dp::NatPortAllocator::create();
    ASSERT_TRUE(defaults);
    EXPECT_EQ(defaults->range().size(), 40000u);
    // Bitmaps (3 x 64 x 5 kB), the per-instance quota counters (3 x 64 x 1024 x 2 bytes) and
    // the connection map (3 x 64 x 40 000 x 4 bytes).
    EXPECT_EQ(defaults->memory_bytes(), size_t{3} * 64 * 79 * 64 + size_t{3} * 64 * 1024 * 2 + size_t{3} * 64 * 40000 * 4);
}

TEST(NatPorts, TwoWorkersAllocatingAtOnceNeverGetTheSamePort) {
    auto a = make_allocator({20000, 24095}, 1);
    for (int round = 0; round < 20; ++round) {
        std::vector<uint16_t> got[2];
        std::atomic<int> ready{0};
        auto worker = [&](int w) {
            ready++;
            while (ready.load() < 2) {
            }
            // Same probe starts in both threads (and, on odd rounds, the same preferred
            // ports): they race for the same bits all the time.
            for (uint64_t i = 0;; ++i) {
                const uint16_t preferred = round % 2 ? static_cast<uint16_t>(20000 + i % 4096) : 0;
                const auto p = a.allocate(ipproto::kTcp, kServer, 443, preferred, i / 8);
                if (!p) break;
                got[w].push_back(*p);
            }
        };
        std::thread t0(worker, 0), t1(worker, 1);
        t0.join();
        t1.join();
        std::vector<uint16_t> all = got[0];
        all.insert(all.end(), got[1].begin(), got[1].end());
        std::sort(all.begin(), all.end());
        ASSERT_EQ(std::adjacent_find(all.begin(), all.end()), all.end()) << "a port was given twice, round " << round;
        ASSERT_EQ(all.size(), 4096u);
        ASSERT_EQ(a.in_use(ipproto::kTcp), 4096u);
        for (uint16_t p : all) ASSERT_TRUE(a.release(ipproto::kTcp, kServer, 443, p));
    }
}

TEST(NatPorts, WorkersAllocateWhileTheSweeperReleases) {
    // Two workers allocate; a third thread (the expiry sweep) releases what they hand over.
    // Every port must have at most one holder at any time.
    auto a = make_allocator({40000, 40063}, 1);
    std::atomic<int> holder[64] = {};
    std::atomic<int> conflicts{0};
    std::atomic<int> workers_done{0};
    std::mutex m;
    std::deque<uint16_t> expired;
    auto worker = [&](int w) {
        std::mt19937_64 rng(static_cast<uint64_t>(w));
        for (int i = 0; i < 50000; ++i) {
            const auto p = a.allocate(ipproto::kUdp, kServer, 53, static_cast<uint16_t>(40000 + rng() % 64), rng());
            if (!p) continue;
            if (holder[*p - 40000].exchange(w + 1) != 0) conflicts++;
            std::lock_guard lock(m);
            expired.push_back(*p);
        }
        workers_done++;
    };
    std::thread sweeper([&] {
        for (;;) {
            std::optional<uint16_t> p;
            {
                std::lock_guard lock(m);
                if (!expired.empty()) {
                    p = expired.front();
                    expired.pop_front();
                }
            }
            if (!p) {
                if (workers_done.load() == 2) return;
                std::this_thread::yield();
                continue;
            }
            holder[*p - 40000].store(0);
            if (!a.release(ipproto::kUdp, kServer, 53, *p)) conflicts++;
        }
    });
    std::thread w0(worker, 0), w1(worker, 1);
    w0.join();
    w1.join();
    sweeper.join();
    EXPECT_EQ(conflicts.load(), 0);
    EXPECT_EQ(a.in_use(ipproto::kUdp), 0u);
}

// ---- the binding in a connection entry ----

TEST(NatBinding, FitsTheEntryAndZeroMeansNotTranslated) {
    dp::CtEntry e{};
    EXPECT_FALSE(dp::load_nat_binding(e).translated());
    const dp::NatBinding primary{kUplink, 20001, dp::NatRole::primary, 0};
    dp::store_nat_binding(e, primary);
    EXPECT_EQ(dp::load_nat_binding(e), primary);
    EXPECT_EQ(dp::load_nat_binding(e).endpoint(), (NatEndpoint{kUplink, 20001}));
    dp::store_nat_binding(e, dp::NatBinding{});
    EXPECT_FALSE(dp::load_nat_binding(e).translated());
    EXPECT_EQ(e.state.expires_s, 0u) << "the binding leaves the rest of the entry alone";
}

// The whole masquerade of one connection, as the policy stage will drive it: allocate, SNAT
// the request, DNAT the reply, translate an ICMP error, release.
TEST(NatFlow, InstanceReachesInternetHostViaMasquerade) {
    auto ports = make_allocator();
    const uint16_t instance_port = 51000;
    const auto ext_port = ports.allocate(ipproto::kTcp, kServer, 443, instance_port, 42);
    ASSERT_EQ(ext_port, instance_port) << "port preserved";
    const NatEndpoint ext{kUplink, *ext_port}, inside{kApp, instance_port};

    Bytes syn = tcp_frame(kApp, instance_port, kServer, 443);
    ASSERT_EQ(snat(syn, ext), NatResult::ok);
    EXPECT_EQ(Ipv4Addr::from_be(reinterpret_cast<Ipv4Hdr*>(syn.data() + kL3)->src), kUplink)
        << "the server sees the host address";

    Bytes synack = tcp_frame(kServer, 443, kUplink, *ext_port, {}, TcpHdr::kSyn | TcpHdr::kAck);
    ASSERT_EQ(dnat(synack, inside), NatResult::ok);
    EXPECT_EQ(synack, tcp_frame(kServer, 443, kApp, instance_port, {}, TcpHdr::kSyn | TcpHdr::kAck));

    Bytes err = icmp_error_frame(kRouter, kUplink, icmp::kDestUnreachable, icmp::kFragmentationNeeded,
                                 quote_of(syn, 28), 1280);
    const auto flow = dp::icmp_error_quoted_flow(err.data() + kL3, err.size() - kL3);
    ASSERT_TRUE(flow);
    EXPECT_EQ(flow->src, ext);
    ASSERT_EQ(error_in(err, inside), NatResult::ok);
    expect_checksums_valid(err);

    EXPECT_TRUE(ports.release(ipproto::kTcp, kServer, 443, *ext_port));
    EXPECT_EQ(ports.in_use(ipproto::kTcp), 0u);
}

}  // namespace
}  // namespace calyx::test

namespace calyx::test {
namespace {

// The NAT allocator's tables (dp/table_memory.hpp) are read at random, a miss per packet; with
// small pages each such read also walked the page tables (doc/performance.md, round four). A
// table is therefore aligned to a huge page, advised for them before its first touch, and
// backed by them wherever the kernel gives transparent huge pages on request.
TEST(TableMemory, ALargeTableIsAlignedAndAdvisedForHugePagesAndGetsThem) {
    constexpr size_t kHugePage = size_t{2} << 20;
    constexpr size_t kSlots = 16 * kHugePage / sizeof(uint64_t);
    const auto table = dp::make_table_array<uint64_t>(kSlots);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(table.get()) % kHugePage, 0u);
    EXPECT_TRUE(std::all_of(table.get(), table.get() + kSlots, [](uint64_t v) { return v == 0; }));
    const MappingInfo m = mapping_of(table.get());
    ASSERT_TRUE(m.found);
    EXPECT_NE(m.flags.find(" hg "), std::string::npos) << "not advised for huge pages: VmFlags" << m.flags;
    std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
    std::string modes;
    std::getline(thp, modes);
    if (modes.find("[never]") == std::string::npos && !modes.empty())
        EXPECT_GE(m.anon_huge_kb, kHugePage / 1024) << "no huge page backs the table (transparent_hugepage: " << modes << ")";
}

}  // namespace
}  // namespace calyx::test
