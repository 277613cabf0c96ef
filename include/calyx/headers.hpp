// Wire formats of the headers calyx reads and writes, as plain packed structs with typed
// big-endian fields. Read them from a byte buffer with `header_at<T>()`, which checks bounds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "calyx/net.hpp"

namespace calyx {

namespace ethertype {
constexpr uint16_t kIpv4 = 0x0800;
constexpr uint16_t kArp = 0x0806;
constexpr uint16_t kVlan = 0x8100;
constexpr uint16_t kIpv6 = 0x86dd;
}  // namespace ethertype

namespace ipproto {
constexpr uint8_t kIcmp = 1;
constexpr uint8_t kTcp = 6;
constexpr uint8_t kUdp = 17;
}  // namespace ipproto

#pragma pack(push, 1)
struct EtherHdr {
    MacAddr dst;
    MacAddr src;
    Be16 type;
};

struct ArpHdr {
    Be16 htype;  // 1: Ethernet
    Be16 ptype;  // 0x0800: IPv4
    uint8_t hlen;
    uint8_t plen;
    Be16 oper;  // 1 request, 2 reply
    MacAddr sha;
    Be32 spa;
    MacAddr tha;
    Be32 tpa;
};

struct Ipv4Hdr {
    uint8_t version_ihl;
    uint8_t tos;
    Be16 total_length;
    Be16 id;
    Be16 frag;  // flags (3 bits) and fragment offset (13 bits, 8-byte units)
    uint8_t ttl;
    uint8_t protocol;
    uint16_t checksum;  // one's complement over the header; byte order independent
    Be32 src;
    Be32 dst;

    static constexpr uint16_t kDontFragment = 0x4000;
    static constexpr uint16_t kMoreFragments = 0x2000;
    static constexpr uint16_t kOffsetMask = 0x1fff;

    size_t header_length() const { return size_t{version_ihl & 0x0fu} * 4; }
    uint8_t version() const { return version_ihl >> 4; }
    bool is_fragment() const { return (frag.host() & (kMoreFragments | kOffsetMask)) != 0; }
    bool is_first_fragment() const { return (frag.host() & kOffsetMask) == 0; }
};

struct UdpHdr {
    Be16 src_port;
    Be16 dst_port;
    Be16 length;
    uint16_t checksum;
};

struct TcpHdr {
    Be16 src_port;
    Be16 dst_port;
    Be32 seq;
    Be32 ack;
    uint8_t data_offset;  // high nibble: header length in 32-bit words
    uint8_t flags;
    Be16 window;
    uint16_t checksum;
    Be16 urgent;

    static constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10,
                             kUrg = 0x20;
    size_t header_length() const { return size_t{static_cast<uint8_t>(data_offset >> 4)} * 4; }
};

struct IcmpHdr {
    uint8_t type;
    uint8_t code;
    uint16_t checksum;
    Be16 id;   // echo identifier; "unused" or next-hop MTU high half in errors
    Be16 seq;  // echo sequence; next-hop MTU for fragmentation needed
};
#pragma pack(pop)

static_assert(sizeof(EtherHdr) == 14);
static_assert(sizeof(ArpHdr) == 28);
static_assert(sizeof(Ipv4Hdr) == 20);
static_assert(sizeof(UdpHdr) == 8);
static_assert(sizeof(TcpHdr) == 20);
static_assert(sizeof(IcmpHdr) == 8);

namespace icmp {
constexpr uint8_t kEchoReply = 0;
constexpr uint8_t kDestUnreachable = 3;
constexpr uint8_t kSourceQuench = 4;  // deprecated (RFC 6633)
constexpr uint8_t kRedirect = 5;
constexpr uint8_t kEchoRequest = 8;
constexpr uint8_t kTimeExceeded = 11;
constexpr uint8_t kParameterProblem = 12;
// Destination unreachable codes
constexpr uint8_t kNetUnreachable = 0;
constexpr uint8_t kHostUnreachable = 1;
constexpr uint8_t kProtocolUnreachable = 2;
constexpr uint8_t kPortUnreachable = 3;
constexpr uint8_t kFragmentationNeeded = 4;
constexpr uint8_t kAdminProhibited = 13;
}  // namespace icmp

// Pointer to a header of type T at `offset` in [data, data+len), or nullptr if it does not fit.
// Packed structs have alignment 1, so any offset is valid.
template <typename T>
inline T* header_at(uint8_t* data, size_t len, size_t offset) {
    static_assert(alignof(T) == 1, "wire headers must be packed");
    if (offset > len || len - offset < sizeof(T)) return nullptr;
    return reinterpret_cast<T*>(data + offset);
}

// RFC 1071 one's complement sum of `len` bytes, folded to 16 bits, not complemented.
// Computed on the bytes as stored, so the result is in network byte order in memory.
inline uint32_t checksum_partial(const void* data, size_t len, uint32_t sum = 0) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (len >= 2) {
        uint16_t w;
        std::memcpy(&w, p, 2);
        sum += w;
        p += 2;
        len -= 2;
    }
    if (len) {
        uint16_t w = 0;
        std::memcpy(&w, p, 1);
        sum += w;
    }
    return sum;
}

inline uint16_t checksum_fold(uint32_t sum) {
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum & 0xffff);
}

inline uint16_t internet_checksum(const void* data, size_t len) {
    return checksum_fold(checksum_partial(data, len));
}

// Incremental update (RFC 1624, eqn. 3) of a stored checksum when a 16-bit word that it
// covers changes from old_word to new_word (both as stored in memory).
inline uint16_t checksum_update16(uint16_t checksum, uint16_t old_word, uint16_t new_word) {
    uint32_t sum = static_cast<uint16_t>(~checksum) + static_cast<uint16_t>(~old_word) + new_word;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return static_cast<uint16_t>(~sum);
}

// Several covered words changing at once (RFC 1624, eqn. 3 summed over them): each change adds
// ~old + new, and apply() folds the total into a checksum once. One fold for a NAT rewrite's
// three or four words instead of a dependent chain of them, one per word.
class ChecksumDelta {
public:
    void change16(uint16_t old_word, uint16_t new_word) noexcept {
        sum_ += static_cast<uint16_t>(~old_word) + uint32_t{new_word};
    }
    void change32(uint32_t old_word, uint32_t new_word) noexcept {
        const uint32_t inverted = ~old_word;
        sum_ += (inverted & 0xffff) + (inverted >> 16) + (new_word & 0xffff) + (new_word >> 16);
    }
    uint16_t apply(uint16_t checksum) const noexcept {
        uint32_t sum = static_cast<uint16_t>(~checksum) + sum_;  // 16 words at most: no overflow
        sum = (sum & 0xffff) + (sum >> 16);
        sum = (sum & 0xffff) + (sum >> 16);
        return static_cast<uint16_t>(~sum);
    }

private:
    uint32_t sum_ = 0;
};

inline uint16_t checksum_update32(uint16_t checksum, uint32_t old_word, uint32_t new_word) {
    ChecksumDelta d;
    d.change32(old_word, new_word);
    return d.apply(checksum);
}

// Checksum of a UDP or TCP segment with the IPv4 pseudo-header.
inline uint16_t l4_checksum_ipv4(const Ipv4Hdr& ip, const void* l4, size_t l4_len) {
    uint32_t sum = 0;
    sum = checksum_partial(&ip.src, 4, sum);
    sum = checksum_partial(&ip.dst, 4, sum);
    const uint16_t proto_be = Be16::from_host(ip.protocol).raw;
    const uint16_t len_be = Be16::from_host(static_cast<uint16_t>(l4_len)).raw;
    sum += proto_be;
    sum += len_be;
    sum = checksum_partial(l4, l4_len, sum);
    return checksum_fold(sum);
}

}  // namespace calyx
