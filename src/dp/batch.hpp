// A burst of frames travelling through the pipeline together, with per-packet metadata that
// stages read and write. Stages never call each other: each one walks the batch, looks at the
// packets whose verdict is still `pending`, and sets a verdict or leaves it for the next stage.
#pragma once

#include <cstdint>

#include "calyx/drop_reason.hpp"
#include "dp/frame.hpp"

namespace calyx::dp {

inline constexpr uint16_t kBurstSize = 32;
inline constexpr uint16_t kNoPort = 0xffff;

enum class Verdict : uint8_t {
    pending,   // no stage has decided yet
    drop,      // counted under `reason`
    forward,   // routed: send out of `out_port`
    reply,     // rewritten into a reply: send back out of `in_port`
    consumed,  // handled by calyx itself, nothing to send (e.g. DHCP RELEASE)
};

// What the NAT output step does to a packet the policy stage let through.
enum class NatAction : uint8_t {
    none,
    snat,            // source becomes (nat_addr, nat_port): first and later packets going out
    snat_fragment,   // a later fragment going out: only its source address becomes nat_addr
    icmp_error_out,  // the instance's ICMP error about a datagram that came in through the NAT
};

// What classify learnt about an IPv4 packet; valid when `is_ipv4`.
struct PacketMeta {
    uint16_t in_port = kNoPort;   // port slot the frame arrived on
    uint16_t out_port = kNoPort;  // port slot to send it out of (forward)
    Verdict verdict = Verdict::pending;
    DropReason reason{};
    bool is_arp = false;
    bool is_ipv4 = false;
    uint8_t l3_offset = 0;  // bytes from frame start to the IPv4/ARP header
    uint8_t l4_offset = 0;  // bytes from frame start to the L4 header (IPv4 only)
    uint8_t ip_proto = 0;
    uint32_t next_hop = 0;  // route lookup result (see dp/route.hpp)
    // From the uplink, sent by another host of the site for one of its instances (the route
    // stage's reverse-path check): inside the site, not the outside world.
    bool from_site = false;
    // NAT: set by nat_in (translated back to an instance) and policy (what nat_out does).
    bool nat_translated_in = false;
    NatAction nat = NatAction::none;
    uint16_t nat_port = 0;  // host order
    uint32_t nat_addr = 0;  // host order
    // nat_in: the connection-table position + 1 of the connection it translated the packet
    // for, so that policy need not look its key up again (0: none).
    uint32_t nat_connection = 0;
    // A drop charged to another port than in_port: a per-instance limit refusing a connection
    // from outside is counted on the instance's port (policy). kNoPort: in_port.
    uint16_t charged_port = kNoPort;
};

// A packet's metadata before any stage ran, copied from memory: `meta = PacketMeta{}` was
// built on the stack with narrow stores and copied with wide loads right after them, a
// store-forwarding stall per packet (~35 cycles on the worker, perf annotate).
inline constexpr PacketMeta kFreshMeta{};

struct Batch {
    uint16_t count = 0;
    Frame frames[kBurstSize];
    PacketMeta meta[kBurstSize];
    void* handles[kBurstSize];  // the owner's buffer handle (rte_mbuf*), opaque to stages

    // Packet i arrived on `in_port`: its metadata starts afresh.
    void admit(uint16_t i, uint16_t in_port) {
        meta[i] = kFreshMeta;
        meta[i].in_port = in_port;
    }

    void drop(uint16_t i, DropReason r) {
        meta[i].verdict = Verdict::drop;
        meta[i].reason = r;
    }
};

}  // namespace calyx::dp
