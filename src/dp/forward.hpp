// forward: what a router does to a routed packet. No route or an unassigned address answers
// ICMP unreachable; TTL expiry answers ICMP time exceeded; a packet larger than the egress
// MTU with DF set answers fragmentation needed. ICMP errors follow RFC 1812's rules and the
// worker's rate limit; towards the uplink they come from the uplink address, and never about
// addresses of nat or private networks. Forwarded packets get TTL - 1 (incremental checksum)
// and new MACs: to an instance, the gateway's as source and the instance's as destination; to
// the uplink, the uplink's own as source and the next hop's (the gateway, an on-link
// destination, or another host of the site: one next hop of its imported route, by the flow's
// hash when there are several) from the ARP cache, whose misses ask the control plane to
// resolve. Nothing from the uplink goes back to it, to the site's hosts neither.
//
// Reads:  meta.next_hop (route), meta.in_port, the IPv4 header, the ARP cache.
// Writes: TTL, checksum, Ethernet addresses; meta.out_port and verdict forward; or the frame
//         rewritten into an ICMP error (verdict reply); wanted ARP cache entries.
// Drops:  no_route, ttl_exceeded, mtu_exceeded, hairpin, uplink_transit, neighbor_unresolved
//         (the ICMP error, when one is sent, reuses the buffer; the original packet is still
//         counted under its reason).
#pragma once

#include "dp/batch.hpp"
#include "dp/snapshot.hpp"
#include "dp/worker_context.hpp"

namespace calyx::dp {

void forward_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept;

}  // namespace calyx::dp
