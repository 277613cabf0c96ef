// The two NAT steps around routing and forwarding (the translations themselves and the
// mapping design are in dp/nat.hpp).
//
// nat_in (before route): packets from the uplink to the uplink address that belong to a
// masqueraded connection are translated back to the instance, so route, policy and forward
// see an ordinary reply to an ordinary connection. Later fragments of a translated datagram
// follow its first fragment (remembered in the worker's fragment table).
//   Reads:  meta (in_port, IPv4, L4), the NAT connection map and the connections it names
//           (ConnTable::outside_candidate), fragments.
//   Writes: destination address and port (or echo identifier), or the quoted datagram of an
//           ICMP error, with checksums; meta.nat_translated_in.
//   Drops:  l4_malformed (a translation that cannot be done). Packets without a mapping go
//           on untouched: the local stage answers pings to the uplink address and drops the
//           rest (nat_no_mapping).
//
// nat_out (after forward): packets the policy stage marked are rewritten to their external
// endpoint, after forward's TTL and MTU checks, so that an ICMP error calyx sends to an
// instance quotes what the instance sent.
//   Reads:  meta.nat, nat_addr, nat_port (policy), verdict forward.
//   Writes: source address and port (or echo identifier), or an ICMP error's outer source and
//           quoted destination, with checksums.
//   Drops:  nat_unsupported, l4_malformed.
#pragma once

#include "dp/batch.hpp"
#include "dp/snapshot.hpp"
#include "dp/worker_context.hpp"

namespace calyx::dp {

void nat_in_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept;
void nat_out_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept;

}  // namespace calyx::dp
