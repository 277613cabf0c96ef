// Keeps calyx in step with etcd, in Felix's place: lists the site's four trees at one revision,
// in pages, then watches each from the next revision; on a compaction, a failed watch or any
// error it lists again, after a backoff (100 ms doubling to 5 s) while etcd is away. Every change
// becomes a full translation (translate.hpp) applied through the daemon's all-or-nothing reload,
// coalesced over a short window so that a burst of port creations is one reload; a change that
// leaves the site as it was is no reload at all. While etcd is unreachable nothing is applied:
// the running configuration stays and forwards.
//
// It also writes what Felix writes for Neutron: the host's liveness (a status key with a lease,
// renewed every 30 s, that expires 90 s after calyx stops) and each local endpoint's status,
// "up" while its vhost-user socket is connected, "down" otherwise, "error" when calyx refuses it.
//
// One thread of its own; the daemon calls reload() (SIGHUP, calyxctl) and sample() from others.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "calyx/config.hpp"
#include "cp/datastore/etcd_client.hpp"
#include "cp/datastore/translate.hpp"
#include "cp/metrics.hpp"

namespace calyx::cp::datastore {

class Syncer {
  public:
    using Clock = std::chrono::steady_clock;
    struct Callbacks {
        // Applies a complete configuration (the host's file with the site); the new generation,
        // or why it was refused. Called from the syncer's thread and from reload().
        std::function<std::expected<uint64_t, std::string>(config::Config)> apply;
        // Whether each local port's vhost-user socket is connected, by instance name; nullopt:
        // not known yet (no status is written).
        std::function<std::optional<std::map<std::string, bool>>()> ports_connected;
        std::function<void(const std::string&)> log;
    };
    struct Options {
        std::chrono::milliseconds coalesce{100};
        std::chrono::milliseconds check_interval{1000};  // liveness: etcd answers, watches alive
        std::chrono::milliseconds port_status_interval{500};
        std::chrono::seconds host_status_interval{30};  // Felix's ReportingIntervalSecs
        std::chrono::seconds host_status_ttl{90};       // Felix's ReportingTTLSecs
        std::chrono::milliseconds backoff_min{100}, backoff_max{5000};
        int64_t page = 500;  // keys per range request
    };

    // `local`: the host's configuration as running (its file, without a site). Starts the thread.
    Syncer(config::Config local, Callbacks callbacks, Options options);
    Syncer(config::Config local, Callbacks callbacks) : Syncer(std::move(local), std::move(callbacks), Options{}) {}
    ~Syncer();  // stops the thread; the status key expires by its lease
    // Stops the thread now: nothing is applied any more, and sample() stays what was applied
    // last (a hand-over tells its successor which revision that was).
    void stop();
    Syncer(const Syncer&) = delete;
    Syncer& operator=(const Syncer&) = delete;

    // Blocks until the first list has been applied (true), or `timeout` passes (false): calyx
    // starts forwarding with the site, not with an empty one, when etcd answers in time.
    bool wait_first_sync(std::chrono::milliseconds timeout);

    // The host's file changed (SIGHUP): applies it with the current site. The running
    // configuration stays on error.
    std::expected<uint64_t, std::string> reload(config::Config local);

    DatastoreSample sample() const;
    // Every problem of the last translation, "key: message; ...".
    std::vector<std::string> problems() const;

  private:
    void run();
    bool list_all();
    void start_watches();
    void on_watch_message(size_t watch, WatchMessage message);
    void fail(const EtcdError& error);
    void apply_site();
    void check();
    void write_host_status();
    void write_port_statuses();
    void clean_stale_statuses();
    bool stopping() const { return stop_.load(std::memory_order_relaxed); }

    const Callbacks callbacks_;
    const Options options_;
    const Clock::time_point started_ = Clock::now();
    std::atomic<bool> stop_{false};
    std::thread thread_;

    // The etcd side, the syncer's thread only.
    EtcdClient client_;
    std::unique_ptr<WatchSet> watches_;
    SiteTrees trees_;
    bool listed_ = false;
    // The revision of the last list, and whether etcd still had its history when the watches
    // from the next one were running (check()).
    int64_t listed_revision_ = 0;
    bool history_checked_ = true;
    Clock::time_point retry_at_{}, next_check_{}, next_host_status_{}, next_port_status_{};
    std::chrono::milliseconds backoff_;
    bool first_host_status_ = true;
    bool statuses_cleaned_ = false;
    std::map<std::string, std::string> written_status_;  // status key -> "up", "down", "error"
    std::set<std::string> reported_problems_;
    std::string last_error_logged_;

    // Shared with reload() and sample(); `apply_mu_` keeps a translation and its apply together,
    // so that an older site is never applied after a newer one.
    mutable std::mutex mu_;
    std::mutex apply_mu_;
    std::condition_variable synced_;
    Store store_;
    TranslateCache cache_;
    config::Config local_;
    bool dirty_ = false;        // the store changed since the site applied last
    bool retry_apply_ = false;  // ... or its apply failed and waits for a retry
    Clock::time_point apply_due_{};
    uint64_t applied_fingerprint_ = 0;
    std::vector<LocalEndpoint> status_endpoints_;  // of the applied site: local and refused-local
    std::vector<std::string> problems_;
    DatastoreSample sample_;
    int64_t store_revision_ = 0;  // the newest revision the store holds
    std::optional<Clock::time_point> last_sync_;
};

}  // namespace calyx::cp::datastore
