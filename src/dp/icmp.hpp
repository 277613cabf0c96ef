// ICMP that calyx itself sends, built in place in the frame that caused it (no allocation).
#pragma once

#include <cstdint>

#include "calyx/net.hpp"
#include "dp/batch.hpp"

namespace calyx::dp {

// Turns an ICMP echo request addressed to calyx into its echo reply: addresses swapped,
// TTL reset, checksums updated. The frame goes back where it came from.
void make_echo_reply(Frame& f, const PacketMeta& m, MacAddr gateway_mac) noexcept;

// Whether RFC 1812 (4.3.2.7) lets a router send an ICMP error about this packet: not about
// an ICMP error, a non-first fragment, or a packet from 0.0.0.0, a broadcast or multicast
// source, or to a multicast or broadcast destination.
bool may_send_icmp_error(const Frame& f, const PacketMeta& m) noexcept;

// Rewrites the packet into an ICMP error from `from` to its sender, quoting as much of the
// original datagram as fits in 576 bytes (RFC 1812 4.3.2.3). `mtu` is the next-hop MTU for
// fragmentation needed, 0 otherwise. Returns false (frame unchanged) if the buffer has no room.
bool make_icmp_error(Frame& f, const PacketMeta& m, uint8_t type, uint8_t code, Ipv4Addr from,
                     MacAddr gateway_mac, uint16_t mtu = 0) noexcept;

}  // namespace calyx::dp
