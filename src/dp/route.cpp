#include "dp/route.hpp"

#include <rte_fib.h>

#include "calyx/headers.hpp"

namespace calyx::dp {

void route_stage(Batch& batch, const Snapshot& snap, WorkerContext&) noexcept {
    uint32_t ips[kBurstSize];
    uint64_t hops[kBurstSize];
    uint16_t which[kBurstSize];
    uint16_t n = 0;
    for (uint16_t i = 0; i < batch.count; ++i) {
        PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::pending || !m.is_ipv4) continue;
        const Frame& f = batch.frames[i];
        const auto* ip = header_at<Ipv4Hdr>(f.data(), f.len, m.l3_offset);
        const Ipv4Addr dst = Ipv4Addr::from_be(ip->dst);
        if (dst.is_limited_broadcast()) {
            m.next_hop = NextHop::make(NextHopKind::local);
            continue;
        }
        if (dst.is_zero() || dst.is_multicast() || (dst.value >> 24) == 127) {
            batch.drop(i, DropReason::martian_destination);
            continue;
        }
        ips[n] = dst.value;
        which[n++] = i;
    }
    if (n == 0) return;
    rte_fib_lookup_bulk(snap.fib, ips, hops, n);
    for (uint16_t k = 0; k < n; ++k) batch.meta[which[k]].next_hop = static_cast<uint32_t>(hops[k]);
}

}  // namespace calyx::dp
