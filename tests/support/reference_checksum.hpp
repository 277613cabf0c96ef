// Internet checksums computed the textbook way, independent of calyx's own
// (calyx/headers.hpp): RFC 1071's definition read literally, on big-endian 16-bit words, with
// the TCP/UDP pseudo-header built as the 12 bytes RFC 768 and RFC 793 draw. Tests build their
// frames with it and check what the data plane rewrote with it, so a wrong product checksum
// can never agree with itself. Free of gtest: the benchmarks use it too.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace calyx::test::ref {

// The 16-bit ones' complement sum of `len` bytes read as big-endian words (an odd last byte
// is padded with a zero byte), added to `initial`, end-around carries folded in.
inline uint16_t ones_complement_sum(const uint8_t* p, size_t len, uint16_t initial = 0) {
    uint64_t sum = initial;
    for (size_t i = 0; i < len; i += 2) {
        const uint64_t hi = p[i];
        const uint64_t lo = i + 1 < len ? p[i + 1] : 0;
        sum += hi << 8 | lo;
    }
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(sum);
}

// The checksum to store (host order: write it big-endian) over `len` bytes whose checksum
// field is zero.
inline uint16_t checksum(const uint8_t* p, size_t len, uint16_t initial = 0) {
    return static_cast<uint16_t>(~ones_complement_sum(p, len, initial));
}

// Sum of the IPv4 pseudo-header of a TCP or UDP segment of `l4_len` bytes: source and
// destination address (at offsets 12 and 16 of the IPv4 header), zero, protocol, length.
inline uint16_t pseudo_header_sum(const uint8_t* ip, size_t l4_len) {
    const uint8_t pseudo[12] = {ip[12], ip[13], ip[14], ip[15], ip[16], ip[17], ip[18], ip[19],
                                0,      ip[9],  static_cast<uint8_t>(l4_len >> 8),
                                static_cast<uint8_t>(l4_len)};
    return ones_complement_sum(pseudo, sizeof pseudo);
}

inline void store_be16(uint8_t* at, uint16_t v) {
    at[0] = static_cast<uint8_t>(v >> 8);
    at[1] = static_cast<uint8_t>(v);
}
inline uint16_t load_be16(const uint8_t* at) { return static_cast<uint16_t>(at[0] << 8 | at[1]); }

// Offsets of the checksum field in each L4 header.
inline constexpr size_t kTcpChecksumAt = 16, kUdpChecksumAt = 6, kIcmpChecksumAt = 2;

// Fills the IPv4 header checksum (header of `ihl` bytes at `ip`).
inline void fill_ipv4_checksum(uint8_t* ip, size_t ihl) {
    store_be16(ip + 10, 0);
    store_be16(ip + 10, checksum(ip, ihl));
}

// Fills the checksum of the L4 segment at `l4` (`l4_len` bytes) of the IPv4 header at `ip`:
// TCP and UDP with the pseudo-header (a UDP checksum that comes out 0 is sent as 0xffff),
// ICMP over the message alone; `proto` says which header is at `l4` (normally the IPv4
// header's protocol, ip[9]). Other protocols are left alone.
inline void fill_l4_checksum(const uint8_t* ip, uint8_t* l4, size_t l4_len, uint8_t proto) {
    switch (proto) {
        case 6:
            store_be16(l4 + kTcpChecksumAt, 0);
            store_be16(l4 + kTcpChecksumAt, checksum(l4, l4_len, pseudo_header_sum(ip, l4_len)));
            break;
        case 17: {
            store_be16(l4 + kUdpChecksumAt, 0);
            const uint16_t c = checksum(l4, l4_len, pseudo_header_sum(ip, l4_len));
            store_be16(l4 + kUdpChecksumAt, c == 0 ? 0xffff : c);
            break;
        }
        case 1:
            store_be16(l4 + kIcmpChecksumAt, 0);
            store_be16(l4 + kIcmpChecksumAt, checksum(l4, l4_len));
            break;
        default: break;
    }
}

// What is wrong with the checksums of the IPv4 packet at `ip` (`len` bytes available), or ""
// when the header checksum verifies and, for a whole (unfragmented) TCP, UDP or ICMP
// datagram, so does its L4 checksum (a UDP checksum of 0 means "none" and passes).
inline std::string ipv4_checksum_errors(const uint8_t* ip, size_t len) {
    if (len < 20 || ip[0] >> 4 != 4) return "not an IPv4 header";
    const size_t ihl = size_t{ip[0] & 0x0fu} * 4;
    const size_t total = load_be16(ip + 2);
    if (ihl < 20 || total < ihl || total > len) return "bad IPv4 lengths";
    std::string errors;
    if (ones_complement_sum(ip, ihl) != 0xffff) errors += "IPv4 header checksum; ";
    const bool fragment = (load_be16(ip + 6) & 0x3fff) != 0;
    if (fragment) return errors;
    const uint8_t* l4 = ip + ihl;
    const size_t l4_len = total - ihl;
    switch (ip[9]) {
        case 6:
            if (l4_len < 20 || ones_complement_sum(l4, l4_len, pseudo_header_sum(ip, l4_len)) != 0xffff)
                errors += "TCP checksum; ";
            break;
        case 17:
            if (l4_len < 8 || (load_be16(l4 + kUdpChecksumAt) != 0 &&
                               ones_complement_sum(l4, l4_len, pseudo_header_sum(ip, l4_len)) != 0xffff))
                errors += "UDP checksum; ";
            break;
        case 1:
            if (l4_len < 8 || ones_complement_sum(l4, l4_len) != 0xffff) errors += "ICMP checksum; ";
            break;
        default: break;
    }
    return errors;
}

}  // namespace calyx::test::ref
