#include "cp/datastore/syncer.hpp"

#include <ctime>
#include <functional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace calyx::cp::datastore {
namespace {

using namespace std::chrono_literals;

// Every key and value hashed: a store that did not change is not applied again. Values, not
// mod revisions, so that a restored or new etcd cluster (revisions start again) is not taken
// for the old one; std::hash (libstdc++'s murmur) reads ~10 MB of a 10,000-port site in a few ms.
uint64_t fingerprint(const Store& store) {
    uint64_t h = 1469598103934665603ull;
    const auto mix = [&h](std::string_view s) { h = (h ^ std::hash<std::string_view>{}(s)) * 1099511628211ull; };
    for (const auto& [key, kv] : store) {
        mix(key);
        mix(kv.value);
    }
    return h;
}

int64_t ms_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
}

std::string utc_now() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return text;
}

}  // namespace

Syncer::Syncer(config::Config local, Callbacks callbacks, Options options)
    : callbacks_(std::move(callbacks)),
      options_(options),
      client_({.endpoints = local.datastore.endpoints}),
      trees_(site_trees(local.datastore)),
      backoff_(options.backoff_min),
      local_(std::move(local)) {
    sample_.type = std::string{config::to_string(local_.datastore.type)};
    sample_.endpoint = client_.endpoint();
    thread_ = std::thread([this] { run(); });
}

Syncer::~Syncer() { stop(); }

void Syncer::stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
}

bool Syncer::wait_first_sync(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return synced_.wait_for(lock, timeout, [this] { return sample_.applies_total > 0 || stopping(); }) &&
           sample_.applies_total > 0;
}

void Syncer::run() {
    while (!stopping()) {
        const auto now = Clock::now();
        if (!listed_) {
            if (now < retry_at_) {
                std::this_thread::sleep_for(std::min<Clock::duration>(retry_at_ - now, 50ms));
                continue;
            }
            if (!list_all()) continue;
            start_watches();
        }
        for (const auto& [watch, why] : watches_->poll(50ms)) {
            fail(why);
            break;
        }
        if (!listed_) continue;
        const auto later = Clock::now();
        bool due;
        {
            std::lock_guard lock(mu_);
            due = dirty_ && later >= apply_due_;
        }
        if (due) apply_site();
        if (later >= next_check_) check();
        if (listed_ && later >= next_host_status_) write_host_status();
        if (listed_ && later >= next_port_status_) write_port_statuses();
    }
}

// Every tree, in pages, at one revision: a consistent picture of the site.
bool Syncer::list_all() {
    const auto started = Clock::now();
    Store fresh;
    int64_t revision = 0;
    for (const std::string* tree : trees_.all()) {
        const std::string end = prefix_end(*tree);
        std::string from = *tree;
        for (;;) {
            auto page = client_.range(from, end, options_.page, revision);
            if (!page) {
                fail(page.error());
                return false;
            }
            if (revision == 0) revision = page->revision;
            if (!page->more || page->kvs.empty()) {
                for (EtcdKv& kv : page->kvs)
                    fresh[std::move(kv.key)] = KeyValue{std::move(kv.value), kv.create_revision, kv.mod_revision};
                break;
            }
            // Pages come in key order: the next starts after this page's last key (not after the
            // last key listed so far, which may be another tree's, sorting after this one).
            from = page->kvs.back().key + '\0';
            for (EtcdKv& kv : page->kvs)
                fresh[std::move(kv.key)] = KeyValue{std::move(kv.value), kv.create_revision, kv.mod_revision};
        }
    }
    {
        std::lock_guard lock(mu_);
        store_ = std::move(fresh);
        store_revision_ = revision;
        dirty_ = true;
        apply_due_ = Clock::now();  // a list is a batch already
        ++sample_.lists_total;
        sample_.keys = store_.size();
        sample_.last_error.clear();
        sample_.endpoint = client_.endpoint();
        sample_.up = true;
        last_sync_ = Clock::now();
    }
    callbacks_.log(fmt::format("datastore: {}listed {} keys at revision {} from {} in {} ms",
                               last_error_logged_.empty() ? "" : "etcd answers again; ", sample_.keys, revision,
                               client_.endpoint(), ms_since(started)));
    last_error_logged_.clear();
    listed_ = true;
    listed_revision_ = revision;
    history_checked_ = false;
    backoff_ = options_.backoff_min;
    next_check_ = Clock::now() + options_.check_interval;
    return true;
}

void Syncer::start_watches() {
    watches_ = std::make_unique<WatchSet>(client_, [this](size_t w, WatchMessage m) { on_watch_message(w, std::move(m)); });
    int64_t from;
    {
        std::lock_guard lock(mu_);
        from = store_revision_ + 1;
    }
    for (const std::string* tree : trees_.all()) watches_->add(*tree, prefix_end(*tree), from);
}

void Syncer::on_watch_message(size_t, WatchMessage message) {
    if (message.events.empty()) return;
    std::lock_guard lock(mu_);
    for (WatchMessage::Event& e : message.events) {
        if (e.deleted)
            store_.erase(e.kv.key);
        else
            store_[e.kv.key] = KeyValue{std::move(e.kv.value), e.kv.create_revision, e.kv.mod_revision};
        store_revision_ = std::max(store_revision_, e.kv.mod_revision);
    }
    sample_.keys = store_.size();
    // The first change of a burst opens the window; a site waiting to retry a failed apply
    // goes as soon as etcd changes (the change may be the fix).
    if (!dirty_ || retry_apply_) apply_due_ = Clock::now() + options_.coalesce;
    dirty_ = true;
    retry_apply_ = false;
}

void Syncer::fail(const EtcdError& error) {
    watches_.reset();
    listed_ = false;
    retry_at_ = Clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, options_.backoff_max);
    {
        std::lock_guard lock(mu_);
        sample_.up = false;
        sample_.last_error = error.message;
    }
    // Said once per kind of failure, not once per retry.
    if (error.message != last_error_logged_)
        callbacks_.log(fmt::format("datastore: {}; running configuration kept, listing again", error.message));
    last_error_logged_ = error.message;
}

void Syncer::apply_site() {
    std::lock_guard apply_lock(apply_mu_);
    config::Config next;
    Site site;
    uint64_t print;
    int64_t revision;
    Clock::time_point translating;
    {
        std::lock_guard lock(mu_);
        dirty_ = false;
        retry_apply_ = false;
        print = fingerprint(store_);
        if (print == applied_fingerprint_ && sample_.applies_total > 0) {
            sample_.revision = store_revision_;  // the site applied is also this revision's
            return;
        }
        translating = Clock::now();
        site = translate(store_, local_, &cache_);
        next = with_site(local_, site);
        revision = store_revision_;
    }
    // Problems are said when they appear and when they go, not on every change.
    std::set<std::string> now;
    for (const Problem& p : site.problems) now.insert(p.to_string());
    for (const std::string& p : now)
        if (!reported_problems_.contains(p)) callbacks_.log("datastore: " + p);
    for (const std::string& p : reported_problems_)
        if (!now.contains(p)) callbacks_.log("datastore: resolved: " + p);
    reported_problems_ = now;

    const auto applying = Clock::now();
    const int64_t translate_ms = std::chrono::duration_cast<std::chrono::milliseconds>(applying - translating).count();
    auto applied = callbacks_.apply(std::move(next));
    if (applied)
        callbacks_.log(fmt::format("datastore: applied revision {} ({} endpoints, {} here, {} refused): translated in {} "
                                   "ms, reloaded in {} ms: generation {}",
                                   revision, site.counts.endpoints, site.local_endpoints.size(), site.problems.size(),
                                   translate_ms, ms_since(applying), *applied));
    std::lock_guard lock(mu_);
    if (!applied) {
        ++sample_.apply_failures_total;
        // The same site again later: the cause may be outside etcd (a socket directory, say).
        dirty_ = retry_apply_ = true;
        apply_due_ = Clock::now() + options_.backoff_max;
        callbacks_.log(fmt::format("datastore: revision {} not applied, running configuration kept: {}", revision,
                                   applied.error()));
        return;
    }
    applied_fingerprint_ = print;
    ++sample_.applies_total;
    sample_.revision = revision;
    sample_.problems = site.problems.size();
    sample_.endpoints = site.counts.endpoints;
    sample_.local_endpoints = site.local_endpoints.size();
    sample_.policies = site.counts.policies;
    sample_.subnets = site.counts.subnets;
    problems_.clear();
    for (const Problem& p : site.problems) problems_.push_back(p.to_string());
    sample_.first_problems.assign(
        problems_.begin(), problems_.begin() + std::min(problems_.size(), DatastoreSample::kMaxListedProblems));
    status_endpoints_ = site.local_endpoints;
    for (const LocalEndpoint& e : site.refused_local_endpoints) status_endpoints_.push_back({"", e.status_key});
    synced_.notify_all();
}

std::expected<uint64_t, std::string> Syncer::reload(config::Config local) {
    std::lock_guard apply_lock(apply_mu_);
    config::Config next;
    uint64_t print;
    {
        std::lock_guard lock(mu_);
        next = with_site(local, translate(store_, local, &cache_));
        print = fingerprint(store_);
    }
    auto applied = callbacks_.apply(std::move(next));
    if (applied) {
        std::lock_guard lock(mu_);
        local_ = std::move(local);
        applied_fingerprint_ = print;
    }
    return applied;
}

// etcd answers and every watch still runs: calyx has everything up to now (a watch delivers
// in revision order, and etcd answered after it had the revision it reports).
void Syncer::check() {
    next_check_ = Clock::now() + options_.check_interval;
    auto revision = client_.revision();
    if (!revision) {
        fail(revision.error());
        return;
    }
    // A compaction at exactly the revision the watches start from drops the tombstones of that
    // revision (etcd keeps no deleted key at or below a compaction), and a watch from there is
    // not canceled: a key deleted then would never be seen. Once the watches run, the list's own
    // revision must still be readable; if it is not, the history was compacted past it and the
    // site is listed again.
    if (!history_checked_) {
        auto probe = client_.range(trees_.endpoints, prefix_end(trees_.endpoints), 1, listed_revision_);
        if (!probe) {
            if (probe.error().kind == EtcdError::Kind::compacted)
                return fail(EtcdError{EtcdError::Kind::compacted,
                                      fmt::format("etcd compacted its history past revision {}, the one listed, while "
                                                  "the watches started: a key deleted then may be unseen",
                                                  listed_revision_)});
            return fail(probe.error());
        }
        history_checked_ = true;
    }
    std::lock_guard lock(mu_);
    const bool watching = watches_ && watches_->active() == trees_.all().size();
    sample_.up = watching;
    if (watching) last_sync_ = Clock::now();
}

// Felix's liveness report: networking-calico keeps the host's agent alive in Neutron while the
// key (with a lease) is there, and Neutron binds ports only to hosts with a live agent.
void Syncer::write_host_status() {
    next_host_status_ = Clock::now() + options_.host_status_interval;
    const double uptime = std::chrono::duration<double>(Clock::now() - started_).count();
    const std::string value =
        nlohmann::json{{"time", utc_now()}, {"uptime", uptime}, {"first_update", first_host_status_}}.dump();
    const config::DatastoreConfig& ds = local_.datastore;
    auto lease = client_.lease_grant(options_.host_status_ttl.count());
    if (!lease) return fail(lease.error());
    if (auto put = client_.put(host_status_key(ds, local_.host), value, *lease); !put) return fail(put.error());
    if (auto put = client_.put(host_last_status_key(ds, local_.host), value); !put) return fail(put.error());
    first_host_status_ = false;
}

// Each local endpoint's status, as Felix's status reporter writes it: written when it changes,
// deleted when the endpoint goes.
void Syncer::write_port_statuses() {
    next_port_status_ = Clock::now() + options_.port_status_interval;
    std::vector<LocalEndpoint> endpoints;
    {
        std::lock_guard lock(mu_);
        if (sample_.applies_total == 0) return;
        endpoints = status_endpoints_;
    }
    const std::optional<std::map<std::string, bool>> known = callbacks_.ports_connected();
    if (!known) return;
    if (!statuses_cleaned_) clean_stale_statuses();
    const std::map<std::string, bool>& connected = *known;
    std::map<std::string, std::string> wanted;
    for (const LocalEndpoint& e : endpoints) {
        if (e.instance.empty()) {
            wanted[e.status_key] = "error";
            continue;
        }
        const auto it = connected.find(e.instance);
        wanted[e.status_key] = it != connected.end() && it->second ? "up" : "down";
    }
    for (const auto& [key, status] : wanted) {
        if (const auto it = written_status_.find(key); it != written_status_.end() && it->second == status) continue;
        if (auto put = client_.put(key, nlohmann::json{{"status", status}}.dump()); !put) return fail(put.error());
        written_status_[key] = status;
    }
    for (auto it = written_status_.begin(); it != written_status_.end();) {
        if (wanted.contains(it->first)) {
            ++it;
            continue;
        }
        if (auto removed = client_.remove(it->first); !removed) return fail(removed.error());
        it = written_status_.erase(it);
    }
}

// Status keys of this host left by an earlier calyx or by Felix for endpoints that are gone.
void Syncer::clean_stale_statuses() {
    const std::string prefix = endpoint_status_prefix(local_.datastore, local_.host);
    auto page = client_.range(prefix, prefix_end(prefix), 0);
    if (!page) return fail(page.error());
    std::set<std::string> wanted;
    {
        std::lock_guard lock(mu_);
        for (const LocalEndpoint& e : status_endpoints_) wanted.insert(e.status_key);
    }
    for (const EtcdKv& kv : page->kvs) {
        if (wanted.contains(kv.key)) {
            const auto status = nlohmann::json::parse(kv.value, nullptr, false);
            written_status_[kv.key] = status.is_object() ? status.value("status", "") : "";
            continue;
        }
        if (auto removed = client_.remove(kv.key); !removed) return fail(removed.error());
    }
    statuses_cleaned_ = true;
}

DatastoreSample Syncer::sample() const {
    std::lock_guard lock(mu_);
    DatastoreSample s = sample_;
    if (last_sync_) s.last_sync_age_s = std::chrono::duration<double>(Clock::now() - *last_sync_).count();
    return s;
}

std::vector<std::string> Syncer::problems() const {
    std::lock_guard lock(mu_);
    return problems_;
}

}  // namespace calyx::cp::datastore
