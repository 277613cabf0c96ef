// The running router on the control (main) lcore: owns the EAL resources, the ports, the
// workers and the published snapshot. The main lcore never polls packets; it starts and
// stops workers, opens and closes ports, and swaps snapshots.
#pragma once

#include <expected>
#include <functional>
#include <map>
#include <optional>
#include <mutex>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include "calyx/config.hpp"
#include "dp/conntrack.hpp"
#include "dp/counters.hpp"
#include "dp/nat.hpp"
#include "dp/neighbor.hpp"
#include "dp/snapshot.hpp"
#include "dp/live_restore.hpp"
#include "dp/state_file.hpp"
#include "cp/metrics.hpp"
#include "cp/site_routes.hpp"
#include "cp/snapshot_builder.hpp"
#include "daemon/site_routing.hpp"
#include "io/ethdev_port.hpp"
#include "io/vhost_port.hpp"
#include "io/worker.hpp"

struct rte_mempool;

namespace calyx::daemon {

class Router {
public:
    // Requires an initialised EAL whose lcores include cfg.dataplane.workers.
    // What a start does differently when it takes over from a running calyx (--take-over).
    struct Neighbor {
        Ipv4Addr ip;
        MacAddr mac;
    };
    struct StartHooks {
        // Called once everything that needs no port is ready and the running calyx's state file
        // is pre-restored, before any port is opened: the running calyx is asked to stop and
        // release its ports here, and answers with its uplink's resolved neighbours (learnt
        // before our workers start, so no packet waits for ARP). `state_generation`: the
        // generation of the state file whose table was pre-restored (nullopt: there was none),
        // which the running calyx must have for the table to be its own. An error stops the
        // start (the running calyx, not stopped or resuming, serves on).
        std::function<std::expected<std::vector<Neighbor>, std::string>(std::optional<uint64_t> state_generation)>
            before_ports;
        // Called right after the running calyx's state file was opened (taken over: before the
        // pre-restore): the table read is that of whoever holds the locks now.
        std::function<void()> state_file_opened;
        // Called once before_ports returned (the running calyx stopped): a newer configuration
        // than the one the start began with, if one came meanwhile (with a datastore, a site
        // the running calyx had applied; without, the file it reloaded). The restore completes
        // with it, so that the connections of an instance it adds are kept. An error stops the
        // start (the running calyx resumes, its table as it was).
        std::function<std::expected<std::optional<config::Config>, std::string>()> config_at_hand_over;
        // Keep the restored state file under its temporary name until commit_state_file() (the
        // previous process may still resume with its own).
        bool defer_state_commit = false;
    };
    static std::expected<std::unique_ptr<Router>, std::string> start(config::Config cfg, StartHooks hooks);
    static std::expected<std::unique_ptr<Router>, std::string> start(config::Config cfg);
    // The restored state file takes the configured name (after a deferred start).
    std::expected<void, std::string> commit_state_file();

    // Hand-over (doc/operations.md "Upgrading and restarting"). release_for_hand_over() stops
    // the workers and closes every port (vhost-user sockets removed, the uplink closed), keeping
    // the tables, the state file and the configuration; resume_after_hand_over() opens the ports
    // again and restarts the workers, for a successor that failed.
    // Returns when its workers had stopped (CLOCK_MONOTONIC ns): the start of the gap.
    uint64_t release_for_hand_over();
    // The uplink's resolved neighbours, for a successor (none without an uplink).
    std::vector<Neighbor> resolved_neighbors() const;
    std::expected<void, std::string> resume_after_hand_over();
    // When the workers were last launched (CLOCK_MONOTONIC ns): the end of a hand-over's gap.
    uint64_t workers_started_ns() const { return workers_started_ns_; }
    ~Router();  // stops workers, closes ports

    // Applies a new validated configuration: opens ports of new instances, publishes the
    // new snapshot, then closes ports of removed instances after the grace period. On error
    // nothing changes.
    std::expected<void, std::string> apply(config::Config cfg);

    const config::Config& config() const { return cfg_; }
    uint64_t generation() const { return generation_; }
    // The generation of this process's state file (one more than the file its start restored,
    // 0 for a new one): a successor names it when it asks this process to hand over.
    uint64_t state_generation() const;
    // Sum over workers of one port's counters since its port was opened.
    dp::PortCounters port_counters(uint16_t slot) const;
    std::vector<const dp::WorkerCounters*> worker_counters() const;
    // Human-readable per-port counters and drop reasons (log on SIGUSR1 and at exit).
    std::string counters_report() const;
    const std::map<std::string, std::unique_ptr<io::VhostPort>>& ports() const { return ports_; }
    const dp::ConnTable& conntrack() const { return *conntrack_; }
    // The uplink's port and ARP cache; null without an uplink.
    const io::EthdevPort* uplink() const { return uplink_.get(); }
    const dp::NeighborTable* neighbors() const { return neighbors_.get(); }
    // The host interface's tap; null without one.
    const io::EthdevPort* host_interface() const { return host_.get(); }

    // The uplink always has this port slot (counters, metrics); instances never get it.
    static constexpr uint16_t kUplinkSlot = dp::kMaxPorts - 1;
    // Likewise the host interface.
    static constexpr uint16_t kHostSlot = dp::kMaxPorts - 2;
    uint64_t conntrack_expired() const { return ct_expired_; }
    // What the start restored from the previous process's state file (empty: there was none).
    const std::string& restore_report() const { return restore_report_; }
    const dp::CtRestoreStats& restored() const { return restored_; }

    // Periodic control-plane work (main lcore), every ~100 ms: expires a slice of the
    // connection table; resolves and refreshes the uplink's neighbours by ARP; reads the
    // uplink's link state; follows the site's imported routes (a change publishes a new
    // snapshot) and keeps the exported ones.
    void housekeeping();

    // Whether each instance port's socket has a peer (QEMU connected), by instance name: the
    // datastore reports these as the endpoints' status. Safe from any thread.
    std::map<std::string, bool> ports_connected() const;

    // Counts a reload attempt (a rejected file never reaches apply()).
    void count_reload(bool ok);
    // Everything metrics report, summed over workers. Safe from any thread.
    cp::RouterSample sample() const;
    // Runs f(config, snapshot, connection table) under the control lock: one consistent view
    // for calyxctl's queries. Safe from any thread; f must not call back into the Router.
    template <typename F>
    auto inspect(F&& f) const {
        std::lock_guard lock(control_);
        return f(static_cast<const config::Config&>(cfg_), static_cast<const dp::Snapshot&>(*current_),
                 static_cast<const dp::ConnTable&>(*conntrack_));
    }

private:
    Router() = default;
    std::expected<void, std::string> launch_workers();
    std::expected<void, std::string> relaunch_workers();
    // The host interface's tap (`host_interface:`), at start and after a failed hand-over.
    std::expected<void, std::string> open_host(const config::Config& cfg);
    std::expected<void, std::string> open_uplink_port(const config::UplinkConfig& up);
    // The uplink's NAT allocator, ARP cache and control ring (before the restore claims ports);
    // open_uplink_port() then opens the port itself.
    std::expected<void, std::string> prepare_uplink(const config::UplinkConfig& up, const dp::StateParams& params);
    // Takes the previous process's numbering and connections (before the first apply): all of
    // them if that process is gone; if it still serves (a take-over), most of them now and
    // what changed meanwhile in finish_restore(), once it stopped (dp/live_restore.hpp); all of
    // them then if its file has no change map.
    void begin_restore(const dp::StateFile& previous, const config::Config& cfg, bool predecessor_runs);
    void finish_restore(const dp::StateFile& previous, const config::Config& cfg);
    // Zones and accounts from the previous file's names; kept_accounts_: those of instances
    // still configured.
    void take_names(const dp::StateNames& names, const config::Config& cfg);
    std::string restore_stats_report() const;
    // What build_snapshot needs, with `opened` the ports apply() opened for it.
    cp::SnapshotInputs snapshot_inputs(const std::map<std::string, std::unique_ptr<io::VhostPort>>& opened,
                                       const std::map<std::string, uint16_t>& accounts);
    // The imported routes `cfg` accepts; logs the refused ones when they changed.
    void check_imported(const config::Config& cfg);
    // A new snapshot of the running configuration (the imported routes changed).
    void rebuild();
    void resolve_neighbors(uint64_t now_ns);
    void send_arp_request(const dp::NeighborTable::Request& req);
    dp::PortCounters raw_port_counters(uint16_t slot) const;
    void publish(std::unique_ptr<dp::Snapshot> next);
    // Accounts for `cfg`'s instances: the running ones keep theirs, new ones get a free one.
    std::expected<std::map<std::string, uint16_t>, std::string> assign_accounts(const config::Config& cfg) const;

    // Serialises the control plane's own threads (main lcore, metrics scrapes); workers
    // never take it.
    mutable std::mutex control_;
    config::Config cfg_;
    uint64_t generation_ = 0;
    uint64_t reloads_ok_ = 0, reloads_failed_ = 0;
    rte_mempool* pool_ = nullptr;
    std::unique_ptr<uint8_t[], void (*)(void*)> grace_mem_{nullptr, nullptr};
    io::DataplaneShared shared_;
    std::vector<std::unique_ptr<dp::WorkerCounters>> counters_;
    std::vector<std::unique_ptr<dp::FragmentVerdicts>> fragments_;
    std::unique_ptr<dp::NatPortAllocator> nat_;  // with an uplink; outlives conntrack_'s use of it
    std::unique_ptr<dp::StateFile> state_;  // holds conntrack_'s entries: declared before it
    std::unique_ptr<dp::ConnTable> conntrack_;
    dp::CtRestoreStats restored_;
    std::string restore_report_;
    std::unique_ptr<dp::LiveRestore> live_restore_;  // between begin_restore and finish_restore
    dp::StateNames restored_names_;                  // the names it was restored with
    bool restore_after_stop_ = false;                // a predecessor's file without a change map
    std::set<uint16_t> kept_accounts_;
    uint64_t ct_expired_ = 0;
    std::unique_ptr<dp::NeighborTable> neighbors_;
    std::unique_ptr<io::EthdevPort> uplink_;
    std::unique_ptr<io::EthdevPort> host_;  // the host interface's tap
    std::unique_ptr<SiteRouting> site_;     // with `routing:`
    bool handed_over_ = false;              // a successor took the ports and the exported routes
    std::vector<cp::SiteRoute> site_routes_;  // the imported routes the snapshot routes by
    std::vector<std::string> refused_routes_;  // as last logged
    uint64_t snapshot_serial_ = 0;  // Snapshot::generation: every publish, reloads or routes
    rte_ring* uplink_control_tx_ = nullptr;
    bool uplink_was_up_ = false;  // at the last housekeeping tick
    uint64_t arp_requests_sent_ = 0;
    std::map<std::string, uint16_t> zones_;  // network name -> conntrack zone, never reused
    // Instance name -> account (dp/limits.hpp); reused only once nothing is charged to it.
    std::map<std::string, uint16_t> accounts_;
    std::vector<io::WorkerArgs> worker_args_;
    uint64_t workers_started_ns_ = 0;
    std::string state_path_;  // the configured name of the state file
    std::vector<unsigned> worker_lcores_;
    std::map<std::string, std::unique_ptr<io::VhostPort>> ports_;  // by instance name
    std::unique_ptr<dp::Snapshot> current_;
    // What a slot's counters held when its current port was opened (slots are reused).
    std::vector<dp::PortCounters> baseline_ = std::vector<dp::PortCounters>(dp::kMaxPorts);
};

}  // namespace calyx::daemon
