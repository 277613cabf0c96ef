// What a frame should hold after the data plane rewrote it, and how it differs from what it
// does hold. Expected frames are derived from the frame before the rewrite (MACs, TTL,
// addresses and ports set field by field, checksums from support/reference_checksum.hpp), so
// a benchmark or test verifies rewritten bytes without trusting the product's arithmetic.
// Free of gtest: the benchmarks use it too.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "calyx/headers.hpp"
#include "calyx/net.hpp"
#include "support/reference_checksum.hpp"

namespace calyx::test {

// The offset of the L4 checksum field for `proto`, or 0 when it has none we check.
inline size_t l4_checksum_offset(uint8_t proto) {
    return proto == ipproto::kTcp   ? ref::kTcpChecksumAt
           : proto == ipproto::kUdp ? ref::kUdpChecksumAt
           : proto == ipproto::kIcmp ? ref::kIcmpChecksumAt
                                     : 0;
}

// "" if `actual` (an Ethernet frame of `len` bytes) equals `expected` in every byte but its
// outer IPv4 and L4 checksum fields, and those verify (reference sums); else what differs.
// The checksum fields are compared by verification because ones' complement arithmetic has
// two zeros: an incremental update and a recomputation may each write a different one.
inline std::string frame_mismatch(const uint8_t* actual, size_t len, const std::vector<uint8_t>& expected) {
    if (len != expected.size()) return fmt::format("length {} instead of {}", len, expected.size());
    constexpr size_t kL3 = sizeof(EtherHdr);
    std::vector<bool> skip(len, false);
    if (len >= kL3 + sizeof(Ipv4Hdr) && ref::load_be16(expected.data() + 12) == ethertype::kIpv4) {
        const std::string bad = ref::ipv4_checksum_errors(actual + kL3, len - kL3);
        if (!bad.empty()) return bad;
        skip[kL3 + 10] = skip[kL3 + 11] = true;
        const size_t ihl = size_t{expected[kL3] & 0x0fu} * 4;
        const size_t at = kL3 + ihl + l4_checksum_offset(expected[kL3 + 9]);
        const bool first_fragment = (ref::load_be16(expected.data() + kL3 + 6) & 0x1fff) == 0;
        if (first_fragment && l4_checksum_offset(expected[kL3 + 9]) != 0 && at + 2 <= len)
            skip[at] = skip[at + 1] = true;
    }
    for (size_t i = 0; i < len; ++i)
        if (!skip[i] && actual[i] != expected[i])
            return fmt::format("byte {} is {:#04x}, expected {:#04x}", i, actual[i], expected[i]);
    return {};
}

// Field setters on a frame's bytes (Ethernet + IPv4 + L4); each refills the checksums it
// affects with the reference implementation.
struct FrameEdit {
    std::vector<uint8_t> bytes;

    static constexpr size_t kL3 = sizeof(EtherHdr);
    size_t l4() const { return kL3 + size_t{bytes[kL3] & 0x0fu} * 4; }
    uint8_t proto() const { return bytes[kL3 + 9]; }
    bool whole_datagram() const { return (ref::load_be16(bytes.data() + kL3 + 6) & 0x3fff) == 0; }

    FrameEdit& macs(MacAddr src, MacAddr dst) {
        std::memcpy(bytes.data(), dst.bytes.data(), 6);
        std::memcpy(bytes.data() + 6, src.bytes.data(), 6);
        return *this;
    }
    // One router hop: TTL one less per hop.
    FrameEdit& hops(unsigned n) {
        bytes[kL3 + 8] = static_cast<uint8_t>(bytes[kL3 + 8] - n);
        return refill();
    }
    FrameEdit& source(Ipv4Addr addr) { return address(12, addr); }
    FrameEdit& destination(Ipv4Addr addr) { return address(16, addr); }
    // TCP/UDP source or destination port; the ICMP echo identifier for either.
    FrameEdit& source_port(uint16_t port) { return port_at(0, port); }
    FrameEdit& destination_port(uint16_t port) { return port_at(2, port); }

    // Both checksums recomputed (the L4 one only for a whole datagram: a fragment carries a
    // part of the datagram its checksum covers).
    FrameEdit& refill() {
        uint8_t* ip = bytes.data() + kL3;
        ref::fill_ipv4_checksum(ip, l4() - kL3);
        if (whole_datagram()) {
            const size_t total = ref::load_be16(ip + 2);
            ref::fill_l4_checksum(ip, bytes.data() + l4(), total - (l4() - kL3), proto());
        }
        return *this;
    }

private:
    FrameEdit& address(size_t at, Ipv4Addr addr) {
        const Be32 be = addr.to_be();
        std::memcpy(bytes.data() + kL3 + at, &be, 4);
        return refill();
    }
    FrameEdit& port_at(size_t at, uint16_t port) {
        const size_t where = proto() == ipproto::kIcmp ? l4() + 4 : l4() + at;
        ref::store_be16(bytes.data() + where, port);
        return refill();
    }
};

}  // namespace calyx::test
