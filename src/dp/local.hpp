// local: packets for calyx itself (a gateway address or a broadcast). These are the
// infrastructure services every instance gets whatever its security groups say: DHCP and
// ping to the gateway.
//
// The uplink address is calyx's too: it answers ping there (from anywhere); other packets
// to it reach this stage only when no masquerade mapping claimed them (nat_no_mapping).
// With a host interface (dp/host.hpp) the address is the host's: what comes for it from the
// uplink goes to the host's stack as it is (verdict forward to the host port). Nothing from
// the uplink gets DHCP.
//
// Reads:  meta.next_hop == local, the port's instance and its network, the uplink.
// Writes: the frame, rewritten in place into the DHCP or echo reply (verdict reply), or
//         verdict consumed (DHCP RELEASE/DECLINE).
// Drops:  to_gateway_unhandled, nat_no_mapping, and the DHCP responder's reasons (dp/dhcp.hpp).
#pragma once

#include "dp/batch.hpp"
#include "dp/snapshot.hpp"
#include "dp/worker_context.hpp"

namespace calyx::dp {

// Index values of local next hops.
inline constexpr uint32_t kLocalGatewayAddress = 0;
inline constexpr uint32_t kLocalBroadcast = 1;
inline constexpr uint32_t kLocalUplinkAddress = 2;

void local_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept;

}  // namespace calyx::dp
