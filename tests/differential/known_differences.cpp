#include "known_differences.hpp"

#include <array>

#include "calyx/headers.hpp"

namespace calyx::difftest {
namespace {

const Bytes& ip_of(const Difference& d) { return d.scenario.packets[d.at].ip; }

bool icmp_type_is(const Bytes& ip, std::initializer_list<uint8_t> types) {
    if (ip.size() < 28 || ip[9] != ipproto::kIcmp) return false;
    for (uint8_t t : types)
        if (ip[20] == t) return true;
    return false;
}

// An instance's ICMP redirect or source quench, about a connection Linux tracks: Linux passes
// it as related, calyx never forwards either.
bool redirect_or_quench(const Difference& d) {
    return d.linux_passed && !d.calyx_passed && d.calyx_reason == DropReason::icmp_redirect_or_quench &&
           icmp_type_is(ip_of(d), {icmp::kRedirect, icmp::kSourceQuench});
}

// An ICMP error whose quote holds the whole IP header of a TCP or UDP datagram but only 4 to
// 7 bytes after it: Linux needs the ports (4 bytes), calyx RFC 792's 8 bytes.
bool short_quote(const Difference& d) {
    const Bytes& ip = ip_of(d);
    if (!d.linux_passed || d.calyx_passed || d.calyx_reason != DropReason::ct_icmp_error_unmatched ||
        !icmp_type_is(ip, {icmp::kDestUnreachable, icmp::kTimeExceeded, icmp::kParameterProblem}))
        return false;
    constexpr size_t kInner = 28;  // outer IPv4 header without options, ICMP header
    if (ip.size() < kInner + 20) return false;
    const size_t ihl = size_t{ip[kInner] & 0x0fu} * 4;
    const uint8_t proto = ip[kInner + 9];
    const size_t after_header = ip.size() - kInner - std::min(ip.size() - kInner, ihl);
    return ihl >= 20 && ip.size() >= kInner + ihl && (proto == ipproto::kTcp || proto == ipproto::kUdp) &&
           after_header >= 4 && after_header < 8;
}

constexpr std::array<KnownDifference, 2> kClasses{{
    {"ICMP redirect or source quench from an instance", redirect_or_quench},
    {"ICMP error quoting fewer than 8 bytes of a TCP or UDP header", short_quote},
}};

}  // namespace

std::span<const KnownDifference> known_differences() { return kClasses; }

std::optional<std::string_view> explain(const Difference& d) {
    for (const auto& c : kClasses)
        if (c.explains(d)) return c.name;
    return std::nullopt;
}

}  // namespace calyx::difftest
