// arp: proxy-ARP on instance links, as Calico does it. Every request from the instance is
// answered with the gateway MAC, whatever address it asks for, so all traffic goes through
// the gateway at layer 3; there is no L2 between instances and calyx never floods.
//
// On the uplink it is an ordinary ARP host: it answers for the uplink address and the public
// instances' addresses with the uplink's own MAC, and learns its neighbours (the gateway)
// into the ARP cache (dp/neighbor.hpp), which the control plane keeps fresh.
//
// Reads:  ARP frames (meta.is_arp), the port's instance, snapshot.gateway_mac, the uplink.
// Writes: the frame, rewritten in place into the reply (verdict reply); the ARP cache
//         (verdict consumed for a reply it learnt from).
// Drops:  arp_malformed, arp_sender_spoofed, arp_not_request, arp_gratuitous (announcements
//         get no reply), arp_target_self (a request for the instance's own address, e.g.
//         duplicate address detection, must stay unanswered); on the uplink arp_not_for_us
//         and arp_not_request (a reply nobody asked for).
#pragma once

#include "dp/batch.hpp"
#include "dp/snapshot.hpp"
#include "dp/worker_context.hpp"

namespace calyx::dp {

void arp_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept;

}  // namespace calyx::dp
