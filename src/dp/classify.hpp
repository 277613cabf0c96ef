// classify: the first stage. Checks that a frame from an instance is well formed and really
// comes from that instance, and records where its headers are.
//
// Reads:  frame bytes, meta.in_port, the port's instance in the snapshot.
// Writes: meta.is_arp, is_ipv4, l3_offset, l4_offset, ip_proto; trims Ethernet padding.
// Drops:  runt_frame, ethertype_unsupported, src_mac_spoofed, dst_mac_not_gateway,
//         ipv4_malformed, l4_malformed, src_ipv4_spoofed (anti-spoofing: only the instance's
//         own address, except 0.0.0.0 for a DHCP client that has none yet).
#pragma once

#include "dp/batch.hpp"
#include "dp/snapshot.hpp"
#include "dp/worker_context.hpp"

namespace calyx::dp {

void classify_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept;

}  // namespace calyx::dp
