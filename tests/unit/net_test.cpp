// Addresses and checksums: the arithmetic every stage relies on.
#include <gtest/gtest.h>

#include <random>
#include <string_view>
#include <vector>

#include "calyx/headers.hpp"
#include "calyx/net.hpp"
#include "support/reference_checksum.hpp"

namespace calyx {
namespace {

TEST(Addresses, ParseAndFormatRoundTrip) {
    EXPECT_EQ(Ipv4Addr::parse("203.0.113.10")->to_string(), "203.0.113.10");
    EXPECT_EQ(Ipv4Addr::parse("0.0.0.0")->value, 0u);
    EXPECT_EQ(MacAddr::parse("52:54:00:AB:cd:01")->to_string(), "52:54:00:ab:cd:01");
    EXPECT_EQ(Ipv4Prefix::parse("10.0.0.0/8")->to_string(), "10.0.0.0/8");
    EXPECT_EQ(Ipv4Prefix::parse("10.1.2.3/8", true)->to_string(), "10.0.0.0/8");
}

TEST(Addresses, StrictParsersRejectNearMisses) {
    for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4 ", "+1.2.3.4", "1..2.3"})
        EXPECT_FALSE(Ipv4Addr::parse(bad)) << bad;
    for (const char* bad : {"52:54:00:00:01", "52-54-00-00-01-01", "52:54:00:00:01:0g", "52:54:00:00:01:011"})
        EXPECT_FALSE(MacAddr::parse(bad)) << bad;
    for (const char* bad : {"10.0.0.1/8", "10.0.0.0/33", "10.0.0.0", "10.0.0.0/", "10.0.0.0/08"})
        EXPECT_FALSE(Ipv4Prefix::parse(bad)) << bad;
}

TEST(Addresses, PrefixContainment) {
    const auto net = *Ipv4Prefix::parse("10.10.0.0/24");
    EXPECT_TRUE(net.contains(*Ipv4Addr::parse("10.10.0.255")));
    EXPECT_FALSE(net.contains(*Ipv4Addr::parse("10.10.1.0")));
    EXPECT_EQ(net.broadcast().to_string(), "10.10.0.255");
    EXPECT_TRUE(Ipv4Prefix::parse("0.0.0.0/0")->contains(*Ipv4Addr::parse("255.255.255.255")));
    EXPECT_TRUE(Ipv4Prefix::parse("10.0.0.0/8")->contains(net));
    EXPECT_FALSE(net.contains(*Ipv4Prefix::parse("10.0.0.0/8")));
}

TEST(Checksums, KnownIpv4HeaderChecksum) {
    // A textbook header (Wikipedia's IPv4 checksum example): checksum 0xb861.
    const uint8_t header[20] = {0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                                0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7};
    const uint16_t sum = internet_checksum(header, sizeof(header));
    EXPECT_EQ(Be16{sum}.host(), 0xb861);
}

TEST(Checksums, IncrementalUpdateAgreesWithFullRecomputation) {
    std::mt19937 rng(42);
    for (int round = 0; round < 10000; ++round) {
        uint8_t data[40];
        for (auto& b : data) b = static_cast<uint8_t>(rng());
        const uint16_t before = internet_checksum(data, sizeof(data));
        const size_t at = (rng() % 20) * 2;
        uint16_t old_word, new_word = static_cast<uint16_t>(rng());
        std::memcpy(&old_word, data + at, 2);
        std::memcpy(data + at, &new_word, 2);
        const uint16_t incremental = checksum_update16(before, old_word, new_word);
        const uint16_t full = internet_checksum(data, sizeof(data));
        // One's complement has two zeros; both checksums must verify the data identically.
        ASSERT_EQ(checksum_fold(checksum_partial(data, sizeof(data), static_cast<uint16_t>(~incremental))),
                  checksum_fold(checksum_partial(data, sizeof(data), static_cast<uint16_t>(~full))))
            << "round " << round;
    }
}

TEST(Checksums, ThirtyTwoBitUpdateAgreesWithFullRecomputation) {
    std::mt19937 rng(7);
    for (int round = 0; round < 10000; ++round) {
        uint8_t data[24];
        for (auto& b : data) b = static_cast<uint8_t>(rng());
        const uint16_t before = internet_checksum(data, sizeof(data));
        uint32_t old_word, new_word = static_cast<uint32_t>(rng());
        std::memcpy(&old_word, data + 12, 4);
        std::memcpy(data + 12, &new_word, 4);
        std::memcpy(data + 12, &new_word, 4);
        uint8_t verify[24];
        std::memcpy(verify, data, sizeof(data));
        const uint16_t incremental = checksum_update32(before, old_word, new_word);
        // Place the checksum in the data as a real header would and verify it sums to zero.
        uint8_t with_sum[26];
        std::memcpy(with_sum, verify, 24);
        std::memcpy(with_sum + 24, &incremental, 2);
        ASSERT_EQ(internet_checksum(with_sum, sizeof(with_sum)), 0) << "round " << round;
    }
}

// A NAT rewrite changes an address (32 bits) and a port at once and folds the delta once: the
// result must be the checksum the sequential updates give, bit for bit (they never differ, one's
// complement zero included), and verify like a full recomputation.
TEST(Checksums, SeveralChangesFoldedOnceAgreeWithSequentialUpdatesAndRecomputation) {
    std::mt19937 rng(11);
    for (int round = 0; round < 100000; ++round) {
        uint8_t data[24];
        for (auto& b : data) b = static_cast<uint8_t>(rng());
        // Zero words and all-ones words are where one's complement arithmetic has its corners.
        if (round % 4 == 0) std::memset(data, round % 8 == 0 ? 0x00 : 0xff, 12);
        const uint16_t before = internet_checksum(data, sizeof(data));
        uint32_t old32, new32 = round % 3 == 0 ? 0 : static_cast<uint32_t>(rng());
        uint16_t old16, new16 = round % 5 == 0 ? 0xffff : static_cast<uint16_t>(rng());
        std::memcpy(&old32, data + 4, 4);
        std::memcpy(&old16, data + 10, 2);
        std::memcpy(data + 4, &new32, 4);
        std::memcpy(data + 10, &new16, 2);
        ChecksumDelta d;
        d.change32(old32, new32);
        d.change16(old16, new16);
        const uint16_t folded = d.apply(before);
        const uint16_t sequential = checksum_update16(
            checksum_update16(checksum_update16(before, static_cast<uint16_t>(old32), static_cast<uint16_t>(new32)),
                              static_cast<uint16_t>(old32 >> 16), static_cast<uint16_t>(new32 >> 16)),
            old16, new16);
        ASSERT_EQ(folded, sequential) << "round " << round;
        uint8_t with_sum[26];
        std::memcpy(with_sum, data, 24);
        std::memcpy(with_sum + 24, &folded, 2);
        ASSERT_EQ(internet_checksum(with_sum, sizeof(with_sum)), 0) << "round " << round;
    }
}

TEST(Checksums, OddLengthPadsWithZero) {
    const uint8_t odd[3] = {0x01, 0x02, 0x03};
    const uint8_t even[4] = {0x01, 0x02, 0x03, 0x00};
    EXPECT_EQ(internet_checksum(odd, 3), internet_checksum(even, 4));
}

// --- Known answers: the checksums must agree with RFC 1071's worked example and with what the
// Linux kernel put on the wire, not only with themselves.

// RFC 1071 section 3, "Numerical Examples": the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2
// (with the end-around carries); the checksum is its complement, 220d.
TEST(Checksums, Rfc1071NumericalExample) {
    const uint8_t bytes[8] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    EXPECT_EQ(Be16{internet_checksum(bytes, sizeof bytes)}.host(), 0x220d);
    EXPECT_EQ(Be16{static_cast<uint16_t>(~checksum_fold(checksum_partial(bytes, sizeof bytes)))}.host(), 0xddf2);
    EXPECT_EQ(test::ref::checksum(bytes, sizeof bytes), 0x220d);
    EXPECT_EQ(test::ref::ones_complement_sum(bytes, sizeof bytes), 0xddf2);
}

std::vector<uint8_t> from_hex(std::string_view hex) {
    std::vector<uint8_t> out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2)
        out.push_back(static_cast<uint8_t>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
    return out;
}

// Frames the Linux kernel (6.x, software checksums: veth with tx offload off) sent from
// 192.0.2.1 to 192.0.2.2, captured with an AF_PACKET socket on the receiving veth: a UDP
// datagram with an odd payload ("calyx checksum vector"), a ping with an odd payload, a TCP
// SYN with options and a data segment ("GET / HTTP/1.0").
struct KernelFrame {
    const char* what;
    const char* hex;
    uint16_t ip_checksum;  // as on the wire
    uint16_t l4_checksum;
};
const KernelFrame kKernelFrames[] = {
    {"udp", "02000000000b02000000000a080045000031580e400040115eaac0000201c00002029c400035001d814963616c797820636865636b73756d20766563746f72",
     0x5eaa, 0x8149},
    {"icmp echo", "02000000000b02000000000a08004500002f3464400040018266c0000201c00002020800d8a627230001c60d136b000000004d5a0b0000000000636163",
     0x8266, 0xd8a6},
    {"tcp syn", "02000000000b02000000000a08004500003c4caf400040066a09c0000201c0000202a0281f9048340f9200000000a002faf07f900000020405b40402080aeb2246d6000000000103030a",
     0x6a09, 0x7f90},
    {"tcp data", "02000000000b02000000000a0800450000464cb14000400669fdc0000201c0000202a0281f9048340f93e65a73aa8018003f92ad00000101080aeb2246e3750e6879474554202f20485454502f312e300d0a0d0a",
     0x69fd, 0x92ad},
};

TEST(Checksums, AgreeWithFramesTheLinuxKernelSent) {
    for (const auto& k : kKernelFrames) {
        SCOPED_TRACE(k.what);
        std::vector<uint8_t> f = from_hex(k.hex);
        auto* ip = reinterpret_cast<Ipv4Hdr*>(f.data() + sizeof(EtherHdr));
        const size_t l4_len = ip->total_length.host() - ip->header_length();
        uint8_t* l4 = f.data() + sizeof(EtherHdr) + ip->header_length();
        const size_t at = ip->protocol == ipproto::kTcp   ? test::ref::kTcpChecksumAt
                          : ip->protocol == ipproto::kUdp ? test::ref::kUdpChecksumAt
                                                          : test::ref::kIcmpChecksumAt;
        ASSERT_EQ(test::ref::load_be16(l4 + at), k.l4_checksum) << "the vector itself";
        // As received, everything verifies (sums to zero).
        EXPECT_EQ(internet_checksum(ip, ip->header_length()), 0);
        EXPECT_EQ(test::ref::ipv4_checksum_errors(f.data() + sizeof(EtherHdr), f.size() - sizeof(EtherHdr)), "");
        // Recomputed with the checksum fields cleared, both implementations give the kernel's.
        ip->checksum = 0;
        EXPECT_EQ(Be16{internet_checksum(ip, ip->header_length())}.host(), k.ip_checksum);
        EXPECT_EQ(test::ref::checksum(f.data() + sizeof(EtherHdr), ip->header_length()), k.ip_checksum);
        test::ref::store_be16(l4 + at, 0);
        const uint16_t product = ip->protocol == ipproto::kIcmp ? internet_checksum(l4, l4_len)
                                                                : l4_checksum_ipv4(*ip, l4, l4_len);
        EXPECT_EQ(Be16{product}.host(), k.l4_checksum);
        test::ref::fill_l4_checksum(f.data() + sizeof(EtherHdr), l4, l4_len, ip->protocol);
        EXPECT_EQ(test::ref::load_be16(l4 + at), k.l4_checksum);
    }
}

}  // namespace
}  // namespace calyx
