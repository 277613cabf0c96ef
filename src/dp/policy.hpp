// policy: security groups with stateful connection tracking, between routing and forwarding.
// Nothing passes unless a rule allows it; replies and ICMP errors about allowed connections
// pass without rules.
//
// - A new connection from instance A to instance B needs an egress rule of A that matches B
//   and an ingress rule of B that matches A (traffic to or from outside the site needs only
//   the rule on the instance's side). Rules are evaluated on a connection's first packet only.
// - Every later packet is checked by the protocol state machines (dp/conntrack_state.hpp):
//   full TCP tracking with window checks, UDP and ICMP echo.
// - After a rule change (a new snapshot generation) each connection is re-checked once, at its
//   next packet, against the new rules: still allowed, it continues; otherwise it is cut.
// - ICMP errors (unreachable, time exceeded, parameter problem) pass when the datagram they
//   quote belongs to a tracked connection; redirects and source quench never pass.
// - An ICMP echo request from the other host with a flow's identifier is a new connection.
// - Fragments: the first decides; later fragments of its datagram follow that verdict.
// - Infrastructure (ARP, DHCP, ping to the gateway) never reaches this stage.
//
// - Network kinds (the seed): a `private` network has no traffic to or from outside the site;
//   a `nat` network's connections to the outside are masqueraded, and nothing from outside
//   opens a connection to it. A masqueraded connection gets its external port here, on its
//   first packet (dp/nat.hpp: two keys, the binding in the entry); nat_out rewrites.
// - A site of several hosts (as Calico splits them): a connection between an instance here and
//   one on another host (routed by an imported site route; from it: meta.from_site) is inside
//   the site, so never masqueraded and open to private networks; here only this side's rules
//   are checked (egress of the source on its host, ingress of the destination on its own).
//
// Reads:  meta (IPv4, next hop, nat_translated_in), headers, the snapshot's compiled rules,
//         connection table and NAT port allocator.
// Writes: the connection table and port allocator; meta.nat/nat_addr/nat_port (what nat_out
//         does); verdict drop.
// Drops:  sg_no_egress_rule, sg_no_ingress_rule, sg_revoked, ct_invalid_new,
//         ct_invalid_state, ct_invalid_tcp_flags, ct_out_of_window, ct_table_full,
//         ct_icmp_error_unmatched, icmp_redirect_or_quench, fragment_unmatched, l4_malformed,
//         private_isolated, nat_unsolicited, nat_unsupported, nat_exhausted, no_route (a port
//         the snapshot does not name).
#pragma once

#include <cstdint>

#include "calyx/net.hpp"
#include "dp/batch.hpp"
#include "dp/snapshot.hpp"
#include "dp/worker_context.hpp"

namespace calyx::dp {

void policy_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept;

// Which ends of a connection that are no instance of this host are another host's of the
// site (not the outside world): their rules are checked on their own host.
struct SiteEnds {
    bool from = false;
    bool to = false;
};

// Whether a new connection from `from` (null: not an instance of this host; outside the site
// unless site.from) to `to` (likewise) would be allowed, and by which rules. The data plane
// and `calyxctl explain` both use this. Network kinds come first (a `private` network never
// talks to the outside, nothing from outside opens a connection to a `nat` network), then the
// security groups of this host's ends.
struct PolicyDecision {
    bool allowed = false;
    DropReason reason{};              // when not allowed
    uint32_t egress_rule = kNoRule;   // index in from's egress RuleTable
    uint32_t ingress_rule = kNoRule;  // index in to's ingress RuleTable
    bool masquerade = false;          // allowed, and leaves through the uplink's NAT (source
                                      // becomes the uplink address and a port of its range)
};
PolicyDecision evaluate_new_connection(const Snapshot& snap, const InstanceView* from,
                                       const InstanceView* to, Ipv4Addr from_ip, Ipv4Addr to_ip,
                                       uint8_t protocol, uint16_t rule_key, SiteEnds site = {}) noexcept;

}  // namespace calyx::dp
