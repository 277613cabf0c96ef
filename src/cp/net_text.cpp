// Text forms of addresses: strict parsers (config input) and formatters.
#include <charconv>

#include <fmt/format.h>

#include "calyx/kernel_route.hpp"
#include "calyx/net.hpp"

namespace calyx {
namespace {

// A decimal number in [0, max] with no sign, no leading zeros (except "0"), and nothing else.
std::optional<uint32_t> parse_decimal(std::string_view s, uint32_t max) {
    if (s.empty() || s.size() > 10 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
    uint32_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end != s.data() + s.size() || v > max) return std::nullopt;
    return v;
}

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

std::optional<MacAddr> MacAddr::parse(std::string_view text) {
    // Exactly "xx:xx:xx:xx:xx:xx".
    if (text.size() != 17) return std::nullopt;
    MacAddr mac;
    for (size_t i = 0; i < 6; ++i) {
        const int hi = hex_digit(text[i * 3]);
        const int lo = hex_digit(text[i * 3 + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        if (i < 5 && text[i * 3 + 2] != ':') return std::nullopt;
        mac.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    return mac;
}

std::string MacAddr::to_string() const {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", bytes[0], bytes[1], bytes[2],
                       bytes[3], bytes[4], bytes[5]);
}

std::optional<Ipv4Addr> Ipv4Addr::parse(std::string_view text) {
    uint32_t value = 0;
    for (int i = 0; i < 4; ++i) {
        const size_t dot = text.find('.');
        const bool last = i == 3;
        if (last != (dot == std::string_view::npos)) return std::nullopt;
        const auto octet = parse_decimal(last ? text : text.substr(0, dot), 255);
        if (!octet) return std::nullopt;
        value = value << 8 | *octet;
        if (!last) text.remove_prefix(dot + 1);
    }
    return Ipv4Addr{value};
}

std::string Ipv4Addr::to_string() const {
    return fmt::format("{}.{}.{}.{}", value >> 24, (value >> 16) & 0xff, (value >> 8) & 0xff,
                       value & 0xff);
}

std::optional<Ipv4Prefix> Ipv4Prefix::parse(std::string_view text, bool allow_host_bits) {
    const size_t slash = text.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    const auto addr = Ipv4Addr::parse(text.substr(0, slash));
    const auto length = parse_decimal(text.substr(slash + 1), 32);
    if (!addr || !length) return std::nullopt;
    const uint32_t mask = mask_of(static_cast<uint8_t>(*length));
    if (!allow_host_bits && (addr->value & ~mask) != 0) return std::nullopt;
    return Ipv4Prefix{Ipv4Addr{addr->value & mask}, static_cast<uint8_t>(*length)};
}

std::string Ipv4Prefix::to_string() const { return fmt::format("{}/{}", addr.to_string(), length); }

}  // namespace calyx

namespace calyx {

std::string KernelRoute::to_string() const {
    std::string text;
    switch (type) {
        case kUnicast: break;
        case kBlackhole: text = "blackhole "; break;
        default: text = fmt::format("type {} ", type);
    }
    text += prefix.to_string();
    for (size_t i = 0; i < gateways.size(); ++i)
        text += fmt::format("{}{}", i == 0 ? " via " : ", ", gateways[i].to_string());
    if (gateways.empty() && oif) text += fmt::format(" dev #{}", oif);
    text += fmt::format(" proto {} table {}", protocol, table);
    if (priority) text += fmt::format(" metric {}", priority);
    return text;
}

}  // namespace calyx
