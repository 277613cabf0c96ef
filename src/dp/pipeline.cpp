#include "dp/pipeline.hpp"

#include "dp/arp.hpp"
#include "dp/classify.hpp"
#include "dp/forward.hpp"
#include "dp/host.hpp"
#include "dp/local.hpp"
#include "dp/nat_stages.hpp"
#include "dp/policy.hpp"
#include "dp/route.hpp"

namespace calyx::dp {

void run_pipeline(Batch& batch, const Snapshot& snap, WorkerContext& ctx) noexcept {
    host_stage(batch, snap, ctx);
    classify_stage(batch, snap, ctx);
    arp_stage(batch, snap, ctx);
    nat_in_stage(batch, snap, ctx);
    route_stage(batch, snap, ctx);
    local_stage(batch, snap, ctx);
    PendingOpens opens;  // first packets policy allowed, created by commit if forwarded
    policy_stage(batch, snap, ctx, opens);
    forward_stage(batch, snap, ctx);
    commit_stage(batch, snap, ctx, opens);
    nat_out_stage(batch, snap, ctx);
    for (uint16_t i = 0; i < batch.count; ++i) {
        const PacketMeta& m = batch.meta[i];
        if (m.verdict == Verdict::drop)
            ctx.counters.count_drop(m.charged_port == kNoPort ? m.in_port : m.charged_port, m.reason);
    }
}

}  // namespace calyx::dp
