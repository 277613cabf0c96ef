#include "daemon/router.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <random>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <rte_errno.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>

#include "calyx/headers.hpp"

#include "cp/reload.hpp"
#include "cp/snapshot_builder.hpp"
#include "daemon/host_interface.hpp"
#include "io/clock.hpp"
#include "io/eal.hpp"

namespace calyx::daemon {
namespace {

// How long calyx keeps forwarding after withdrawing its routes at stop: BIRD learns of it by a
// netlink event and sends its BGP withdrawal at once (a few ms measured); the rest is margin.
constexpr auto kWithdrawalDrain = std::chrono::milliseconds(500);
constexpr unsigned kMempoolCache = 256;
constexpr uint32_t kVlanAndFcs = 8;

// Buffers large enough that no frame of any configured MTU needs a chain.
uint16_t data_room_for(const config::Config& cfg) {
    uint32_t mtu = 1500;
    for (const auto& n : cfg.networks) mtu = std::max<uint32_t>(mtu, n.mtu);
    const uint32_t frame = mtu + sizeof(uint8_t[14]) + kVlanAndFcs;
    return static_cast<uint16_t>(std::max<uint32_t>(RTE_MBUF_DEFAULT_DATAROOM, frame) +
                                 RTE_PKTMBUF_HEADROOM);
}

void make_socket_dir(const std::string& socket) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(socket).parent_path(), ec);
}

}  // namespace

std::expected<std::unique_ptr<Router>, std::string> Router::start(config::Config cfg) {
    return start(std::move(cfg), StartHooks{});
}

std::expected<std::unique_ptr<Router>, std::string> Router::start(config::Config cfg, StartHooks hooks) {
    std::unique_ptr<Router> r(new Router());
    r->pool_ = rte_pktmbuf_pool_create("calyx_mbufs", cfg.dataplane.mbufs, kMempoolCache, 0,
                                       data_room_for(cfg), static_cast<int>(rte_socket_id()));
    if (!r->pool_)
        return std::unexpected(fmt::format("cannot create the packet buffer pool ({} buffers): {}",
                                           cfg.dataplane.mbufs, rte_strerror(rte_errno)));
    const auto workers = static_cast<uint32_t>(cfg.dataplane.workers.size());
    const size_t grace_size = rte_rcu_qsbr_get_memsize(workers);
    r->grace_mem_ = {static_cast<uint8_t*>(rte_zmalloc("calyx_rcu", grace_size, RTE_CACHE_LINE_SIZE)),
                     rte_free};
    if (!r->grace_mem_) return std::unexpected("cannot allocate the RCU state");
    r->shared_.grace = reinterpret_cast<rte_rcu_qsbr*>(r->grace_mem_.get());
    rte_rcu_qsbr_init(r->shared_.grace, workers);
    r->worker_lcores_ = cfg.dataplane.workers;
    for (unsigned lcore : r->worker_lcores_)
        if (!rte_lcore_is_enabled(lcore))
            return std::unexpected(fmt::format("worker lcore {} is not enabled in EAL", lcore));

    // The previous process's state, if it left one: its connections continue here. A file this
    // calyx cannot read stops the start (never misread, never silently dropped).
    const std::string state_path = cfg.state_path();
    r->state_path_ = state_path;
    // Taking over, the file is the running process's: its change map is written (cleared) by
    // the restore that runs while that process still serves.
    const bool predecessor_runs = static_cast<bool>(hooks.before_ports);
    auto previous = dp::StateFile::open(state_path, predecessor_runs ? dp::StateFile::Access::live
                                                                     : dp::StateFile::Access::read_only);
    if (!previous) return std::unexpected(previous.error());
    if (hooks.state_file_opened) hooks.state_file_opened();
    dp::StateParams params{dp::random_secret(), dp::random_secret(), dp::NatPortAllocator::kDefaultPartitions,
                           rte_get_tsc_hz()};
    if (*previous) {
        // The same NAT pools (partition hash and count), so restored ports never collide.
        const dp::StateParams before = (*previous)->params();
        params.ct_secret = before.ct_secret;
        params.nat_secret = before.nat_secret;
        if (before.nat_partitions != 0) params.nat_partitions = before.nat_partitions;
    }
    auto table = dp::ConnTable::create(
        cfg.dataplane.conntrack.capacity, static_cast<int>(rte_socket_id()), params.ct_secret,
        [&](size_t slots) -> std::expected<dp::CtStorage, std::string> {
            dp::StateFile::remove_abandoned_temporaries(state_path);
            auto file = dp::StateFile::create(dp::StateFile::temporary_path(state_path), slots, params);
            if (!file) return std::unexpected(file.error());
            r->state_ = std::move(*file);
            if (!r->state_->in_memory())
                fmt::print(stderr,
                           "calyx: warning: state file {} is not in memory (tmpfs or hugetlbfs): the kernel writes "
                           "back every page that connections change, which slows the data plane (new connections "
                           "to a fifth); put dataplane.state_file under /run or /dev/hugepages\n",
                           state_path);
            return dp::CtStorage{r->state_->entries(), r->state_->keys(), r->state_->changes()};
        });
    if (!table) return std::unexpected(table.error());
    r->conntrack_ = std::move(*table);
    r->conntrack_->set_grace(r->shared_.grace);
    if (cfg.uplink)
        if (auto up = r->prepare_uplink(*cfg.uplink, params); !up) return std::unexpected(up.error());
    // The previous process's connections: all of them if it is gone; while it still serves if
    // it runs (and its file has a change map), the rest once it stopped.
    if (*previous) r->begin_restore(**previous, cfg, predecessor_runs);
    // A running predecessor stops here (its header, read above, does not change): from now on
    // its entries hold still and its ports are free.
    std::vector<Neighbor> neighbors;
    if (hooks.before_ports) {
        // The first snapshot is built in the gap: its routing table's memory is not (~60 ms).
        cp::warm_routing_table_memory();
        auto ready = hooks.before_ports(*previous ? std::optional<uint64_t>((*previous)->generation()) : std::nullopt);
        if (!ready) return std::unexpected(ready.error());
        neighbors = std::move(*ready);
        if (hooks.config_at_hand_over) {
            auto newer = hooks.config_at_hand_over();
            if (!newer) return std::unexpected(newer.error());
            if (*newer) cfg = std::move(**newer);
        }
    }
    if (*previous) r->finish_restore(**previous, cfg);
    if (cfg.uplink) {
        if (auto up = r->open_uplink_port(*cfg.uplink); !up) return std::unexpected(up.error());
        r->neighbors_->pin(cfg.uplink->gateway, io::now_ns());
        for (const Neighbor& n : neighbors) r->neighbors_->learn(n.ip, n.mac, io::now_ns(), true);
    }
    if (cfg.host_interface)
        if (auto host = r->open_host(cfg); !host) return std::unexpected(host.error());
    if (cfg.routing) {
        auto site = SiteRouting::start(*cfg.routing, io::now_ns());
        if (!site) return std::unexpected(site.error());
        r->site_ = std::move(*site);
    }

    if (auto applied = r->apply(std::move(cfg)); !applied) return std::unexpected(applied.error());
    // Complete: the new file replaces the previous one (until here a crash leaves that as it was).
    if (*previous) r->state_->set_generation((*previous)->generation() + 1);
    previous->reset();
    if (!hooks.defer_state_commit)
        if (auto renamed = r->commit_state_file(); !renamed) return std::unexpected(renamed.error());
    if (auto launched = r->launch_workers(); !launched) return std::unexpected(launched.error());
    return r;
}

uint64_t Router::state_generation() const { return state_->generation(); }

std::expected<void, std::string> Router::commit_state_file() {
    if (state_->path() == state_path_) return {};
    return state_->rename_to(state_path_);
}

std::expected<void, std::string> Router::open_host(const config::Config& cfg) {
    auto host = open_host_interface(kHostSlot, cfg, uplink_->mac(), pool_, static_cast<uint16_t>(worker_lcores_.size()));
    if (!host) return std::unexpected(host.error());
    host_ = std::move(*host);
    host_->refresh_link();
    baseline_[kHostSlot] = raw_port_counters(kHostSlot);
    shared_.ports[kHostSlot].store(host_.get());
    return {};
}

uint64_t Router::release_for_hand_over() {
    std::lock_guard lock(control_);
    shared_.stop.store(true);
    for (unsigned lcore : worker_lcores_) rte_eal_wait_lcore(lcore);
    const uint64_t stopped = io::monotonic_ns();
    // No worker runs: ports close at once, no grace period needed. Server-mode sockets are
    // removed, so that the successor creates its own.
    for (auto& slot : shared_.ports) slot.store(nullptr);
    ports_.clear();
    host_.reset();  // the successor creates the host interface again
    uplink_.reset();
    // The exported routes are the successor's now: this process must not withdraw them.
    handed_over_ = true;
    return stopped;
}

std::vector<Router::Neighbor> Router::resolved_neighbors() const {
    std::vector<Neighbor> out;
    if (!neighbors_) return out;
    for (const dp::NeighborEntryView& e : neighbors_->entries())
        if (e.mac && (e.state == dp::NeighborState::reachable || e.state == dp::NeighborState::stale))
            out.push_back({e.ip, *e.mac});
    return out;
}

std::expected<void, std::string> Router::resume_after_hand_over() {
    if (cfg_.uplink)
        if (auto up = open_uplink_port(*cfg_.uplink); !up) return std::unexpected(up.error());
    if (cfg_.host_interface)
        if (auto host = open_host(cfg_); !host) return std::unexpected(host.error());
    handed_over_ = false;
    // Every instance's port again (none is open), through the ordinary reload path.
    config::Config cfg = cfg_;
    if (auto applied = apply(std::move(cfg)); !applied) return std::unexpected(applied.error());
    return relaunch_workers();
}

std::expected<void, std::string> Router::relaunch_workers() {
    shared_.stop.store(false);
    for (size_t i = 0; i < worker_lcores_.size(); ++i)
        if (int rc = rte_eal_remote_launch(io::worker_main, &worker_args_[i], worker_lcores_[i]); rc != 0)
            return std::unexpected(fmt::format("cannot launch worker on lcore {}: {}", worker_lcores_[i],
                                               rte_strerror(-rc)));
    workers_started_ns_ = io::monotonic_ns();
    return {};
}

std::expected<void, std::string> Router::launch_workers() {
    worker_args_.resize(worker_lcores_.size());
    std::random_device random;
    for (size_t i = 0; i < worker_lcores_.size(); ++i) {
        counters_.push_back(std::make_unique<dp::WorkerCounters>());
        // Keyed: which datagrams share a set, and which outside sources share a budget, is
        // nothing a sender can work out.
        fragments_.push_back(std::make_unique<dp::FragmentVerdicts>(uint64_t{random()} << 32 | random()));
        worker_args_[i] = io::WorkerArgs{&shared_, static_cast<unsigned>(i), counters_.back().get(),
                                         fragments_.back().get()};
    }
    for (size_t i = 0; i < worker_lcores_.size(); ++i) {
        if (int rc = rte_eal_remote_launch(io::worker_main, &worker_args_[i], worker_lcores_[i]); rc != 0)
            return std::unexpected(fmt::format("cannot launch worker on lcore {}: {}",
                                               worker_lcores_[i], rte_strerror(-rc)));
    }
    workers_started_ns_ = io::monotonic_ns();
    return {};
}

void Router::take_names(const dp::StateNames& names, const config::Config& cfg) {
    // The previous process's numbers for networks and instances, as its entries carry them:
    // every zone (zones are never reused), the accounts of the instances still configured.
    restored_names_ = names;
    zones_ = names.zones;
    accounts_.clear();
    kept_accounts_.clear();
    for (const auto& [instance, account] : names.accounts)
        if (cfg.find_instance(instance) && account < dp::kMaxAccounts) {
            accounts_[instance] = account;
            kept_accounts_.insert(account);
        }
}

namespace {
double ms_between(std::chrono::steady_clock::time_point from, std::chrono::steady_clock::time_point to) {
    return std::chrono::duration<double, std::milli>(to - from).count();
}
}  // namespace

void Router::begin_restore(const dp::StateFile& previous, const config::Config& cfg, bool predecessor_runs) {
    // A running predecessor whose file has no change map (an older calyx): everything after it
    // stopped, as before.
    if (predecessor_runs && !previous.changes()) {
        restore_after_stop_ = true;
        return;
    }
    const bool live = predecessor_runs;
    const auto started = std::chrono::steady_clock::now();
    take_names(previous.names(), cfg);
    dp::CtRestoreSource from = previous.restore_source();
    from.new_tsc_hz = rte_get_tsc_hz();
    const auto keep = [this](uint16_t account) { return kept_accounts_.contains(account); };
    if (!live) {
        restored_ = conntrack_->restore(from, io::now_ns(), keep);
        restore_report_ = fmt::format("restored {} connections ({} masqueraded) from {} (generation {}) in {:.0f} ms",
                                      restored_.connections, restored_.masqueraded, previous.path(),
                                      previous.generation(), ms_between(started, std::chrono::steady_clock::now()));
        return;
    }
    live_restore_ = std::make_unique<dp::LiveRestore>(*conntrack_, from, previous.changes());
    live_restore_->restore_all(io::now_ns(), keep);
    // What changed meanwhile, while it still serves: each pass reads what changed during the
    // one before, so a few leave little for the gap.
    constexpr int kPasses = 3;
    constexpr size_t kFewEnough = 256;
    size_t changed = 0;
    int passes = 0;
    while (passes < kPasses) {
        ++passes;
        changed = live_restore_->catch_up(io::now_ns(), keep);
        if (changed <= kFewEnough) break;
    }
    const auto done = std::chrono::steady_clock::now();
    restore_report_ = fmt::format("pre-restored {} connections from {} (generation {}) in {:.0f} ms while its "
                                  "process served ({} catch-up passes, the last read {} changed entries again)",
                                  live_restore_->stats().connections, previous.path(), previous.generation(),
                                  ms_between(started, done), passes, changed);
}

void Router::finish_restore(const dp::StateFile& previous, const config::Config& cfg) {
    if (restore_after_stop_) {
        restore_after_stop_ = false;
        begin_restore(previous, cfg, false);
    }
    if (!live_restore_) {
        restore_report_ += restore_stats_report();
        return;
    }
    const auto started = std::chrono::steady_clock::now();
    const auto keep = [this](uint16_t account) { return kept_accounts_.contains(account); };
    // A reload meanwhile may have renumbered what `keep` decides by: read everything again.
    // Names only added (an instance added, by a reload or a site applied meanwhile) and the
    // configuration we finish with keeping more accounts, none fewer: read again only what was
    // refused as unowned.
    const dp::StateNames now = previous.names();
    const bool only_added = std::ranges::includes(now.zones, restored_names_.zones) &&
                            std::ranges::includes(now.accounts, restored_names_.accounts);
    const std::set<uint16_t> kept_before = kept_accounts_;
    take_names(now, cfg);
    if (!only_added || !std::ranges::includes(kept_accounts_, kept_before))
        live_restore_->mark_all_changed();
    else if (kept_accounts_ != kept_before)
        live_restore_->retry_unowned();
    const size_t changed = live_restore_->catch_up(io::now_ns(), keep);
    restored_ = live_restore_->stats();
    live_restore_.reset();
    restore_report_ = fmt::format("restored {} connections ({} masqueraded): {}; after it stopped, {} changed entries "
                                  "read again in {:.1f} ms",
                                  restored_.connections, restored_.masqueraded, restore_report_, changed,
                                  ms_between(started, std::chrono::steady_clock::now())) +
                      restore_stats_report();
}

std::string Router::restore_stats_report() const {
    return fmt::format(
        "; not restored: {} being written when it stopped, {} expired, {} of removed instances, {} without room, {} "
        "whose NAT port this uplink cannot give",
        restored_.torn, restored_.expired, restored_.unowned, restored_.full, restored_.nat_refused);
}

std::expected<void, std::string> Router::prepare_uplink(const config::UplinkConfig& up, const dp::StateParams& params) {
    // The secret keys the port partitions and probe starts (RFC 6056): not guessable outside.
    auto nat = dp::NatPortAllocator::create({up.nat_port_min, up.nat_port_max}, params.nat_partitions,
                                            params.nat_secret);
    if (!nat) return std::unexpected(fmt::format("uplink: {}", nat.error()));
    nat_ = std::make_unique<dp::NatPortAllocator>(std::move(*nat));
    conntrack_->set_nat(nat_.get());
    neighbors_ = std::make_unique<dp::NeighborTable>();
    uplink_control_tx_ = rte_ring_create("calyx_uplink_ctl", 256, static_cast<int>(rte_socket_id()),
                                         RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!uplink_control_tx_)
        return std::unexpected(fmt::format("uplink: cannot create its control ring: {}", rte_strerror(rte_errno)));
    shared_.uplink_control_tx = uplink_control_tx_;
    return {};
}

std::expected<void, std::string> Router::open_uplink_port(const config::UplinkConfig& up) {
    auto port = io::EthdevPort::open(kUplinkSlot, up, pool_, up.queue_count(worker_lcores_.size()));
    if (!port) return std::unexpected(fmt::format("{}:{}:{}: uplink: {}", up.where.file, up.where.line,
                                                  up.where.column, port.error()));
    uplink_ = std::move(*port);
    uplink_->refresh_link();
    uplink_was_up_ = false;
    baseline_[kUplinkSlot] = raw_port_counters(kUplinkSlot);
    shared_.ports[kUplinkSlot].store(uplink_.get());
    return {};
}

Router::~Router() {
    // First, so BIRD withdraws this host's instances while calyx goes. BIRD's BGP sessions run
    // through the host interface, that is through this calyx: keep forwarding a moment so
    // the withdrawal reaches its peers, or they keep the routes until their hold timer and
    // then, with graceful restart, for its restart time.
    // After a hand-over the routes belong to the successor and stay.
    if (!handed_over_ && site_ && site_->withdraw() > 0 && host_) std::this_thread::sleep_for(kWithdrawalDrain);
    shared_.stop.store(true);
    for (unsigned lcore : worker_lcores_) rte_eal_wait_lcore(lcore);
    // Workers are gone: nothing reads the snapshot or the ports any more.
    shared_.snapshot.store(nullptr);
    for (auto& slot : shared_.ports) slot.store(nullptr);
    uplink_.reset();
    host_.reset();
    if (uplink_control_tx_) {
        void* m = nullptr;
        while (rte_ring_dequeue(uplink_control_tx_, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
        rte_ring_free(uplink_control_tx_);
    }
    ports_.clear();
    current_.reset();
    rte_mempool_free(pool_);
}

std::expected<void, std::string> Router::apply(config::Config cfg) {
    std::lock_guard lock(control_);
    // A reload may come from calyxctl's thread; removing connections frees rte_hash slots.
    if (auto registered = io::ensure_lcore_id(); !registered) return std::unexpected(registered.error());
    if (generation_ > 0)
        if (auto why = cp::restart_required(cfg_, cfg)) return std::unexpected(*why);
    // Open ports for new instances (or instances whose port changed) first; on any failure
    // close just those again and leave everything as it was.
    std::map<std::string, std::unique_ptr<io::VhostPort>> opened;
    auto port_changed = [&](const config::InstanceConfig& inst) {
        auto it = ports_.find(inst.name);
        if (it == ports_.end()) return true;
        const auto& old = it->second->config();
        return old.socket != inst.port.socket || old.mode != inst.port.mode || old.queues != inst.port.queues;
    };
    std::vector<bool> taken(dp::kMaxPorts, false);
    taken[kUplinkSlot] = true;
    taken[kHostSlot] = true;
    for (const auto& [name, port] : ports_) taken[port->slot()] = true;
    for (const config::InstanceConfig* local : cfg.local_instances()) {
        const config::InstanceConfig& inst = *local;
        if (!port_changed(inst)) continue;
        uint16_t slot = 0;
        while (slot < dp::kMaxPorts && taken[slot]) ++slot;
        if (slot == dp::kMaxPorts) return std::unexpected("too many ports");
        taken[slot] = true;
        if (inst.port.mode == config::VhostMode::server) make_socket_dir(inst.port.socket);
        auto port = io::VhostPort::open(slot, inst.port, pool_, shared_.grace,
                                        static_cast<uint16_t>(worker_lcores_.size()));
        if (!port) return std::unexpected(fmt::format("instance '{}': {}", inst.name, port.error()));
        // Counters of a reused slot start from zero for the new port.
        baseline_[slot] = raw_port_counters(slot);
        opened[inst.name] = std::move(*port);
    }
    // Kept ports whose socket's owner, group or mode changed: changed in place (the guest stays
    // connected), and back again if a later one fails.
    std::vector<std::pair<io::VhostPort*, config::PortConfig>> permissions_before;
    for (const config::InstanceConfig* local : cfg.local_instances()) {
        const config::InstanceConfig& inst = *local;
        auto it = ports_.find(inst.name);
        if (it == ports_.end() || opened.contains(inst.name)) continue;
        const config::PortConfig old = it->second->config();
        if (old.owner == inst.port.owner && old.group == inst.port.group && old.socket_mode == inst.port.socket_mode)
            continue;
        if (auto set = it->second->set_permissions(inst.port); !set) {
            for (auto& [port, before] : permissions_before) (void)port->set_permissions(before);
            return std::unexpected(fmt::format("instance '{}': {}", inst.name, set.error()));
        }
        permissions_before.emplace_back(it->second.get(), old);
    }
    auto accounts = assign_accounts(cfg);
    if (!accounts) return std::unexpected(accounts.error());
    const std::vector<cp::SiteRoute> routes_before = site_routes_;
    check_imported(cfg);
    auto next = cp::build_snapshot(cfg, snapshot_inputs(opened, *accounts), snapshot_serial_ + 1);
    if (!next) {
        for (auto& [port, before] : permissions_before) (void)port->set_permissions(before);
        site_routes_ = routes_before;
        return std::unexpected(next.error());
    }
    ++snapshot_serial_;

    // Ports first, then the snapshot that names them.
    for (auto& [name, port] : opened) shared_.ports[port->slot()].store(port.get());
    publish(std::move(*next));
    ++generation_;

    // Ports that the new snapshot no longer names: after publish's grace period no worker
    // polls them, so they can be cleared and closed.
    std::vector<std::unique_ptr<io::VhostPort>> retired;
    for (auto it = ports_.begin(); it != ports_.end();) {
        const config::InstanceConfig* inst = cfg.find_instance(it->first);
        if (!inst || !cfg.is_local(*inst) || opened.contains(it->first)) {
            shared_.ports[it->second->slot()].store(nullptr);
            retired.push_back(std::move(it->second));
            it = ports_.erase(it);
        } else {
            ++it;
        }
    }
    if (!retired.empty()) rte_rcu_qsbr_synchronize(shared_.grace, RTE_QSBR_THRID_INVALID);
    retired.clear();
    for (auto& [name, port] : opened) ports_[name] = std::move(port);
    // A removed instance's connections go with it (no snapshot charges its account any more):
    // its table room and NAT ports are free at once, and its account may serve another.
    std::set<uint16_t> gone;
    for (const auto& [name, account] : accounts_)
        if (!accounts->contains(name)) gone.insert(account);
    if (!gone.empty())
        conntrack_->remove_if([&](int32_t, const dp::CtEntry& e) { return gone.contains(e.account); },
                              shared_.grace);
    for (const uint16_t account : gone) conntrack_->accounts().reset_bucket(account);
    accounts_ = std::move(*accounts);
    if (cfg.uplink && cfg_.uplink && cfg.uplink->gateway != cfg_.uplink->gateway)
        neighbors_->pin(cfg.uplink->gateway, io::now_ns());
    cfg_ = std::move(cfg);
    // What the next process needs to read the entries: which zone and account is whose.
    if (state_) {
        dp::StateNames names{zones_, accounts_};
        if (auto written = state_->write_names(names); !written)
            fmt::print(stderr, "calyx: {} (a restart would not restore connections)\n", written.error());
    }
    // The snapshot routes to the new instances already; BIRD announces them from here. A
    // failure is logged and retried by the periodic reconcile: the data plane is right either way.
    if (site_)
        if (auto done = site_->sync_export(cfg_, io::now_ns()); !done) fmt::print(stderr, "calyx: {}\n", done.error());
    return {};
}

cp::SnapshotInputs Router::snapshot_inputs(const std::map<std::string, std::unique_ptr<io::VhostPort>>& opened,
                                           const std::map<std::string, uint16_t>& accounts) {
    cp::SnapshotInputs inputs;
    inputs.port_slot = [this, &opened](const config::InstanceConfig& inst) -> uint16_t {
        if (auto it = opened.find(inst.name); it != opened.end()) return it->second->slot();
        return ports_.at(inst.name)->slot();
    };
    inputs.zone = [this](const config::NetworkConfig& net) -> uint16_t {
        // Zone 0 is the outside world; every network gets its own for as long as calyx runs
        // (and its successors: the state file keeps them).
        if (auto it = zones_.find(net.name); it != zones_.end()) return it->second;
        uint16_t next = 1;
        for (const auto& [name, zone] : zones_) next = std::max<uint16_t>(next, zone + 1);
        zones_[net.name] = next;
        return next;
    };
    inputs.account = [&accounts](const config::InstanceConfig& inst) { return accounts.at(inst.name); };
    inputs.conntrack = conntrack_.get();
    if (uplink_) {
        inputs.uplink_slot = kUplinkSlot;
        inputs.uplink_mac = uplink_->mac();
        inputs.nat = nat_.get();
        inputs.neighbors = neighbors_.get();
    }
    if (host_) inputs.host_slot = kHostSlot;
    inputs.site_routes = &site_routes_;
    return inputs;
}

void Router::check_imported(const config::Config& cfg) {
    if (!site_) return;
    cp::ImportedRoutes checked = cp::check_imported(cfg, site_->imported());
    if (checked.rejected != refused_routes_) {
        for (const std::string& line : checked.rejected)
            if (std::ranges::find(refused_routes_, line) == refused_routes_.end())
                fmt::print(stderr, "calyx: routing: import table {}: refused {}\n", cfg.routing->import_table, line);
        refused_routes_ = std::move(checked.rejected);
    }
    // The next hops calyx will need: resolved before the first packet asks.
    for (const cp::SiteRoute& r : checked.accepted)
        for (const Ipv4Addr& hop : r.next_hops) neighbors_->want(hop, io::now_ns());
    site_routes_ = std::move(checked.accepted);
}

void Router::rebuild() {
    const std::vector<cp::SiteRoute> routes_before = site_routes_;
    check_imported(cfg_);
    if (site_routes_ == routes_before) return;  // only refused routes changed
    auto next = cp::build_snapshot(cfg_, snapshot_inputs({}, accounts_), snapshot_serial_ + 1);
    if (!next) {
        // All or nothing: the running snapshot keeps the routes it had.
        fmt::print(stderr, "calyx: routing: the imported routes cannot be applied, the previous ones stay: {}\n",
                   next.error());
        site_routes_ = routes_before;
        return;
    }
    ++snapshot_serial_;
    publish(std::move(*next));
}

std::expected<std::map<std::string, uint16_t>, std::string> Router::assign_accounts(
    const config::Config& cfg) const {
    std::map<std::string, uint16_t> out;
    std::vector<bool> taken(dp::kMaxAccounts, false);
    for (const auto& [name, account] : accounts_) taken[account] = true;
    uint16_t next = 0;
    for (const config::InstanceConfig* local : cfg.local_instances()) {
        const config::InstanceConfig& inst = *local;
        if (auto it = accounts_.find(inst.name); it != accounts_.end()) {
            out[inst.name] = it->second;
            continue;
        }
        // Free, and nothing left charged to it from an instance removed before.
        const auto holds = [&](uint16_t a) {
            return conntrack_->accounts().connections(a) != 0 || (nat_ && nat_->held(a) != 0);
        };
        while (next < dp::kMaxAccounts && (taken[next] || holds(next))) ++next;
        if (next == dp::kMaxAccounts) return std::unexpected("too many instances: no account left for their limits");
        taken[next] = true;
        out[inst.name] = next;
    }
    return out;
}

void Router::publish(std::unique_ptr<dp::Snapshot> next) {
    shared_.snapshot.store(next.get(), std::memory_order_release);
    // Wait until every worker has passed a quiescent state: none still reads the old one.
    rte_rcu_qsbr_synchronize(shared_.grace, RTE_QSBR_THRID_INVALID);
    current_ = std::move(next);
}

dp::PortCounters Router::port_counters(uint16_t slot) const {
    dp::PortCounters sum = raw_port_counters(slot);
    const dp::PortCounters& base = baseline_[slot];
    sum.rx_packets -= base.rx_packets;
    sum.rx_bytes -= base.rx_bytes;
    sum.tx_packets -= base.tx_packets;
    sum.tx_bytes -= base.tx_bytes;
    for (size_t r = 0; r < kDropReasonCount; ++r) sum.drops[r] -= base.drops[r];
    return sum;
}

dp::PortCounters Router::raw_port_counters(uint16_t slot) const {
    dp::PortCounters sum;
    for (const auto& c : counters_) {
        const dp::PortCounters& p = c->ports[slot];
        sum.rx_packets += dp::read_counter(p.rx_packets);
        sum.rx_bytes += dp::read_counter(p.rx_bytes);
        sum.tx_packets += dp::read_counter(p.tx_packets);
        sum.tx_bytes += dp::read_counter(p.tx_bytes);
        for (size_t r = 0; r < kDropReasonCount; ++r) sum.drops[r] += dp::read_counter(p.drops[r]);
    }
    return sum;
}

std::vector<const dp::WorkerCounters*> Router::worker_counters() const {
    std::vector<const dp::WorkerCounters*> out;
    for (const auto& c : counters_) out.push_back(c.get());
    return out;
}

void Router::housekeeping() {
    std::lock_guard lock(control_);
    const uint64_t now = io::now_ns();
    // A full pass over the table about every 2 s at a 100 ms tick.
    const uint32_t budget = std::max<uint32_t>(4096, conntrack_->slots() / 20);
    ct_expired_ += conntrack_->sweep(now, budget, shared_.grace);
    if (site_) {
        if (site_->follow_import(now)) rebuild();
        site_->reconcile_export(cfg_, now);
    }
    if (host_) host_->refresh_link();
    if (!uplink_) return;
    uplink_->refresh_link();
    const bool up = uplink_->connected();
    if (up && !uplink_was_up_) neighbors_->link_up(now);
    uplink_was_up_ = up;
    if (up) resolve_neighbors(now);
}

void Router::resolve_neighbors(uint64_t now_ns) {
    for (const auto& req : neighbors_->due_requests(now_ns)) send_arp_request(req);
    if (neighbors_->retiring() > 0) {
        // No worker may still be writing to an entry it found before it was retired.
        rte_rcu_qsbr_synchronize(shared_.grace, RTE_QSBR_THRID_INVALID);
        neighbors_->release_retired();
    }
}

// An ARP request from the uplink address, sent by worker 0 on its queue (the control plane
// never touches a transmit queue itself).
void Router::send_arp_request(const dp::NeighborTable::Request& req) {
    constexpr uint16_t kArpRequest = 1;
    rte_mbuf* m = rte_pktmbuf_alloc(pool_);
    if (!m) return;  // retried at the next due time
    constexpr uint16_t kMinFrame = 60;  // Ethernet minimum without FCS
    auto* bytes = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, kMinFrame));
    std::memset(bytes, 0, kMinFrame);
    auto* eth = reinterpret_cast<EtherHdr*>(bytes);
    eth->dst = req.unicast_to.value_or(MacAddr::broadcast());
    eth->src = uplink_->mac();
    eth->type = Be16::from_host(ethertype::kArp);
    auto* arp = reinterpret_cast<ArpHdr*>(bytes + sizeof(EtherHdr));
    *arp = ArpHdr{Be16::from_host(1), Be16::from_host(ethertype::kIpv4), 6, 4, Be16::from_host(kArpRequest),
                  uplink_->mac(), cfg_.uplink->address.to_be(), MacAddr{}, req.ip.to_be()};
    if (rte_ring_sp_enqueue(uplink_control_tx_, m) != 0) {
        rte_pktmbuf_free(m);
        return;
    }
    ++arp_requests_sent_;
}

std::map<std::string, bool> Router::ports_connected() const {
    std::lock_guard lock(control_);
    std::map<std::string, bool> out;
    for (const auto& [name, port] : ports_) out[name] = port->socket_connected() || port->connected();
    return out;
}

void Router::count_reload(bool ok) {
    std::lock_guard lock(control_);
    ++(ok ? reloads_ok_ : reloads_failed_);
}

cp::RouterSample Router::sample() const {
    std::lock_guard lock(control_);
    cp::RouterSample s;
    for (const auto& [name, port] : ports_)
        s.ports.push_back({name, port->connected(), port_counters(port->slot())});
    if (uplink_) s.ports.push_back({"uplink", uplink_->connected(), port_counters(kUplinkSlot)});
    if (host_) s.ports.push_back({"host_interface", host_->connected(), port_counters(kHostSlot)});
    if (nat_) {
        s.nat = true;
        s.nat_ports_tcp = nat_->in_use(ipproto::kTcp);
        s.nat_ports_udp = nat_->in_use(ipproto::kUdp);
        s.nat_ports_icmp = nat_->in_use(ipproto::kIcmp);
        s.nat_ports_capacity = nat_->range().size();
    }
    for (const auto& p : s.ports) {
        s.nat_exhausted += p.counters.drops[static_cast<size_t>(DropReason::nat_exhausted)];
        s.neighbor_unresolved += p.counters.drops[static_cast<size_t>(DropReason::neighbor_unresolved)];
    }
    for (size_t i = 0; i < counters_.size(); ++i) {
        const dp::WorkerCounters& w = *counters_[i];
        s.lcores.push_back({worker_lcores_[i], dp::read_counter(w.busy_cycles), dp::read_counter(w.total_cycles),
                            dp::read_counter(w.io_cycles), dp::read_counter(w.packets),
                            dp::read_counter(w.sleep_cycles)});
        s.conntrack_created += dp::read_counter(w.ct_created);
        s.arp_replies += dp::read_counter(w.arp_replies);
        s.icmp_echo_replies += dp::read_counter(w.icmp_echo_replies);
        s.icmp_errors_sent += dp::read_counter(w.icmp_errors_sent);
        s.icmp_errors_rate_limited += dp::read_counter(w.icmp_errors_rate_limited);
        for (size_t t = 0; t < s.dhcp_replies.size(); ++t) s.dhcp_replies[t] += dp::read_counter(w.dhcp_replies[t]);
    }
    s.conntrack_entries = conntrack_->size();
    s.conntrack_capacity = conntrack_->capacity();
    s.conntrack_expired = ct_expired_;
    s.conntrack_evicted = conntrack_->evicted();
    if (current_)
        for (const auto& inst : current_->instances)
            s.instances.push_back({inst.name, conntrack_->accounts().connections(inst.account),
                                   nat_ ? nat_->held(inst.account) : 0});
    s.config_generation = generation_;
    s.reloads_ok = reloads_ok_;
    s.reloads_failed = reloads_failed_;
    if (site_) {
        const SiteRouting::Stats& st = site_->stats();
        s.site_exported_routes = st.exported;
        s.site_imported_routes = site_routes_.size();
        s.site_refused_routes = refused_routes_.size();
        s.site_route_events = st.events;
        s.site_route_dumps = st.dumps;
        s.site_route_overflows = st.overflows;
    }
    return s;
}

std::string Router::counters_report() const {
    const cp::RouterSample s = sample();
    std::string out;
    for (const auto& p : s.ports) {
        const dp::PortCounters& c = p.counters;
        out += fmt::format("port {} ({}): rx {} pkts {} bytes, tx {} pkts {} bytes\n", p.name,
                           p.up ? "up" : "down", c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes);
        for (size_t r = 0; r < kDropReasonCount; ++r)
            if (c.drops[r]) out += fmt::format("  drop {} {}\n", kDropReasons[r].name, c.drops[r]);
    }
    out += fmt::format(
        "replies: arp {}, icmp echo {}, icmp errors {} ({} rate-limited), dhcp offer {} ack {} nak {}\n",
        s.arp_replies, s.icmp_echo_replies, s.icmp_errors_sent, s.icmp_errors_rate_limited,
        s.dhcp_replies[0], s.dhcp_replies[1], s.dhcp_replies[2]);
    for (const auto& i : s.instances)
        out += fmt::format("instance {}: {} connections, {} nat ports\n", i.name, i.connections, i.nat_ports);
    out += fmt::format("conntrack: {} entries of {}, {} created, {} expired, {} evicted\n", s.conntrack_entries,
                       s.conntrack_capacity, s.conntrack_created, s.conntrack_expired, s.conntrack_evicted);
    return out;
}

}  // namespace calyx::daemon
