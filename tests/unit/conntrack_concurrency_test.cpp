// The shared connection table under real concurrency, through the data plane's own pipeline:
// three workers on their own threads and the control plane's sweep on a fourth, on one table.
//   - both directions of every connection on different workers at once: one worker sends the
//     requests, another the replies (a reply may come first and open the connection the
//     other way: the groups are open both ways);
//   - racing inserts: a third worker sends the same requests as the first, in the same order;
//   - the sweep running: connections made before the workers start have expired, and the
//     sweep removes them (freeing their slots after an RCU grace period the workers report
//     to) while the workers insert new ones.
// Afterwards every packet was forwarded, every connection is in the table once, with both
// directions seen, and every expired one is gone. Built a second time with ThreadSanitizer
// (tests/tsan.sh, the `tsan` suite), which then also checks the accesses themselves.
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>

#include <atomic>
#include <barrier>
#include <thread>

#include "gateway_fixture.hpp"

namespace calyx::test {
namespace {

constexpr uint32_t kConnections = 3000;   // made by the workers
constexpr uint32_t kExpired = 3000;       // made before, expired when the workers run
constexpr uint16_t kFirstPort = 10000;    // web-1's source ports: kFirstPort + c
constexpr uint16_t kExpiredPort = 30000;  // the expired connections' source ports
constexpr uint64_t kStart = 1'000'000'000ull;
constexpr uint64_t kLater = kStart + 600 * 1'000'000'000ull;  // past every UDP timeout

std::vector<uint8_t> request(uint16_t sport, uint8_t tag) {
    return FrameBuilder().eth(kWebMac, kGatewayMac).ipv4(kWebIp, kAppIp, ipproto::kUdp).udp(sport, 5000, {tag}).build();
}
std::vector<uint8_t> reply(uint16_t dport, uint8_t tag) {
    return FrameBuilder().eth(kAppMac, kGatewayMac).ipv4(kAppIp, kWebIp, ipproto::kUdp).udp(5000, dport, {tag}).build();
}

// One worker: its own counters, fragments and clock; reports quiescence after every batch.
struct Worker {
    std::unique_ptr<dp::WorkerCounters> counters = std::make_unique<dp::WorkerCounters>();
    std::unique_ptr<dp::FragmentVerdicts> fragments = std::make_unique<dp::FragmentVerdicts>();
    dp::WorkerContext ctx{*counters, kLater, {}, fragments.get()};
    uint64_t forwarded = 0, wrong = 0;

    // Sends `frames` (from `in_port`) in batches of 32; counts what was not forwarded to `out_port`.
    void send(const std::vector<std::vector<uint8_t>>& frames, uint16_t in_port, uint16_t out_port,
              const dp::Snapshot& snap, rte_rcu_qsbr* grace, unsigned id) {
        std::vector<std::unique_ptr<TestFrame>> held;
        for (size_t first = 0; first < frames.size(); first += dp::kBurstSize) {
            dp::Batch batch;
            held.clear();
            for (size_t i = first; i < frames.size() && batch.count < dp::kBurstSize; ++i) {
                held.push_back(std::make_unique<TestFrame>(frames[i]));
                batch.frames[batch.count] = held.back()->frame;
                batch.admit(batch.count, in_port);
                ++batch.count;
            }
            dp::run_pipeline(batch, snap, ctx);
            for (uint16_t i = 0; i < batch.count; ++i) {
                const bool ok = batch.meta[i].verdict == dp::Verdict::forward && batch.meta[i].out_port == out_port;
                forwarded += ok;
                wrong += !ok;
            }
            rte_rcu_qsbr_quiescent(grace, id);
        }
    }
};

class ConntrackConcurrency : public GatewayTest {
protected:
    void SetUp() override {
        std::string yaml = kSiteYaml;
        yaml.replace(yaml.find("capacity: 4096"), 14, "capacity: 16384");
        load(yaml);
        const size_t size = rte_rcu_qsbr_get_memsize(kWorkers);
        grace_ = static_cast<rte_rcu_qsbr*>(rte_zmalloc("test_rcu", size, RTE_CACHE_LINE_SIZE));
        ASSERT_NE(grace_, nullptr);
        ASSERT_EQ(rte_rcu_qsbr_init(grace_, kWorkers), 0);
    }
    void TearDown() override { rte_free(grace_); }

    static constexpr unsigned kWorkers = 3;
    rte_rcu_qsbr* grace_ = nullptr;
};

TEST_F(ConntrackConcurrency, BothDirectionsOnDifferentWorkersRacingInsertsWhileTheSweepRuns) {
    // Connections made long before: the workers' clock is past their timeout.
    ctx_.now_ns = kStart;
    for (uint32_t c = 0; c < kExpired; ++c) {
        TestFrame f(request(static_cast<uint16_t>(kExpiredPort + c), 0));
        ASSERT_EQ(run(f, kWebPort).verdict, dp::Verdict::forward);
    }
    ASSERT_EQ(conntrack_->size(), kExpired);

    // Each connection's requests (twice) and replies (twice).
    std::vector<std::vector<uint8_t>> requests, replies;
    for (uint32_t c = 0; c < kConnections; ++c)
        for (uint8_t k = 0; k < 2; ++k) {
            requests.push_back(request(static_cast<uint16_t>(kFirstPort + c), k));
            replies.push_back(reply(static_cast<uint16_t>(kFirstPort + c), k));
        }

    Worker workers[kWorkers];
    std::barrier start(kWorkers + 1);
    std::atomic<unsigned> running{kWorkers};
    std::vector<std::thread> threads;
    for (unsigned id = 0; id < kWorkers; ++id)
        threads.emplace_back([&, id] {
            // An lcore id, as calyx's workers have: rte_hash's multi-writer add keeps a free-slot
            // cache per lcore.
            const bool registered = rte_thread_register() == 0;
            rte_rcu_qsbr_thread_register(grace_, id);
            rte_rcu_qsbr_thread_online(grace_, id);
            start.arrive_and_wait();
            if (!registered)
                workers[id].wrong = UINT64_MAX;  // reported below
            else if (id == 1)
                workers[id].send(replies, kAppPort, kWebPort, *snap_, grace_, id);
            else
                workers[id].send(requests, kWebPort, kAppPort, *snap_, grace_, id);
            rte_rcu_qsbr_thread_offline(grace_, id);
            rte_rcu_qsbr_thread_unregister(grace_, id);
            if (registered) rte_thread_unregister();
            running.fetch_sub(1);
        });
    // The control plane's sweep, in small steps while the workers run, then a last round.
    uint32_t swept = 0;
    start.arrive_and_wait();
    while (running.load() != 0) swept += conntrack_->sweep(kLater, 64, grace_);
    for (auto& t : threads) t.join();
    swept += conntrack_->sweep(kLater, conntrack_->slots(), grace_);

    for (unsigned id = 0; id < kWorkers; ++id) {
        EXPECT_EQ(workers[id].wrong, 0u) << "worker " << id << ": packets not forwarded";
        EXPECT_EQ(workers[id].forwarded, requests.size()) << "worker " << id;
        for (uint16_t port = 0; port < 3; ++port) {
            uint64_t drops = 0;
            for (uint64_t d : workers[id].counters->ports[port].drops) drops += d;
            EXPECT_EQ(drops, 0u) << "worker " << id << ", port " << port;
        }
    }
    uint64_t created = 0;
    for (const auto& w : workers) created += w.counters->ct_created;
    EXPECT_EQ(created, kConnections) << "a connection made twice: a racing insert started it again";
    EXPECT_EQ(swept, kExpired) << "the sweep removes exactly the expired connections";
    EXPECT_EQ(conntrack_->size(), kConnections) << "one key per connection, whoever inserted it";
    const uint16_t web_zone = zones_.at("public"), app_zone = zones_.at("nat");
    for (uint32_t c = 0; c < kConnections; ++c) {
        const auto k = dp::make_ct_key(ipproto::kUdp, {web_zone, kWebIp, static_cast<uint16_t>(kFirstPort + c)},
                                       {app_zone, kAppIp, 5000});
        const int32_t pos = conntrack_->lookup(k.key);
        ASSERT_GE(pos, 0) << "connection " << c << " is missing";
        const dp::CtEntry& e = conntrack_->entry(pos);
        EXPECT_FALSE(e.dead()) << "connection " << c;
        EXPECT_TRUE(e.state.replied()) << "connection " << c << ": one direction was not seen";
    }
    for (uint32_t c = 0; c < kExpired; ++c) {
        const auto k = dp::make_ct_key(ipproto::kUdp, {web_zone, kWebIp, static_cast<uint16_t>(kExpiredPort + c)},
                                       {app_zone, kAppIp, 5000});
        EXPECT_LT(conntrack_->lookup(k.key), 0) << "expired connection " << c << " is still there";
    }
}

}  // namespace
}  // namespace calyx::test
