#include "dp/nat_stages.hpp"

#include "calyx/headers.hpp"
#include "dp/conntrack.hpp"
#include "dp/nat.hpp"

namespace calyx::dp {
namespace {

bool is_icmp_error(uint8_t type) {
    return type == icmp::kDestUnreachable || type == icmp::kTimeExceeded ||
           type == icmp::kParameterProblem;
}

// The outside tuple of an inbound packet to the uplink address: who sent it (remote) and to
// which external port (ICMP echo: identifier), for the NAT connection map.
struct OutsideTuple {
    uint8_t proto;
    bool icmp_error;  // an ICMP error quoting a datagram that left through the NAT
    uint16_t remote_port;
    uint16_t external_port;
    Ipv4Addr remote;
};

bool outside_tuple_of(const Frame& f, const PacketMeta& m, Ipv4Addr dst, OutsideTuple& t) {
    const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
    const uint8_t* l4 = f.data() + m.l4_offset;
    t.icmp_error = false;
    t.remote = Ipv4Addr::from_be(ip->src);
    switch (m.ip_proto) {
        case ipproto::kTcp:
        case ipproto::kUdp:  // classify checked the header is there
            t.proto = m.ip_proto;
            t.remote_port = static_cast<uint16_t>(l4[0] << 8 | l4[1]);
            t.external_port = static_cast<uint16_t>(l4[2] << 8 | l4[3]);
            return true;
        case ipproto::kIcmp: {
            const uint8_t type = l4[0];
            if (type == icmp::kEchoReply) {
                if (f.len - m.l4_offset < 8) return false;
                t.proto = ipproto::kIcmp;
                t.external_port = t.remote_port = static_cast<uint16_t>(l4[4] << 8 | l4[5]);
                return true;
            }
            if (!is_icmp_error(type)) return false;  // echo requests are for calyx itself
            // The quoted datagram left through the NAT: its source is the external endpoint.
            const auto q = icmp_error_quoted_flow(f.data() + m.l3_offset, f.len - m.l3_offset);
            if (!q || q->src.addr != dst) return false;
            t.proto = q->proto;
            t.remote = q->dst.addr;
            t.remote_port = q->dst.port;
            t.external_port = q->src.port;
            t.icmp_error = true;
            return true;
        }
        default: return false;
    }
}

// Later fragments carry no ports: they follow their first fragment's translation, which
// this worker remembered (fragments of a datagram arrive together, on one queue as a rule).
FragmentKey inbound_fragment_key(const Ipv4Hdr& ip) {
    return {Ipv4Addr::from_be(ip.src).value, Ipv4Addr::from_be(ip.dst).value, ip.id.host(), kNatZone,
            ip.protocol};
}

void translate_later_fragment(Batch& batch, uint16_t i, const Snapshot& snap, WorkerContext& ctx) {
    PacketMeta& m = batch.meta[i];
    const Frame& f = batch.frames[i];
    const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
    uint32_t inside = 0;
    if (!ctx.fragments || !ctx.fragments->allowed(inbound_fragment_key(*ip), ctx.now_ns, &inside,
                                                  static_cast<uint32_t>(snap.generation)))
        return;  // the local stage drops it (nat_no_mapping)
    if (dnat_inbound(batch.frames[i], m, {Ipv4Addr{inside}, 0}) != NatResult::ok) {
        batch.drop(i, DropReason::l4_malformed);
        return;
    }
    m.nat_translated_in = true;
}

}  // namespace

void nat_in_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept {
    if (!snap.uplink) return;
    OutsideTuple tuples[kBurstSize];
    size_t slots[kBurstSize];
    int32_t candidates[kBurstSize];
    uint16_t which[kBurstSize];
    uint16_t n = 0;
    const ConnTable& table = *snap.conntrack;
    const Ipv4Addr external = snap.uplink->address;
    for (uint16_t i = 0; i < batch.count; ++i) {
        const PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::pending || !m.is_ipv4 || m.in_port != snap.uplink->port) continue;
        const Frame& f = batch.frames[i];
        const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
        if (Ipv4Addr::from_be(ip->dst) != external) continue;
        if (!ip->is_first_fragment()) {
            translate_later_fragment(batch, i, snap, ctx);
            continue;
        }
        OutsideTuple& t = tuples[n];
        if (!outside_tuple_of(f, m, external, t)) continue;
        slots[n] = table.outside_slot(t.proto, t.remote, t.remote_port, t.external_port);
        which[n++] = i;
    }
    // The map slot, then the candidate's entry and key record: with many connections each is
    // a cache miss, so the whole burst's are started before the first is read (one pass per
    // level: each level's address comes from the one before).
    for (uint16_t k = 0; k < n; ++k) {
        candidates[k] = table.outside_candidate(slots[k]);
        if (candidates[k] >= 0) {
            table.prefetch(candidates[k]);
            table.prefetch_key_record(candidates[k]);
        }
    }
    for (uint16_t k = 0; k < n; ++k) {
        const OutsideTuple& t = tuples[k];
        NatEndpoint inside;
        if (!table.outside_connection(candidates[k], t.proto, t.remote, t.remote_port, external, t.external_port,
                                      inside))
            continue;
        const uint16_t i = which[k];
        PacketMeta& m = batch.meta[i];
        Frame& f = batch.frames[i];
        const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
        const FragmentKey fragment = inbound_fragment_key(*ip);  // before the rewrite
        const bool more_fragments = ip->frag.host() & Ipv4Hdr::kMoreFragments;
        const NatResult r = t.icmp_error ? translate_icmp_error_inbound(f, m, inside) : dnat_inbound(f, m, inside);
        if (r != NatResult::ok) {
            batch.drop(i, DropReason::l4_malformed);
            continue;
        }
        m.nat_translated_in = true;
        if (!t.icmp_error) m.nat_connection = static_cast<uint32_t>(candidates[k]) + 1;
        if (more_fragments && ctx.fragments)
            ctx.fragments->remember(fragment, ctx.fragments->source_of(m.in_port, fragment.src, true), ctx.now_ns,
                                    ctx.now_ns + uint64_t{snap.fragment_timeout_s} * 1'000'000'000,
                                    inside.addr.value, static_cast<uint32_t>(snap.generation));
    }
}

void nat_out_stage(Batch& batch, const Snapshot&, WorkerContext&) noexcept {
    for (uint16_t i = 0; i < batch.count; ++i) {
        PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::forward || m.nat == NatAction::none) continue;
        Frame& f = batch.frames[i];
        const NatEndpoint external{Ipv4Addr{m.nat_addr}, m.nat_port};
        NatResult r = NatResult::ok;
        switch (m.nat) {
            case NatAction::snat:
            case NatAction::snat_fragment:  // no L4 header: only the address changes
                r = snat_outbound(f, m, external);
                break;
            case NatAction::icmp_error_out:
                r = translate_icmp_error_outbound(f, m, external);
                break;
            case NatAction::none: break;
        }
        if (r == NatResult::unsupported)
            batch.drop(i, DropReason::nat_unsupported);
        else if (r == NatResult::malformed)
            batch.drop(i, DropReason::l4_malformed);
    }
}

}  // namespace calyx::dp
