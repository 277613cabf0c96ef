// Builds test frames field by field, so tests read like the packets they send:
//   auto f = FrameBuilder().eth(vm_mac, gw_mac).ipv4(vm_ip, other_ip).icmp_echo(7, 1).build();
// and a TestFrame that owns a buffer with head- and tailroom, like an mbuf.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <vector>

#include "calyx/headers.hpp"
#include "calyx/net.hpp"
#include "dp/frame.hpp"
#include "support/reference_checksum.hpp"

namespace calyx::test {

// A frame in an mbuf-sized buffer with 128 bytes of headroom.
struct TestFrame {
    static constexpr uint32_t kHeadroom = 128;
    std::array<uint8_t, 2176> storage{};
    dp::Frame frame;

    explicit TestFrame(const std::vector<uint8_t>& bytes) {
        frame.buf = storage.data();
        frame.buf_len = storage.size();
        frame.off = kHeadroom;
        frame.len = static_cast<uint32_t>(bytes.size());
        std::memcpy(frame.data(), bytes.data(), bytes.size());
    }
    TestFrame(const TestFrame&) = delete;
    TestFrame& operator=(const TestFrame&) = delete;

    std::vector<uint8_t> bytes() const { return {frame.data(), frame.data() + frame.len}; }
    template <typename T>
    T* at(size_t offset) {
        return header_at<T>(frame.data(), frame.len, offset);
    }
};

class FrameBuilder {
public:
    FrameBuilder& eth(MacAddr src, MacAddr dst, uint16_t type = ethertype::kIpv4) {
        EtherHdr h{dst, src, Be16::from_host(type)};
        put(h);
        return *this;
    }
    FrameBuilder& arp(uint16_t oper, MacAddr sha, Ipv4Addr spa, MacAddr tha, Ipv4Addr tpa) {
        ArpHdr a{Be16::from_host(1), Be16::from_host(ethertype::kIpv4), 6, 4,
                 Be16::from_host(oper), sha, spa.to_be(), tha, tpa.to_be()};
        put(a);
        return *this;
    }
    // IPv4 header; total length and checksum are filled in by build().
    FrameBuilder& ipv4(Ipv4Addr src, Ipv4Addr dst, uint8_t proto = ipproto::kIcmp,
                       uint8_t ttl = 64, uint16_t frag = Ipv4Hdr::kDontFragment) {
        ip_offset_ = bytes_.size();
        Ipv4Hdr h{};
        h.version_ihl = 0x45;
        h.id = Be16::from_host(0x1234);
        h.frag = Be16::from_host(frag);
        h.ttl = ttl;
        h.protocol = proto;
        h.src = src.to_be();
        h.dst = dst.to_be();
        put(h);
        return *this;
    }
    FrameBuilder& icmp_echo(uint16_t id, uint16_t seq, size_t payload = 32,
                            uint8_t type = icmp::kEchoRequest) {
        l4_offset_ = bytes_.size();
        l4_proto_ = ipproto::kIcmp;
        IcmpHdr h{type, 0, 0, Be16::from_host(id), Be16::from_host(seq)};
        put(h);
        for (size_t i = 0; i < payload; ++i) bytes_.push_back(static_cast<uint8_t>(i));
        return *this;
    }
    FrameBuilder& udp(uint16_t sport, uint16_t dport, const std::vector<uint8_t>& payload = {}) {
        l4_offset_ = bytes_.size();
        l4_proto_ = ipproto::kUdp;
        UdpHdr h{Be16::from_host(sport), Be16::from_host(dport), {}, 0};
        put(h);
        bytes_.insert(bytes_.end(), payload.begin(), payload.end());
        return *this;
    }
    FrameBuilder& tcp(uint16_t sport, uint16_t dport, uint8_t flags, uint32_t seq = 1000,
                      uint32_t ack = 0, const std::vector<uint8_t>& payload = {}) {
        l4_offset_ = bytes_.size();
        l4_proto_ = ipproto::kTcp;
        TcpHdr h{};
        h.src_port = Be16::from_host(sport);
        h.dst_port = Be16::from_host(dport);
        h.seq = Be32::from_host(seq);
        h.ack = Be32::from_host(ack);
        h.data_offset = 5 << 4;
        h.flags = flags;
        h.window = Be16::from_host(65535);
        put(h);
        bytes_.insert(bytes_.end(), payload.begin(), payload.end());
        return *this;
    }
    FrameBuilder& raw(const std::vector<uint8_t>& b) {
        bytes_.insert(bytes_.end(), b.begin(), b.end());
        return *this;
    }

    // Fills IPv4 total length, UDP length and the checksums (IPv4, ICMP, UDP, TCP) unless
    // told not to. The checksums come from the reference implementation
    // (support/reference_checksum.hpp), never from the product's own.
    std::vector<uint8_t> build(bool fix_lengths_and_checksums = true) const {
        std::vector<uint8_t> out = bytes_;
        if (!fix_lengths_and_checksums || ip_offset_ == kUnset) return out;
        uint8_t* ip = out.data() + ip_offset_;
        ref::store_be16(ip + 2, static_cast<uint16_t>(out.size() - ip_offset_));
        ref::fill_ipv4_checksum(ip, sizeof(Ipv4Hdr));
        if (l4_offset_ == kUnset) return out;
        uint8_t* l4 = out.data() + l4_offset_;
        const size_t l4_len = out.size() - l4_offset_;
        if (l4_proto_ == ipproto::kUdp) ref::store_be16(l4 + 4, static_cast<uint16_t>(l4_len));
        ref::fill_l4_checksum(ip, l4, l4_len, l4_proto_);
        return out;
    }

private:
    static constexpr size_t kUnset = ~size_t{0};
    template <typename T>
    void put(const T& h) {
        const auto* p = reinterpret_cast<const uint8_t*>(&h);
        bytes_.insert(bytes_.end(), p, p + sizeof(T));
    }
    std::vector<uint8_t> bytes_;
    size_t ip_offset_ = kUnset;
    size_t l4_offset_ = kUnset;
    uint8_t l4_proto_ = 0;
};

}  // namespace calyx::test
