#include "io/worker.hpp"

#include <sys/prctl.h>
#include <time.h>

#include <rte_cycles.h>
#include <rte_mbuf.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>

#include "dp/pipeline.hpp"
#include "io/clock.hpp"
#include "io/idle_backoff.hpp"
#include "io/mbuf_frame.hpp"
#include "io/port.hpp"
#include "io/idle_queue_skip.hpp"

namespace calyx::io {
namespace {

// Sends the packets of `batch` that the pipeline addressed to ports, one burst per port, on
// this worker's transmit queue; frees everything else (drops, consumed, what a port refused).
// Adds the TSC cycles spent inside the ports' transmit calls to `io_cycles` and returns the
// TSC at the end of the last one (0: nothing sent): the caller's next mark, so that a burst
// reads the clock once less (a read costs ~100 cycles in a VM). The counting after the last
// send (a few cycles) then goes with I/O, as the loop's glue before the next receive does.
uint64_t transmit(dp::Batch& batch, uint16_t queue, DataplaneShared& shared, dp::WorkerCounters& counters,
                  uint64_t& io_cycles) {
    rte_mbuf* group[dp::kBurstSize];
    rte_mbuf* unsent[dp::kBurstSize];
    uint16_t n_unsent = 0;
    bool handled[dp::kBurstSize] = {};
    uint64_t tx_end = 0;
    auto destination = [](const dp::PacketMeta& m) -> int {
        if (m.verdict == dp::Verdict::forward) return m.out_port;
        if (m.verdict == dp::Verdict::reply) return m.in_port;
        return -1;
    };
    for (uint16_t i = 0; i < batch.count; ++i) {
        if (handled[i]) continue;
        const int port_slot = destination(batch.meta[i]);
        if (port_slot < 0) {
            unsent[n_unsent++] = static_cast<rte_mbuf*>(batch.handles[i]);
            continue;
        }
        uint16_t n = 0;
        uint64_t bytes[dp::kBurstSize];
        for (uint16_t j = i; j < batch.count; ++j) {
            if (handled[j] || destination(batch.meta[j]) != port_slot) continue;
            handled[j] = true;
            auto* m = static_cast<rte_mbuf*>(batch.handles[j]);
            store_frame(m, batch.frames[j]);
            bytes[n] = m->pkt_len;
            group[n++] = m;
        }
        Port* port = shared.ports[port_slot].load(std::memory_order_acquire);
        const bool up = port && port->connected();
        const uint64_t tx_start = rte_rdtsc();
        const uint16_t done = up ? port->tx(group, n, queue) : 0;  // owns group[0..done) now
        tx_end = rte_rdtsc();
        io_cycles += tx_end - tx_start;
        uint64_t sent_bytes = 0;
        for (uint16_t k = 0; k < done; ++k) sent_bytes += bytes[k];
        dp::PortCounters& pc = counters.ports[port_slot];
        dp::bump(pc.tx_packets, done);
        dp::bump(pc.tx_bytes, sent_bytes);
        if (done < n)
            dp::bump(pc.drops[static_cast<size_t>(up ? DropReason::tx_full : DropReason::port_down)],
                     n - done);
        for (uint16_t k = done; k < n; ++k) unsent[n_unsent++] = group[k];
    }
    rte_pktmbuf_free_bulk(unsent, n_unsent);
    return tx_end;
}

// Fills `batch` from one receive queue. A poll that brings packets adds the cycles since
// `io_mark` (the last clock read: this receive call and the empty polls before it) to
// io_cycles and moves the mark; an empty poll reads no clock (a TSC read costs about 100
// cycles in a VM, more than the poll of an empty vhost ring).
uint16_t receive(dp::Batch& batch, Port& port, uint16_t slot, uint16_t queue, dp::WorkerCounters& counters,
                 uint64_t& io_cycles, uint64_t& io_mark) {
    rte_mbuf* pkts[dp::kBurstSize];
    uint16_t refused = 0;
    const uint16_t n = port.rx(pkts, dp::kBurstSize, queue, refused);
    if (n == 0 && refused == 0) return 0;
    const uint64_t now = rte_rdtsc();
    io_cycles += now - io_mark;
    io_mark = now;
    if (refused) counters.count_drop(slot, DropReason::oversize_frame, refused);
    uint64_t bytes = 0;
    for (uint16_t i = 0; i < n; ++i) {
        rte_mbuf* m = pkts[i];
        bytes += m->pkt_len;
        batch.handles[i] = m;
        batch.frames[i] = frame_of(m);
        batch.admit(i, slot);
        // vhost-user ports refuse frames longer than a buffer (oversize_frame); a chain that
        // still arrives (from a PMD) is not looked into.
        if (m->nb_segs != 1) batch.drop(i, DropReason::multi_segment);
    }
    batch.count = n;
    dp::bump(counters.ports[slot].rx_packets, n);
    dp::bump(counters.ports[slot].rx_bytes, bytes);
    dp::bump(counters.packets, n);
    return n;
}

// The control plane's frames for the uplink, sent on this worker's queue.
bool send_control_frames(DataplaneShared& shared, uint16_t uplink_slot, uint16_t queue,
                         dp::WorkerCounters& counters) {
    rte_mbuf* pkts[dp::kBurstSize];
    const unsigned n = rte_ring_sc_dequeue_burst(shared.uplink_control_tx, reinterpret_cast<void**>(pkts),
                                                 dp::kBurstSize, nullptr);
    if (n == 0) return false;
    Port* port = shared.ports[uplink_slot].load(std::memory_order_acquire);
    const uint16_t done = port && port->connected() ? port->tx(pkts, static_cast<uint16_t>(n), queue) : 0;
    uint64_t bytes = 0;
    for (uint16_t k = 0; k < done; ++k) bytes += pkts[k]->pkt_len;
    dp::bump(counters.ports[uplink_slot].tx_packets, done);
    dp::bump(counters.ports[uplink_slot].tx_bytes, bytes);
    rte_pktmbuf_free_bulk(pkts + done, n - done);
    return true;
}

// Sleeps `us` microseconds outside RCU: a grace period (a reload, a closing port) never waits
// for a sleeping worker, which holds no snapshot; back online, the loop reloads the pointer.
void sleep_offline(rte_rcu_qsbr* grace, unsigned index, uint32_t us) {
    rte_rcu_qsbr_thread_offline(grace, index);
    const timespec t{static_cast<time_t>(us / 1'000'000), static_cast<long>(us % 1'000'000) * 1000};
    nanosleep(&t, nullptr);
    rte_rcu_qsbr_thread_online(grace, index);
}

}  // namespace

int worker_main(void* raw) {
    auto& args = *static_cast<WorkerArgs*>(raw);
    DataplaneShared& shared = *args.shared;
    dp::WorkerCounters& counters = *args.counters;
    dp::WorkerContext ctx{counters};
    ctx.fragments = args.fragments;
    dp::Batch batch;
    IdleQueueSkip idle_queues;

    rte_rcu_qsbr_thread_register(shared.grace, args.index);
    rte_rcu_qsbr_thread_online(shared.grace, args.index);
    // Sleeps of a few microseconds would otherwise last the kernel's default timer slack
    // (50 us) longer.
    prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
    IdleBackoff backoff;
    uint64_t last = rte_rdtsc();
    while (!shared.stop.load(std::memory_order_relaxed)) {
        const dp::Snapshot* snap = shared.snapshot.load(std::memory_order_acquire);
        const uint64_t start = rte_rdtsc();
        ctx.now_ns = tsc_to_ns(start);
        bool busy = false;
        // The router's own cycles are the busy ones minus these: the ports' receive calls (with
        // the empty polls between them, see receive()) and transmit calls.
        uint64_t io_cycles = 0;
        uint64_t io_mark = start;
        const auto queue = static_cast<uint16_t>(args.index);
        auto poll = [&](uint16_t slot, uint16_t rx_queue) {
            Port* port = shared.ports[slot].load(std::memory_order_acquire);
            if (!port) return false;
            if (receive(batch, *port, slot, rx_queue, counters, io_cycles, io_mark) == 0) return false;
            busy = true;
            dp::run_pipeline(batch, *snap, ctx);
            const uint64_t sent = transmit(batch, queue, shared, counters, io_cycles);
            io_mark = sent ? sent : rte_rdtsc();
            return true;
        };
        if (snap && args.index < snap->queues_by_worker.size()) {
            const std::vector<dp::PolledQueue>& polled = snap->queues_by_worker[args.index];
            idle_queues.begin(ctx.now_ns, &polled);
            for (size_t i = 0; i < polled.size(); ++i)
                if (idle_queues.due(i)) idle_queues.polled(i, poll(polled[i].slot, polled[i].queue));
            if (busy) io_cycles += rte_rdtsc() - io_mark;  // the empty polls after the last burst
            if (snap->uplink && args.index == 0 && shared.uplink_control_tx)
                busy |= send_control_frames(shared, snap->uplink->port, queue, counters);
        }
        const uint32_t max_sleep_us = snap ? snap->idle_sleep_us : 0;
        // Nothing from this iteration is held past here: old snapshots and ports may go.
        rte_rcu_qsbr_quiescent(shared.grace, args.index);
        const uint64_t end = rte_rdtsc();
        dp::bump(counters.total_cycles, end - last);
        if (busy) {
            dp::bump(counters.busy_cycles, end - start);
            dp::bump(counters.io_cycles, io_cycles);
        }
        last = end;
        if (busy) idle_queues.busy(ctx.now_ns);
        if (const uint32_t us = backoff.next(busy, tsc_to_ns(end), max_sleep_us)) {
            sleep_offline(shared.grace, args.index, us);
            dp::bump(counters.sleep_cycles, rte_rdtsc() - end);
        }
    }
    rte_rcu_qsbr_thread_offline(shared.grace, args.index);
    rte_rcu_qsbr_thread_unregister(shared.grace, args.index);
    return 0;
}

}  // namespace calyx::io
