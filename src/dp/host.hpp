// host: frames of the host's own stack (config host_interface), a tap in calyx's namespace
// that carries the uplink's MAC and address. calyx carries the host at layer 2, as a switch
// port on the uplink's segment would: what the host's kernel sends leaves by the uplink as it
// is (no routing, no TTL, no security groups: those are the instances'), and what comes from
// the uplink for the uplink address, unless it is a reply to a masqueraded connection, reaches
// the host (the local stage sends it there).
//
// ARP is calyx's alone, since the two share one address and one MAC: on the uplink calyx
// answers for the address (the kernel never sees a request, so no request gets two answers),
// and the kernel's own requests are answered here from the uplink's ARP cache. A target the
// cache has not resolved is wanted: calyx asks on the segment, and the kernel's next try (the
// tap's retransmit time is short) finds it.
//
// Reads:  frames from the host port; the uplink's ARP cache.
// Writes: ARP replies in place (verdict reply); verdict forward to the uplink, frame unchanged.
// Drops:  runt_frame, ethertype_unsupported (the tap has IPv6 off), src_mac_spoofed (not the
//         host interface's MAC, which is the uplink's), arp_malformed, arp_not_request,
//         arp_gratuitous, arp_not_for_us (a target off the uplink subnet, or the host itself),
//         neighbor_unresolved (a target not resolved yet, now wanted).
#pragma once

#include "dp/batch.hpp"
#include "dp/snapshot.hpp"
#include "dp/worker_context.hpp"

namespace calyx::dp {

void host_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept;

}  // namespace calyx::dp
