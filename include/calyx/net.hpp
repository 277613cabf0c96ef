// Address types shared by the control and data planes.
//
// Addresses are kept in host byte order in memory that the program computes with
// (Ipv4Addr), and as typed big-endian fields (Be16, Be32) inside packet headers, so a
// missing byte swap is a type error rather than a wrong packet.
#pragma once

#include <array>
#include <bit>
#include <compare>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace calyx {

constexpr uint16_t byteswap16(uint16_t v) { return static_cast<uint16_t>((v << 8) | (v >> 8)); }
constexpr uint32_t byteswap32(uint32_t v) {
    return (v << 24) | ((v << 8) & 0x00ff0000u) | ((v >> 8) & 0x0000ff00u) | (v >> 24);
}
static_assert(std::endian::native == std::endian::little, "calyx targets little-endian CPUs");

// A 16-bit field stored in network byte order. Packed (alignment 1) because header fields
// sit at any offset in a frame; member calls on a misaligned object would be undefined.
struct [[gnu::packed]] Be16 {
    uint16_t raw;
    static constexpr Be16 from_host(uint16_t v) { return Be16{byteswap16(v)}; }
    constexpr uint16_t host() const { return byteswap16(raw); }
    friend constexpr bool operator==(Be16, Be16) = default;
};

// A 32-bit field stored in network byte order, alignment 1 like Be16.
struct [[gnu::packed]] Be32 {
    uint32_t raw;
    static constexpr Be32 from_host(uint32_t v) { return Be32{byteswap32(v)}; }
    constexpr uint32_t host() const { return byteswap32(raw); }
    friend constexpr bool operator==(Be32, Be32) = default;
};

struct MacAddr {
    std::array<uint8_t, 6> bytes{};

    static constexpr MacAddr broadcast() { return MacAddr{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}; }
    constexpr bool is_broadcast() const { return *this == broadcast(); }
    constexpr bool is_multicast() const { return (bytes[0] & 1) != 0; }
    constexpr bool is_zero() const { return *this == MacAddr{}; }
    // "52:54:00:00:01:01"; nullopt on anything else.
    static std::optional<MacAddr> parse(std::string_view text);
    std::string to_string() const;
    friend constexpr auto operator<=>(const MacAddr&, const MacAddr&) = default;
    // Per packet in classify: the defaulted one compiles to a memcmp() call through the PLT.
    friend constexpr bool operator==(const MacAddr& a, const MacAddr& b) {
        if consteval {
            return a.bytes == b.bytes;
        } else {
            uint32_t a4, b4;
            uint16_t a2, b2;
            std::memcpy(&a4, a.bytes.data(), 4), std::memcpy(&a2, a.bytes.data() + 4, 2);
            std::memcpy(&b4, b.bytes.data(), 4), std::memcpy(&b2, b.bytes.data() + 4, 2);
            return ((a4 ^ b4) | (a2 ^ b2)) == 0;
        }
    }
};

struct Ipv4Addr {
    uint32_t value = 0;  // host byte order

    static constexpr Ipv4Addr from_octets(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
        return Ipv4Addr{(uint32_t{a} << 24) | (uint32_t{b} << 16) | (uint32_t{c} << 8) | d};
    }
    static constexpr Ipv4Addr from_be(Be32 v) { return Ipv4Addr{v.host()}; }
    constexpr Be32 to_be() const { return Be32::from_host(value); }
    constexpr bool is_zero() const { return value == 0; }
    constexpr bool is_limited_broadcast() const { return value == 0xffffffffu; }
    constexpr bool is_multicast() const { return (value >> 28) == 0xe; }
    // Dotted quad, strict: four decimal octets, no leading '+', no surrounding space.
    static std::optional<Ipv4Addr> parse(std::string_view text);
    std::string to_string() const;
    friend constexpr auto operator<=>(const Ipv4Addr&, const Ipv4Addr&) = default;
};

struct Ipv4Prefix {
    Ipv4Addr addr;  // host bits are zero
    uint8_t length = 0;

    static constexpr uint32_t mask_of(uint8_t length) {
        return length == 0 ? 0u : ~uint32_t{0} << (32 - length);
    }
    constexpr uint32_t mask() const { return mask_of(length); }
    constexpr bool contains(Ipv4Addr a) const { return (a.value & mask()) == addr.value; }
    constexpr bool contains(const Ipv4Prefix& p) const {
        return p.length >= length && contains(p.addr);
    }
    constexpr Ipv4Addr broadcast() const { return Ipv4Addr{addr.value | ~mask()}; }
    // "10.0.0.0/8". Host bits must be zero unless allow_host_bits (then they are cleared).
    static std::optional<Ipv4Prefix> parse(std::string_view text, bool allow_host_bits = false);
    std::string to_string() const;
    friend constexpr auto operator<=>(const Ipv4Prefix&, const Ipv4Prefix&) = default;
};

}  // namespace calyx
