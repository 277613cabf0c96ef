// The security-group rule compiler: compiled tables answer exactly what walking the rules in
// order would, for any packet.
#include <gtest/gtest.h>

#include <chrono>
#include <random>

#include "calyx/headers.hpp"
#include "dp/rules.hpp"

namespace calyx::dp {
namespace {

Ipv4Prefix prefix(const char* text) { return *Ipv4Prefix::parse(text); }
Ipv4Addr addr(const char* text) { return *Ipv4Addr::parse(text); }

RuleSpec rule(uint32_t id, std::optional<uint8_t> proto, uint16_t lo, uint16_t hi,
              std::vector<Ipv4Prefix> remotes) {
    return RuleSpec{{0, id}, proto, lo, hi, std::move(remotes)};
}

// What the rules mean, walked one by one: the reference the compiled table must agree with.
uint32_t reference_match(const std::vector<RuleSpec>& rules, uint8_t proto, uint16_t key, Ipv4Addr remote) {
    for (uint32_t i = 0; i < rules.size(); ++i) {
        const RuleSpec& r = rules[i];
        if (r.protocol && *r.protocol != proto) continue;
        const bool keyed = r.protocol && (*r.protocol == ipproto::kTcp || *r.protocol == ipproto::kUdp ||
                                          *r.protocol == ipproto::kIcmp);
        if (keyed && (key < r.key_min || key > r.key_max)) continue;
        for (const auto& p : r.remotes)
            if (p.contains(remote)) return i;
    }
    return kNoRule;
}

struct Probe {
    const char* what;
    uint8_t proto;
    uint16_t key;
    const char* remote;
    uint32_t expected;
};

TEST(RuleTable, IssueExampleRulesMatchAsWritten) {
    // The `web` group of the issue: https from anywhere, 8000-8080 from frontends (two
    // members), ping from 10/8, and an any-protocol rule.
    const std::vector<RuleSpec> rules = {
        rule(0, ipproto::kTcp, 443, 443, {prefix("0.0.0.0/0")}),
        rule(1, ipproto::kTcp, 8000, 8080, {prefix("10.10.0.5/32"), prefix("10.10.0.6/32")}),
        rule(2, ipproto::kIcmp, 8 << 8, (8 << 8) | 0xff, {prefix("10.0.0.0/8")}),
        rule(3, std::nullopt, 0, 0xffff, {prefix("192.0.2.0/24")}),
    };
    const RuleTable t(rules);
    const Probe probes[] = {
        {"https from anywhere", ipproto::kTcp, 443, "198.51.100.7", 0},
        {"http is not open", ipproto::kTcp, 80, "198.51.100.7", kNoRule},
        {"udp/443 is not tcp/443", ipproto::kUdp, 443, "198.51.100.7", kNoRule},
        {"range start from a frontend", ipproto::kTcp, 8000, "10.10.0.5", 1},
        {"range end from a frontend", ipproto::kTcp, 8080, "10.10.0.6", 1},
        {"just past the range", ipproto::kTcp, 8081, "10.10.0.5", kNoRule},
        {"range from a non-member", ipproto::kTcp, 8040, "10.10.0.7", kNoRule},
        {"echo request from 10/8", ipproto::kIcmp, 8 << 8, "10.200.1.1", 2},
        {"echo request from outside 10/8", ipproto::kIcmp, 8 << 8, "11.0.0.1", kNoRule},
        {"timestamp request is another type", ipproto::kIcmp, 13 << 8, "10.0.0.1", kNoRule},
        {"any protocol covers GRE", 47, 0, "192.0.2.9", 3},
        {"any protocol covers tcp/22", ipproto::kTcp, 22, "192.0.2.9", 3},
        {"first matching rule is reported", ipproto::kTcp, 443, "192.0.2.9", 0},
    };
    for (const auto& p : probes) {
        EXPECT_EQ(t.match(p.proto, p.key, addr(p.remote)), p.expected) << p.what;
        EXPECT_EQ(reference_match(rules, p.proto, p.key, addr(p.remote)), p.expected) << p.what;
    }
}

TEST(RuleTable, NoRulesAllowNothing) {
    const RuleTable t(std::vector<RuleSpec>{});
    EXPECT_EQ(t.match(ipproto::kTcp, 80, addr("10.0.0.1")), kNoRule);
    EXPECT_EQ(RuleTable().match(ipproto::kUdp, 53, addr("10.0.0.1")), kNoRule);
}

TEST(RuleTable, EmptyRemoteGroupMatchesNothing) {
    const RuleTable t({rule(0, ipproto::kTcp, 22, 22, {})});
    EXPECT_EQ(t.match(ipproto::kTcp, 22, addr("10.0.0.1")), kNoRule);
}

TEST(RuleTable, NestedPrefixesReportTheEarliestRule) {
    const std::vector<RuleSpec> rules = {
        rule(0, ipproto::kUdp, 53, 53, {prefix("10.1.2.0/24")}),
        rule(1, ipproto::kUdp, 0, 0xffff, {prefix("10.0.0.0/8")}),
        rule(2, ipproto::kUdp, 53, 53, {prefix("10.1.2.3/32")}),
    };
    const RuleTable t(rules);
    EXPECT_EQ(t.match(ipproto::kUdp, 53, addr("10.1.2.3")), 0u);
    EXPECT_EQ(t.match(ipproto::kUdp, 53, addr("10.1.3.3")), 1u);
    EXPECT_EQ(t.match(ipproto::kUdp, 54, addr("10.1.2.3")), 1u);
    EXPECT_EQ(t.match(ipproto::kUdp, 53, addr("11.1.2.3")), kNoRule);
}

TEST(RuleTable, WholeAddressSpaceAndItsEdges) {
    const RuleTable t({rule(0, ipproto::kTcp, 0, 0xffff, {prefix("0.0.0.0/0")}),
                       rule(1, ipproto::kUdp, 1, 65535, {prefix("255.255.255.255/32"), prefix("0.0.0.0/32")})});
    EXPECT_EQ(t.match(ipproto::kTcp, 0, addr("0.0.0.0")), 0u);
    EXPECT_EQ(t.match(ipproto::kTcp, 65535, addr("255.255.255.255")), 0u);
    EXPECT_EQ(t.match(ipproto::kUdp, 65535, addr("255.255.255.255")), 1u);
    EXPECT_EQ(t.match(ipproto::kUdp, 0, addr("255.255.255.255")), kNoRule);
    EXPECT_EQ(t.match(ipproto::kUdp, 9, addr("0.0.0.0")), 1u);
    EXPECT_EQ(t.match(ipproto::kUdp, 9, addr("0.0.0.1")), kNoRule);
}

// Random rule sets against the rule-by-rule reference.
TEST(RuleTable, AgreesWithRuleByRuleEvaluationOnRandomRulesAndPackets) {
    std::mt19937 rng(2024);
    for (int round = 0; round < 30; ++round) {
        std::vector<RuleSpec> rules;
        const int n = 1 + static_cast<int>(rng() % 60);
        for (int i = 0; i < n; ++i) {
            const uint8_t protos[] = {ipproto::kTcp, ipproto::kUdp, ipproto::kIcmp, 47};
            std::optional<uint8_t> proto;
            if (rng() % 5) proto = protos[rng() % 4];
            uint16_t lo = static_cast<uint16_t>(rng() % 2000), hi = static_cast<uint16_t>(lo + rng() % 300);
            std::vector<Ipv4Prefix> remotes;
            for (int r = 0, nr = static_cast<int>(rng() % 4); r < nr; ++r) {
                const uint8_t len = static_cast<uint8_t>(rng() % 33);
                remotes.push_back({Ipv4Addr{static_cast<uint32_t>(0x0a000000u | (rng() & 0x00ffffffu)) &
                                            Ipv4Prefix::mask_of(len)},
                                   len});
            }
            rules.push_back(rule(static_cast<uint32_t>(i), proto, lo, hi, remotes));
        }
        const RuleTable t(rules);
        for (int probe = 0; probe < 2000; ++probe) {
            const uint8_t protos[] = {ipproto::kTcp, ipproto::kUdp, ipproto::kIcmp, 47, 50};
            const uint8_t proto = protos[rng() % 5];
            const uint16_t key = static_cast<uint16_t>(rng() % 2400);
            const Ipv4Addr remote{static_cast<uint32_t>(0x0a000000u | (rng() & 0x00ffffffu))};
            ASSERT_EQ(t.match(proto, key, remote), reference_match(rules, proto, key, remote))
                << "round " << round << " probe " << probe;
        }
    }
}

TEST(RuleTable, ThousandsOfRulesCompileQuicklyAndMatchInLogarithmicTime) {
    std::vector<RuleSpec> rules;
    for (uint32_t i = 0; i < 5000; ++i)
        rules.push_back(rule(i, ipproto::kTcp, static_cast<uint16_t>(1000 + i * 7),
                             static_cast<uint16_t>(1000 + i * 7 + 3),
                             {Ipv4Prefix{Ipv4Addr{0x0a000000u | (i << 8)}, 24}}));
    const auto t0 = std::chrono::steady_clock::now();
    const RuleTable t(rules);
    const auto compile = std::chrono::steady_clock::now() - t0;
    EXPECT_LT(compile, std::chrono::seconds(2));
    EXPECT_EQ(t.match(ipproto::kTcp, 1000 + 4321 * 7 + 2, Ipv4Addr{0x0a000000u | (4321u << 8) | 9}), 4321u);
    EXPECT_EQ(t.match(ipproto::kTcp, 1000 + 4321 * 7 + 2, Ipv4Addr{0x0a000000u | (4322u << 8) | 9}), kNoRule);
    const auto t1 = std::chrono::steady_clock::now();
    uint32_t hits = 0;
    for (uint32_t i = 0; i < 100000; ++i)
        hits += t.match(ipproto::kTcp, static_cast<uint16_t>(1000 + (i % 5000) * 7), Ipv4Addr{0x0a000000u | ((i % 5000) << 8)}) != kNoRule;
    const auto per_match = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t1) / 100000;
    EXPECT_EQ(hits, 100000u);
    std::printf("5000 rules: compiled in %.1f ms, %.0f ns per match\n",
                std::chrono::duration<double, std::milli>(compile).count(), per_match.count());
}

}  // namespace
}  // namespace calyx::dp
