// A small site for stage tests: three networks, three instances on port slots 0, 1 and 2,
// built through the real config parser and snapshot builder.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "calyx/config.hpp"
#include "cp/snapshot_builder.hpp"
#include "dp/arp.hpp"
#include "dp/batch.hpp"
#include "dp/classify.hpp"
#include "dp/conntrack.hpp"
#include "dp/forward.hpp"
#include "dp/host.hpp"
#include "dp/local.hpp"
#include "dp/nat.hpp"
#include "dp/nat_stages.hpp"
#include "dp/neighbor.hpp"
#include "dp/pipeline.hpp"
#include "dp/policy.hpp"
#include "dp/route.hpp"
#include "support/frame_builder.hpp"

namespace calyx::test {

// Every instance is in `open`, which allows everything both ways: routing tests see the
// router, not the firewall (policy_test.cpp covers security groups).
inline constexpr const char* kSiteYaml = R"(
dataplane:
  workers: [1]
  icmp_errors_per_second: 10
  icmp_errors_burst: 3
  conntrack: {capacity: 4096}
security_groups:
  - name: open
    rules:
      - {direction: ingress, protocol: any}
      - {direction: egress, protocol: any}
networks:
  - {name: public, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1, dns: [203.0.113.53]}
  - {name: nat, kind: nat, cidr: 10.10.0.0/24, gateway: 10.10.0.1, mtu: 1400}
  - {name: private, kind: private, cidr: 10.20.0.0/24, gateway: 10.20.0.1}
instances:
  - {name: web-1, network: public, mac: "52:54:00:00:01:01", ipv4: 203.0.113.10,
     security_groups: [open], port: {type: vhost-user, socket: /tmp/calyx-unit/web-1.sock}}
  - {name: app-1, network: nat, mac: "52:54:00:00:02:01", ipv4: 10.10.0.5,
     security_groups: [open], port: {type: vhost-user, socket: /tmp/calyx-unit/app-1.sock}}
  - {name: db-1, network: private, mac: "52:54:00:00:03:01", ipv4: 10.20.0.7,
     security_groups: [open], port: {type: vhost-user, socket: /tmp/calyx-unit/db-1.sock}}
)";

inline const MacAddr kGatewayMac{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}};
inline const MacAddr kWebMac{{0x52, 0x54, 0x00, 0x00, 0x01, 0x01}};
inline const MacAddr kAppMac{{0x52, 0x54, 0x00, 0x00, 0x02, 0x01}};
inline const MacAddr kDbMac{{0x52, 0x54, 0x00, 0x00, 0x03, 0x01}};
inline const Ipv4Addr kWebIp = Ipv4Addr::from_octets(203, 0, 113, 10);
inline const Ipv4Addr kWebGateway = Ipv4Addr::from_octets(203, 0, 113, 1);
inline const Ipv4Addr kAppIp = Ipv4Addr::from_octets(10, 10, 0, 5);
inline const Ipv4Addr kDbIp = Ipv4Addr::from_octets(10, 20, 0, 7);
inline constexpr uint16_t kWebPort = 0, kAppPort = 1, kDbPort = 2;
// With an `uplink:` section the uplink takes this slot; with `host_interface:`, its tap this.
inline constexpr uint16_t kUplinkPort = 3;
inline constexpr uint16_t kHostPort = 4;
inline const MacAddr kUplinkMac{{0x02, 0xca, 0x1e, 0x00, 0x00, 0x01}};

class GatewayTest : public ::testing::Test {
protected:
    void SetUp() override { load(kSiteYaml); }

    // (Re)builds the snapshot from YAML, as a reload does: port slots and zones stay, the
    // connection table is kept, the generation increases.
    void load(const std::string& yaml) {
        auto cfg = config::parse_config(yaml, "site.yaml");
        ASSERT_TRUE(cfg.has_value()) << cfg.error().front().to_string();
        config_ = *cfg;
        if (!conntrack_) {
            auto table = dp::ConnTable::create(config_.dataplane.conntrack.capacity, -1, conntrack_secret_);
            ASSERT_TRUE(table.has_value()) << table.error();
            conntrack_ = std::move(*table);
        }
        cp::SnapshotInputs in;
        in.port_slot = [&](const config::InstanceConfig& i) {
            return slots_.try_emplace(i.name, static_cast<uint16_t>(slots_.size())).first->second;
        };
        in.zone = [&](const config::NetworkConfig& n) {
            return zones_.try_emplace(n.name, static_cast<uint16_t>(zones_.size() + 1)).first->second;
        };
        in.conntrack = conntrack_.get();
        if (config_.uplink) {
            if (!nat_) {
                auto nat = dp::NatPortAllocator::create({config_.uplink->nat_port_min, config_.uplink->nat_port_max},
                                                        dp::NatPortAllocator::kDefaultPartitions, 0x5eed);
                ASSERT_TRUE(nat.has_value()) << nat.error();
                nat_ = std::make_unique<dp::NatPortAllocator>(std::move(*nat));
                conntrack_->set_nat(nat_.get());
            }
            in.uplink_slot = kUplinkPort;
            in.uplink_mac = kUplinkMac;
            in.nat = nat_.get();
            in.neighbors = &neighbors_;
        }
        if (config_.host_interface) in.host_slot = kHostPort;
        in.site_routes = &site_routes_;
        auto snap = cp::build_snapshot(config_, in, ++generation_);
        ASSERT_TRUE(snap.has_value()) << snap.error();
        snap_ = std::move(*snap);
    }

    // A batch of one frame arrived on `port`.
    static dp::Batch batch_of(const TestFrame& f, uint16_t port) {
        dp::Batch batch;
        batch.count = 1;
        batch.frames[0] = f.frame;
        batch.admit(0, port);
        return batch;
    }

    // Runs one frame through the whole pipeline as if it arrived on `port`.
    dp::PacketMeta run(TestFrame& f, uint16_t port) {
        dp::Batch batch = batch_of(f, port);
        dp::run_pipeline(batch, *snap_, ctx_);
        f.frame = batch.frames[0];
        return batch.meta[0];
    }

    uint64_t drops(uint16_t port, DropReason r) const {
        return counters_->ports[port].drops[static_cast<size_t>(r)];
    }
    uint64_t total_drops(uint16_t port) const {
        uint64_t n = 0;
        for (uint64_t d : counters_->ports[port].drops) n += d;
        return n;
    }

    config::Config config_;
    std::vector<cp::SiteRoute> site_routes_;  // imported routes the next load() routes by
    std::map<std::string, uint16_t> slots_, zones_;
    uint64_t generation_ = 0;
    std::unique_ptr<dp::NatPortAllocator> nat_;  // with an uplink; before conntrack_ (it refers to it)
    dp::NeighborTable neighbors_;
    uint64_t conntrack_secret_ = dp::random_secret();  // fixed by tests that compare runs built on bucket collisions
    std::unique_ptr<dp::ConnTable> conntrack_;  // before snap_: the snapshot points at it
    std::unique_ptr<dp::Snapshot> snap_;
    std::unique_ptr<dp::WorkerCounters> counters_ = std::make_unique<dp::WorkerCounters>();
    std::unique_ptr<dp::FragmentVerdicts> fragments_ = std::make_unique<dp::FragmentVerdicts>();
    dp::WorkerContext ctx_{*counters_, 1'000'000'000, {}, fragments_.get()};
};

// Another worker on the same snapshot (its own counters, fragment verdicts and clock), whose burst
// runs in two halves, as run_pipeline's stages: up to forward, then from commit on. Between
// them another worker (the fixture's) or the control plane may act, as they may on other
// cores between this worker's lookups and its commit.
struct SplitWorker {
    explicit SplitWorker(uint64_t now_ns) { ctx.now_ns = now_ns; }

    void until_commit(const std::vector<std::vector<uint8_t>>& bytes, uint16_t port, const dp::Snapshot& snap) {
        snap_ = &snap;
        frames.clear();
        batch = dp::Batch{};
        batch.count = static_cast<uint16_t>(bytes.size());
        for (size_t i = 0; i < bytes.size(); ++i) {
            frames.push_back(std::make_unique<TestFrame>(bytes[i]));
            batch.frames[i] = frames.back()->frame;
            batch.admit(static_cast<uint16_t>(i), port);
        }
        dp::host_stage(batch, snap, ctx);
        dp::classify_stage(batch, snap, ctx);
        dp::arp_stage(batch, snap, ctx);
        dp::nat_in_stage(batch, snap, ctx);
        dp::route_stage(batch, snap, ctx);
        dp::local_stage(batch, snap, ctx);
        opens_ = std::make_unique<dp::PendingOpens>();
        dp::policy_stage(batch, snap, ctx, *opens_);
        dp::forward_stage(batch, snap, ctx);
    }
    // The rest of the burst; the frames then hold what leaves.
    void from_commit() {
        dp::commit_stage(batch, *snap_, ctx, *opens_);
        dp::nat_out_stage(batch, *snap_, ctx);
        for (uint16_t i = 0; i < batch.count; ++i) {
            const dp::PacketMeta& m = batch.meta[i];
            if (m.verdict == dp::Verdict::drop)
                ctx.counters.count_drop(m.charged_port == dp::kNoPort ? m.in_port : m.charged_port, m.reason);
            frames[i]->frame = batch.frames[i];
        }
    }
    // Both halves at once: a whole burst.
    std::vector<dp::PacketMeta> run(const std::vector<std::vector<uint8_t>>& bytes, uint16_t port,
                                    const dp::Snapshot& snap) {
        until_commit(bytes, port, snap);
        from_commit();
        return {batch.meta, batch.meta + batch.count};
    }

    std::unique_ptr<dp::WorkerCounters> counters = std::make_unique<dp::WorkerCounters>();
    std::unique_ptr<dp::FragmentVerdicts> fragments = std::make_unique<dp::FragmentVerdicts>();
    dp::WorkerContext ctx{*counters, 0, {}, fragments.get()};
    std::vector<std::unique_ptr<TestFrame>> frames;
    dp::Batch batch;

private:
    const dp::Snapshot* snap_ = nullptr;
    std::unique_ptr<dp::PendingOpens> opens_;
};

}  // namespace calyx::test
