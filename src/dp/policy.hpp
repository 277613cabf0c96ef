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
// - A first packet the rules allow does not create its connection here: it waits in
//   PendingOpens until forward has decided, and commit_stage creates the connection only
//   for a packet that really leaves (Linux conntrack confirms at POSTROUTING for the same
//   reason): a TTL=1 flood, packets without a route or a resolved neighbour, or too big for
//   the egress MTU create nothing. The established path never goes through commit.
//
// Reads:  meta (IPv4, next hop, nat_translated_in), headers, the snapshot's compiled rules
//         and connection table.
// Writes: the connection table's entries (state); meta.nat/nat_addr/nat_port (what nat_out
//         does) for established connections; PendingOpens; verdict drop.
// Drops:  sg_no_egress_rule, sg_no_ingress_rule, sg_revoked, ct_invalid_new,
//         ct_invalid_state, ct_invalid_tcp_flags, ct_out_of_window, ct_table_full,
//         ct_icmp_error_unmatched, icmp_redirect_or_quench, fragment_unmatched, l4_malformed,
//         private_isolated, nat_unsolicited, nat_unsupported, no_route (a port the snapshot
//         does not name),
//         limit_* (a connection reopened by a SYN on TIME_WAIT is a new connection too).
//
// commit (after forward): creates the connections of the pending first packets forward let
// through. The new connection is charged to the instance that opened it, or, from outside,
// to the instance it reaches (dp/limits.hpp), within its limits, checked in this order: its
// token bucket, its connection count, its NAT ports towards that remote (masqueraded
// connections get their external port here: dp/nat.hpp, two keys, the binding in the entry;
// nat_out rewrites), and room in the table (a full table evicts an unanswered connection).
// A refusal by a limit is counted on the charged instance's port. In two passes over the
// burst: every packet claims (charges, port, room, the key's insert) before any connection
// comes alive under its entry's lock, so that each claim's lines load while the next ones
// claim; the outcome is that of one packet after the other (a repeat of a key claimed earlier
// gives back at once and follows it; a claim that must evict first lets the earlier ones
// finish).
//   Reads:  PendingOpens, verdict forward.
//   Writes: the connection table, the instance accounts and the NAT port allocator;
//           meta.nat/nat_addr/nat_port; meta.charged_port; fragment verdicts; verdict drop.
//   Drops:  limit_new_connections_per_second, limit_connections, limit_nat_ports,
//           nat_exhausted, ct_table_full (and, when another worker created the connection
//           first, what the state machine says of this packet in it).
#pragma once

#include <cstdint>
#include <new>

#include "calyx/net.hpp"
#include "dp/batch.hpp"
#include "dp/conntrack.hpp"
#include "dp/snapshot.hpp"
#include "dp/worker_context.hpp"

namespace calyx::dp {

// Which ends of a connection that are no instance of this host are another host's of the
// site (not the outside world): their rules are checked on their own host.
struct SiteEnds {
    bool from = false;
    bool to = false;
};

// The two sides of a routed packet as connection tracking sees them.
struct Sides {
    const InstanceView* src;  // null: not an instance of this host
    const InstanceView* dst;
    uint16_t src_zone;  // another host's end shares the outside's zone 0: the site's addresses
    uint16_t dst_zone;  //   never overlap
    Ipv4Addr src_ip;
    Ipv4Addr dst_ip;
    SiteEnds site;  // which null ends are another host's of the site
    SiteEnds reversed() const { return {site.to, site.from}; }
    bool src_outside() const { return !src && !site.from; }
    bool dst_outside() const { return !dst && !site.to; }
};

// What the policy stage needs of one packet.
struct Flow {
    CtPacketKey key;
    uint32_t key_hash;       // the connection table's hash of key.key (lookup, then insert)
    bool hashed;             // key_hash is set (not for a packet nat_in found the connection of)
    PacketInfo info;
    uint16_t rule_key;       // what a rule for this packet as a first packet would match
    uint16_t orig_rule_key;  // the same for the opposite direction (re-checks of replies)
};

// A first packet the rules allowed, waiting for forward's verdict.
struct PendingOpen {
    uint16_t packet;  // index in the batch
    uint16_t flow;    // its Flow and Sides in PendingOpens
    bool masquerade;
    ConnState fresh;  // ct_new's state for the connection
};

// What policy_stage learnt of one batch's packets (a Flow and Sides per tracked packet) and
// its pending first packets, for commit_stage. Lives on the pipeline's stack; nothing in it is
// initialised (no cost for what a batch does not use). A pending packet's flow stays where
// policy built it: copied into the pending item, its wide loads right after the narrow stores
// that built it stalled on store forwarding.
struct PendingOpens {
    PendingOpens() {}
    uint16_t count = 0;
    union {
        PendingOpen items[kBurstSize];
    };
    union {
        Flow flows[kBurstSize];
    };
    union {
        Sides sides[kBurstSize];
    };
};

void policy_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx, PendingOpens& opens) noexcept;
void commit_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx, PendingOpens& opens) noexcept;

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
