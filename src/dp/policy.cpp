#include "dp/policy.hpp"

#include "calyx/headers.hpp"
#include "dp/conntrack.hpp"
#include "dp/route.hpp"

namespace calyx::dp {
namespace {

// The two sides of a routed packet as connection tracking sees them.
struct Sides {
    const InstanceView* src;  // null: outside the site
    const InstanceView* dst;
    uint16_t src_zone;
    uint16_t dst_zone;
    Ipv4Addr src_ip;
    Ipv4Addr dst_ip;
};

// What the stage needs of one packet.
struct Flow {
    CtPacketKey key;
    PacketInfo info;
    uint16_t rule_key;       // what a rule for this packet as a first packet would match
    uint16_t orig_rule_key;  // the same for the opposite direction (re-checks of replies)
};

DropReason reason_of(CtVerdict v) {
    switch (v) {
        case CtVerdict::invalid_new: return DropReason::ct_invalid_new;
        case CtVerdict::invalid_flags: return DropReason::ct_invalid_tcp_flags;
        case CtVerdict::out_of_window: return DropReason::ct_out_of_window;
        case CtVerdict::malformed: return DropReason::l4_malformed;
        default: return DropReason::ct_invalid_state;
    }
}

bool is_icmp_error(uint8_t type) {
    return type == icmp::kDestUnreachable || type == icmp::kTimeExceeded ||
           type == icmp::kParameterProblem;
}

size_t index_of(const Snapshot& snap, const InstanceView* inst) {
    return static_cast<size_t>(inst - snap.instances.data());
}

// Ports of a packet for its connection key: TCP/UDP ports, the echo identifier on both sides
// for ICMP echo (request and reply then share a key), nothing for other protocols.
void l4_ports(uint8_t proto, const uint8_t* l4, size_t len, uint16_t& sport, uint16_t& dport) {
    sport = dport = 0;
    if ((proto == ipproto::kTcp || proto == ipproto::kUdp) && len >= 4) {
        sport = static_cast<uint16_t>(l4[0] << 8 | l4[1]);
        dport = static_cast<uint16_t>(l4[2] << 8 | l4[3]);
    } else if (proto == ipproto::kIcmp && len >= 8) {
        sport = dport = static_cast<uint16_t>(l4[4] << 8 | l4[5]);
    }
}

class PolicyRun {
public:
    PolicyRun(const Snapshot& snap, WorkerContext& ctx) : snap_(snap), ctx_(ctx), table_(*snap.conntrack) {}

    std::optional<DropReason> track(const Flow& f, int32_t pos, const Sides& s) {
        if (pos >= 0) {
            CtEntry& e = table_.entry(pos);
            e.lock_entry();
            if (!e.dead()) {
                const auto r = existing(e, f, s);
                e.unlock_entry();
                return r;
            }
            e.unlock_entry();  // deleted under us: the packet is a first packet
        }
        return create(f, s);
    }

private:
    std::optional<DropReason> decide_new(const Flow& f, const Sides& s, ConnState& fresh) {
        const CtVerdict v = ct_new(fresh, f.info, snap_.ct_timeouts, ctx_.now_ns);
        if (v != CtVerdict::accept) return reason_of(v);
        const PolicyDecision d = evaluate_new_connection(snap_, s.src, s.dst, s.src_ip, s.dst_ip,
                                                         f.key.key.proto, f.rule_key);
        if (!d.allowed) return d.reason;
        return std::nullopt;
    }

    void start(CtEntry& e, const Flow& f, const ConnState& fresh) {
        e.state = fresh;
        e.orig_side = f.key.src_side;
        e.policy_generation = static_cast<uint32_t>(snap_.generation);
        bump(ctx_.counters.ct_created);
    }

    std::optional<DropReason> create(const Flow& f, const Sides& s) {
        ConnState fresh{};
        if (auto reason = decide_new(f, s, fresh)) return reason;
        const int32_t pos = table_.insert(f.key.key);
        if (pos < 0) return DropReason::ct_table_full;
        CtEntry& e = table_.entry(pos);
        e.lock_entry();
        std::optional<DropReason> r;
        if (e.dead())
            start(e, f, fresh);
        else
            r = existing(e, f, s);  // an earlier packet of this batch created it
        e.unlock_entry();
        return r;
    }

    // Entry lock held.
    std::optional<DropReason> existing(CtEntry& e, const Flow& f, const Sides& s) {
        const Direction dir = e.direction_of(f.key.src_side);
        const uint32_t generation = static_cast<uint32_t>(snap_.generation);
        if (e.policy_generation != generation && !ct_expired(e.state, ctx_.now_ns)) {
            // The rules changed since this connection was allowed: check its opening again.
            const bool orig = dir == Direction::original;
            const PolicyDecision d =
                orig ? evaluate_new_connection(snap_, s.src, s.dst, s.src_ip, s.dst_ip, f.key.key.proto, f.rule_key)
                     : evaluate_new_connection(snap_, s.dst, s.src, s.dst_ip, s.src_ip, f.key.key.proto, f.orig_rule_key);
            if (!d.allowed) {
                e.state.expires_s = 1;  // long expired: the sweeper removes it
                return DropReason::sg_revoked;
            }
            e.policy_generation = generation;
        }
        const CtVerdict v = ct_update(e.state, dir, f.info, snap_.ct_timeouts, ctx_.now_ns);
        if (ct_passes(v)) return std::nullopt;
        if (v != CtVerdict::reopen && v != CtVerdict::expired) return reason_of(v);
        // No live connection: this packet may open a new one in its own direction, reusing
        // the entry (the key is the same).
        ConnState fresh{};
        if (auto reason = decide_new(f, s, fresh)) return reason;
        start(e, f, fresh);
        return std::nullopt;
    }

    const Snapshot& snap_;
    WorkerContext& ctx_;
    ConnTable& table_;
};

// An ICMP error passes if the datagram it quotes belongs to a tracked connection. The quoted
// datagram travelled the other way: from the error's destination to the error's source.
std::optional<DropReason> check_icmp_error(const Frame& f, const PacketMeta& m, const Sides& s,
                                           const Snapshot& snap, uint64_t now_ns) {
    const size_t inner_at = m.l4_offset + sizeof(IcmpHdr);
    const auto* inner = header_at<Ipv4Hdr>(f.data(), f.len, inner_at);
    if (!inner || inner->version() != 4 || inner->header_length() < sizeof(Ipv4Hdr) ||
        f.len - inner_at < inner->header_length() + 8)
        return DropReason::ct_icmp_error_unmatched;
    const uint8_t* inner_l4 = f.data() + inner_at + inner->header_length();
    uint16_t sport = 0, dport = 0;
    l4_ports(inner->protocol, inner_l4, 8, sport, dport);
    const CtPacketKey k = make_ct_key(inner->protocol,
                                      {s.dst_zone, Ipv4Addr::from_be(inner->src), sport},
                                      {s.src_zone, Ipv4Addr::from_be(inner->dst), dport});
    const int32_t pos = snap.conntrack->lookup(k.key);
    if (pos < 0) return DropReason::ct_icmp_error_unmatched;
    const CtEntry& e = snap.conntrack->entry(pos);
    if (e.dead() || ct_expired(e.state, now_ns)) return DropReason::ct_icmp_error_unmatched;
    return std::nullopt;
}

}  // namespace

PolicyDecision evaluate_new_connection(const Snapshot& snap, const InstanceView* from,
                                       const InstanceView* to, Ipv4Addr from_ip, Ipv4Addr to_ip,
                                       uint8_t protocol, uint16_t rule_key) noexcept {
    PolicyDecision d;
    if (from) {
        d.egress_rule = snap.policies[index_of(snap, from)].egress.match(protocol, rule_key, to_ip);
        if (d.egress_rule == kNoRule) {
            d.reason = DropReason::sg_no_egress_rule;
            return d;
        }
    }
    if (to) {
        d.ingress_rule = snap.policies[index_of(snap, to)].ingress.match(protocol, rule_key, from_ip);
        if (d.ingress_rule == kNoRule) {
            d.reason = DropReason::sg_no_ingress_rule;
            return d;
        }
    }
    d.allowed = true;
    return d;
}

void policy_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept {
    Flow flows[kBurstSize];
    Sides sides[kBurstSize];
    const CtKey* keys[kBurstSize];
    int32_t positions[kBurstSize];
    uint16_t which[kBurstSize];
    uint16_t n = 0;

    for (uint16_t i = 0; i < batch.count; ++i) {
        PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::pending || !m.is_ipv4 ||
            NextHop::kind(m.next_hop) != NextHopKind::instance)
            continue;
        const Frame& fr = batch.frames[i];
        const auto* ip = header_at<Ipv4Hdr>(fr.data(), fr.len, m.l3_offset);
        const InstanceView* src = snap.instance_on_port(m.in_port);
        const InstanceView* dst = snap.instance_on_port(static_cast<uint16_t>(NextHop::index(m.next_hop)));
        if (!dst || dst == src) continue;  // forward drops these (no_route, hairpin)
        Sides s{src, dst, src ? snap.networks[src->network].zone : uint16_t{0},
                snap.networks[dst->network].zone, Ipv4Addr::from_be(ip->src), Ipv4Addr::from_be(ip->dst)};

        if (!ip->is_first_fragment()) {
            const FragmentKey fk{s.src_ip.value, s.dst_ip.value, ip->id.host(), s.src_zone, ip->protocol};
            if (!ctx.fragments || !ctx.fragments->allowed(fk, ctx.now_ns))
                batch.drop(i, DropReason::fragment_unmatched);
            continue;
        }
        const uint8_t* l4 = fr.data() + m.l4_offset;
        const size_t l4_len = fr.len - m.l4_offset;
        if (ip->protocol == ipproto::kIcmp && is_icmp_error(l4[0])) {
            if (auto r = check_icmp_error(fr, m, s, snap, ctx.now_ns)) batch.drop(i, *r);
            continue;
        }
        Flow& f = flows[n];
        f.info = packet_info_from(*ip, l4, l4_len);
        uint16_t sport = 0, dport = 0;
        l4_ports(ip->protocol, l4, l4_len, sport, dport);
        f.key = make_ct_key(ip->protocol, {s.src_zone, s.src_ip, sport}, {s.dst_zone, s.dst_ip, dport});
        f.rule_key = rule_key(ip->protocol, dport, f.info.icmp_type, f.info.icmp_code);
        // A reply's connection was opened the other way: to its source port, or by an echo
        // request for an echo reply.
        f.orig_rule_key = ip->protocol == ipproto::kIcmp ? rule_key(ip->protocol, 0, icmp::kEchoRequest, 0)
                                                         : rule_key(ip->protocol, sport, 0, 0);
        sides[n] = s;
        keys[n] = &f.key.key;
        which[n++] = i;
    }
    if (n == 0) return;
    snap.conntrack->lookup_bulk(keys, n, positions);
    PolicyRun run(snap, ctx);
    for (uint16_t k = 0; k < n; ++k) {
        const uint16_t i = which[k];
        if (auto r = run.track(flows[k], positions[k], sides[k])) {
            batch.drop(i, *r);
            continue;
        }
        const Frame& fr = batch.frames[i];
        const auto* ip = header_at<Ipv4Hdr>(fr.data(), fr.len, batch.meta[i].l3_offset);
        if (ctx.fragments && (ip->frag.host() & Ipv4Hdr::kMoreFragments))
            ctx.fragments->remember({sides[k].src_ip.value, sides[k].dst_ip.value, ip->id.host(),
                                     sides[k].src_zone, ip->protocol},
                                    ctx.now_ns + uint64_t{snap.fragment_timeout_s} * 1'000'000'000);
    }
}

}  // namespace calyx::dp
