// Addresses and checksums: the arithmetic every stage relies on.
#include <gtest/gtest.h>

#include <random>

#include "calyx/headers.hpp"
#include "calyx/net.hpp"

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

TEST(Checksums, OddLengthPadsWithZero) {
    const uint8_t odd[3] = {0x01, 0x02, 0x03};
    const uint8_t even[4] = {0x01, 0x02, 0x03, 0x00};
    EXPECT_EQ(internet_checksum(odd, 3), internet_checksum(even, 4));
}

}  // namespace
}  // namespace calyx
