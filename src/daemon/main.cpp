// calyx: the router daemon. `calyx --config FILE` runs it; `--check` only validates.
#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <utility>
#include <thread>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>

#include <boost/program_options.hpp>
#include <fmt/format.h>
#include <rte_eal.h>

#include "calyx/config.hpp"
#include "cp/control_commands.hpp"
#include "cp/control_server.hpp"
#include "cp/datastore/syncer.hpp"
#include "cp/metrics.hpp"
#include "cp/reload.hpp"
#include "daemon/router.hpp"
#include "daemon/service_manager.hpp"
#include "io/clock.hpp"
#include "io/eal.hpp"

namespace po = boost::program_options;

namespace {

constexpr const char* kDefaultConfig = "/etc/calyx/calyx.yaml";

void print_errors(const calyx::config::Errors& errors) {
    for (const auto& e : errors) fmt::print(stderr, "{}\n", e.to_string());
}

// Signals are taken synchronously by the main lcore (sigtimedwait), so they are blocked
// before EAL starts any thread: every thread inherits the mask.
sigset_t control_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);  // a hand-over was requested (the control server's thread)
    return set;
}

// net_tap (a tap uplink) has the kernel raise this signal for every packet it queues and
// reads only after its handler has run (DPDK 22.11). The handler must run somewhere, but not
// on a worker lcore: blocked before EAL starts its threads, unblocked again in the main
// thread (and the control threads it starts later).
sigset_t tap_signal() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN + 1);
    return set;
}

// SIGHUP (main lcore) and `calyxctl reload` (the control server's thread) both come here:
// re-read the file, validate all of it, then apply it or keep the running configuration. The
// verdict goes to the log and back to the caller. Either thread may call it: Router::apply,
// count_reload and sample take the router's control lock, which also serialises them with the
// main lcore's housekeeping, and the control server handles one request at a time.
// How long calyx waits at start for the datastore's first list before it serves without the site
// (it applies the site as soon as etcd answers).
constexpr std::chrono::seconds kFirstSyncWait{15};
// How long a successor waits, in the hand-over's gap, for its watch to reach the revision the
// running calyx served (normally it is there already: both watch the same etcd).
constexpr std::chrono::milliseconds kSiteCatchUp{1000};

// With a datastore the site is etcd's: the syncer applies the file with the current site, in
// turn with its own applies, so that an older site never follows a newer one.
calyx::cp::ReloadResult reload_file(calyx::daemon::Router& r, const std::string& config_path,
                                    calyx::cp::datastore::Syncer* syncer);

// The service manager sees the reload (RELOADING=1 ... READY=1) whatever its verdict.
calyx::cp::ReloadResult reload_config(calyx::daemon::Router& r, const std::string& config_path,
                                      calyx::cp::datastore::Syncer* syncer) {
    calyx::daemon::notify_reloading();
    calyx::cp::ReloadResult result = reload_file(r, config_path, syncer);
    calyx::daemon::notify_ready(fmt::format("serving, generation {}{}", result.generation,
                                            result.ok ? "" : " (the last reload was refused)"));
    return result;
}

calyx::cp::ReloadResult reload_file(calyx::daemon::Router& r, const std::string& config_path,
                                    calyx::cp::datastore::Syncer* syncer) {
    calyx::cp::ReloadResult result;
    auto next = calyx::config::load_config_file(config_path);
    if (!next) {
        fmt::print(stderr, "calyx: reload rejected, running configuration kept\n");
        print_errors(next.error());
        for (const auto& e : next.error()) result.errors.push_back(e.to_string());
        r.count_reload(false);
        result.message = fmt::format("reload rejected, running configuration kept: {} has {} error(s)",
                                     config_path, next.error().size());
        result.generation = r.sample().config_generation;
        return result;
    }
    std::expected<void, std::string> applied;
    if (syncer) {
        // The syncer's apply counts the reload itself.
        if (auto generation = syncer->reload(std::move(*next)); !generation) applied = std::unexpected(generation.error());
    } else {
        applied = r.apply(std::move(*next));
        if (applied) r.count_reload(true);
    }
    if (!applied) {
        fmt::print(stderr, "calyx: reload failed, running configuration kept: {}\n", applied.error());
        if (!syncer) r.count_reload(false);
        result.message = fmt::format("reload failed, running configuration kept: {}", applied.error());
        result.generation = r.sample().config_generation;
        return result;
    }
    result.ok = true;
    result.generation = r.sample().config_generation;
    result.message = fmt::format("reloaded: generation {}", result.generation);
    fmt::print(stderr, "calyx: {}\n", result.message);
    return result;
}

// Single ownership: an exclusive lock on `path` (created if missing) held for the whole life of
// the process (the kernel drops it when the process dies, however it dies), with our pid in the
// file for the message of whoever finds it taken. `owner`: the pid found there when it is taken.
std::expected<int, std::string> take_lock(const std::string& path, std::string_view what, pid_t* owner = nullptr) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return std::unexpected(fmt::format("cannot open the lock file {}: {}", path, std::strerror(errno)));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = {};
        (void)::pread(fd, pid, sizeof(pid) - 1, 0);
        ::close(fd);
        if (owner) *owner = static_cast<pid_t>(std::atoi(pid));
        std::string text(pid);
        while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
        return std::unexpected(fmt::format(
            "another calyx (pid {}) owns {} (lock {}): two processes never own the same ports and tables; "
            "stop it first, or start this one with --take-over to replace it without cutting connections",
            text.empty() ? "?" : text, what, path));
    }
    const std::string pid = fmt::format("{}\n", ::getpid());
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
        // The lock is what matters; the pid is only for messages.
    }
    return fd;
}

// Held by a successor from the moment it serves (the calyx it replaces is told to exit) until its
// state file is in place.
std::string handover_lock(const calyx::config::Config& cfg) { return cfg.state_path() + ".handover.lock"; }

// The pid a lock file names: who took it last (0 if none).
pid_t lock_owner(const std::string& path) {
    char pid[32] = {};
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    (void)::pread(fd, pid, sizeof(pid) - 1, 0);
    ::close(fd);
    return static_cast<pid_t>(std::atoi(pid));
}

// The locks of one configuration: its control socket's and its state file's.
std::vector<std::pair<std::string, std::string>> lock_files(const calyx::config::Config& cfg) {
    return {{cfg.control.socket + ".lock", "control socket " + cfg.control.socket},
            {cfg.state_path() + ".lock", "state file " + cfg.state_path()}};
}

std::expected<void, std::string> take_locks(const calyx::config::Config& cfg, pid_t* owner = nullptr) {
    std::vector<int> taken;
    for (const auto& [path, what] : lock_files(cfg)) {
        auto lock = take_lock(path, what, owner);
        if (!lock) {
            for (int fd : taken) ::close(fd);
            return std::unexpected(lock.error());
        }
        taken.push_back(*lock);
    }
    return {};  // held until exit
}

// Where the datastore's sites go: the router, once it runs. Before (the first list, which the
// router starts with) the newest site waits here; one that comes after the router took it is
// applied when it is attached. Called from the syncer's thread and the main lcore.
class SiteTarget {
public:
    std::expected<uint64_t, std::string> apply(calyx::config::Config next) {
        std::lock_guard lock(mutex_);
        if (!router_) {
            waiting_ = std::move(next);
            return 0;  // generation 0: the router starts with it
        }
        auto applied = router_->apply(std::move(next));
        router_->count_reload(applied.has_value());
        if (!applied) return std::unexpected(applied.error());
        return router_->sample().config_generation;
    }
    // Unknown until the router runs: the syncer writes no status before (a successor would
    // report the ports its predecessor serves as down).
    std::optional<std::map<std::string, bool>> ports_connected() {
        std::lock_guard lock(mutex_);
        if (!router_) return std::nullopt;
        return router_->ports_connected();
    }
    std::optional<calyx::config::Config> take() {
        std::lock_guard lock(mutex_);
        return std::exchange(waiting_, std::nullopt);
    }
    void attach(calyx::daemon::Router* router) {
        std::lock_guard lock(mutex_);
        router_ = router;
        if (!waiting_) return;
        if (auto applied = router_->apply(std::move(*waiting_)); !applied)
            fmt::print(stderr, "calyx: datastore: the site listed while calyx started was not applied: {}\n",
                       applied.error());
        waiting_.reset();
    }

private:
    std::mutex mutex_;
    calyx::daemon::Router* router_ = nullptr;
    std::optional<calyx::config::Config> waiting_;
};

// The running side of a hand-over: the control server's `take-over` handler (its thread) asks,
// the main lcore stops the data plane and answers.
struct HandOverRequest {
    std::mutex mutex;
    std::condition_variable answered;
    bool requested = false;
    bool done = false;
    pid_t successor = 0;
    calyx::cp::Json result;
};

// Which calyx a successor pre-restored the table of: the pid that held the locks when the
// successor started, and the generation of the state file it read. A calyx started again (after
// a crash) while a successor pre-restored has another pid and a newer file (its start restored
// the dead one's and numbered its own one more): its ports must not go to a successor holding
// the dead one's table, which lacks every connection opened since.
struct Predecessor {
    pid_t pid = 0;                              // 0: the lock file named none
    std::optional<uint64_t> state_generation;  // nullopt: there was no state file
};

std::string describe(const Predecessor& p) {
    return fmt::format("pid {}, {}", p.pid > 0 ? std::to_string(p.pid) : "?",
                       p.state_generation ? fmt::format("generation {}", *p.state_generation) : "no state file");
}

// The running side: whether a take-over request is for this process. nullopt: it is (or the
// request names no predecessor: a successor older than this check).
std::optional<calyx::cp::CommandError> not_this_calyx(const calyx::cp::Json& args, pid_t self, uint64_t generation) {
    const auto it = args.find("predecessor");
    if (it == args.end()) return std::nullopt;
    const auto& p = *it;
    const auto whole = [&](const char* key) {
        return p.contains(key) && p[key].is_number_integer() && p[key].get<int64_t>() >= 0;
    };
    if (!p.is_object() || !whole("pid") || (p.contains("state_generation") && !whole("state_generation")))
        return calyx::cp::CommandError{
            "take-over: \"predecessor\" must be {\"pid\": <pid>, \"state_generation\": <generation>}", true, {}};
    Predecessor expected{static_cast<pid_t>(p["pid"].get<int64_t>()), std::nullopt};
    if (p.contains("state_generation")) expected.state_generation = p["state_generation"].get<uint64_t>();
    const bool same_pid = expected.pid == 0 || expected.pid == self;
    // A successor that found no state file (none yet, or dataplane.state_file moved) restored
    // no table: the pid alone tells whether this is the calyx it started beside.
    if (same_pid && (!expected.state_generation || *expected.state_generation == generation)) return std::nullopt;
    return calyx::cp::CommandError{
        fmt::format("this calyx (pid {}, state file generation {}) is not the one whose table the successor "
                    "restored ({}): it was started again meanwhile, and that table lacks what it tracked since. Not "
                    "handing over; this calyx serves on (start the take-over again)",
                    self, generation, describe(expected)),
        false,
        {}};
}

// The successor side: asks the running calyx to stop and release its ports. Its answer carries
// when its workers stopped (CLOCK_MONOTONIC), the start of the gap.
struct TakeOver {
    Predecessor expected;  // whose table was pre-restored
    pid_t predecessor = 0;
    uint64_t stopped_ns = 0;
    int64_t datastore_revision = 0;  // the etcd revision whose site it served last (0: no datastore)
    // The source digest of the configuration it served (without a datastore; nullopt: a calyx
    // older than this answer).
    std::optional<std::string> config_digest;
};

// Testing races of a hand-over (--take-over-after, --take-over-before-open,
// --take-over-before-commit, --take-over-before-locks): waits until `path` exists (at most 60 s).
void wait_for_file(const std::string& path, std::string_view before) {
    fmt::print(stderr, "calyx: testing: waiting for {} before {}\n", path, before);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!std::filesystem::exists(path) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

std::expected<std::vector<calyx::daemon::Router::Neighbor>, std::string> ask_to_hand_over(
    const std::string& socket, TakeOver& t, std::chrono::milliseconds hold, const std::string& after) {
    if (!after.empty()) wait_for_file(after, "it asks the running calyx to hand over");
    calyx::cp::Json predecessor = {{"pid", t.expected.pid}};
    if (t.expected.state_generation) predecessor["state_generation"] = *t.expected.state_generation;
    auto reply = calyx::cp::control_call(socket, "take-over", {{"pid", ::getpid()}, {"predecessor", predecessor}},
                                         std::chrono::seconds(30));
    if (!reply) return std::unexpected(fmt::format("take-over: {}", reply.error().message));
    if (!reply->ok) return std::unexpected(fmt::format("take-over refused by the running calyx: {}", reply->error));
    t.predecessor = reply->result.value("pid", 0);
    // A calyx older than the check above does not read "predecessor": its pid still tells.
    // It stopped already; our exit has it resume.
    if (t.expected.pid > 0 && t.predecessor != t.expected.pid)
        return std::unexpected(fmt::format("the calyx that handed over is pid {}, not the one whose table this one "
                                           "restored ({}): not taking over (pid {} resumes serving)",
                                           t.predecessor, describe(t.expected), t.predecessor));
    t.stopped_ns = reply->result.value("stopped_ns", uint64_t{0});
    t.datastore_revision = reply->result.value("datastore_revision", int64_t{0});
    if (const auto digest = reply->result.find("config_digest"); digest != reply->result.end() && digest->is_string())
        t.config_digest = digest->get<std::string>();
    std::vector<calyx::daemon::Router::Neighbor> neighbors;
    if (const auto list = reply->result.find("neighbors"); list != reply->result.end() && list->is_array())
        for (const auto& n : *list) {
            const auto ip = calyx::Ipv4Addr::parse(n.value("ip", ""));
            const auto mac = calyx::MacAddr::parse(n.value("mac", ""));
            if (ip && mac) neighbors.push_back({*ip, *mac});
        }
    fmt::print(stderr,
               "calyx: taking over from pid {}: it stopped its workers and released its ports ({} neighbours "
               "handed over)\n",
               t.predecessor, neighbors.size());
    // Testing a hand-over whose successor dies midway (--take-over-hold-ms).
    if (hold.count() > 0) std::this_thread::sleep_for(hold);
    return neighbors;
}

struct RunOptions {
    bool take_over = false;
    std::chrono::milliseconds take_over_hold{0};
    std::string take_over_after;
    std::string take_over_before_open;
    std::string take_over_before_commit;
    std::string take_over_before_locks;
};

// Without a datastore: the running calyx reloaded the file while we pre-restored (an instance
// added, say), so it served another configuration than the one we started with. We finish with
// the file as it is now, or the connections of the instances it adds would be taken for those
// of removed instances. A file we cannot finish with stops the take-over: the running calyx
// resumes with its own configuration and table, and nothing is lost.
std::expected<std::optional<calyx::config::Config>, std::string> file_at_hand_over(
    const std::string& path, const calyx::config::Config& started_with, const TakeOver& t) {
    if (!t.config_digest || *t.config_digest == started_with.source_digest) return std::nullopt;
    auto now = calyx::config::load_config_file(path);
    if (!now) {
        print_errors(now.error());
        return std::unexpected(fmt::format(
            "--take-over: pid {} served another configuration than {} held when this calyx started, and the file "
            "now has {} error(s) (above): not taking over, pid {} resumes serving with its own; correct the file "
            "and start the take-over again",
            t.predecessor, path, now.error().size(), t.predecessor));
    }
    if (now->source_digest == started_with.source_digest) return std::nullopt;
    if (auto fixed = calyx::cp::restart_required(started_with, *now))
        return std::unexpected(fmt::format(
            "--take-over: {} changed since this calyx started ({}): not taking over, pid {} resumes serving; start "
            "the take-over again (a new one starts with the file as it is)",
            path, *fixed, t.predecessor));
    // Usually the running calyx reloaded it; it may also just have been edited (the running
    // calyx serving an older file, this one started to apply it): either way, the file now.
    fmt::print(stderr, "calyx: {} changed while this calyx pre-restored: finishing with the file as it is now{}\n",
               path, now->source_digest == *t.config_digest ? " (as pid " + std::to_string(t.predecessor) + " serves it)"
                                                            : "");
    return std::optional<calyx::config::Config>(std::move(*now));
}

int run(const std::string& config_path, const std::string& argv0, const RunOptions& opts) {
    const auto started = std::chrono::steady_clock::now();
    auto cfg = calyx::config::load_config_file(config_path);
    if (!cfg) {
        print_errors(cfg.error());
        return 1;
    }
    // Before anything is opened: a second calyx on the same control socket or state file stops
    // here, touching nothing of the running one's, unless it is to take over from it.
    bool taking_over = false;
    pid_t predecessor = 0;
    int successor_lock = -1;
    if (auto locked = take_locks(*cfg, &predecessor); !locked) {
        if (!opts.take_over) {
            fmt::print(stderr, "calyx: {}\n", locked.error());
            return 1;
        }
        // One successor at a time: two would both restore into, and clear the change map of,
        // the same running table.
        pid_t other = 0;
        auto successor = take_lock(cfg->state_path() + ".successor.lock", "the take-over of " + cfg->state_path(), &other);
        if (!successor) {
            // The one holding the locks holds this one too until its state file is in place: it
            // is completing its own take-over (a take-over started now would read the file it
            // replaces).
            if (other == predecessor)
                fmt::print(stderr,
                           "calyx: --take-over: pid {} is completing its own take-over (it serves, its state file is "
                           "not in place yet): start this one again once it logged that it took over\n",
                           other);
            else
                fmt::print(stderr, "calyx: --take-over: another calyx (pid {}) is already taking over from pid {}\n",
                           other, predecessor);
            return 1;
        }
        successor_lock = *successor;  // until the take-over is complete
        taking_over = true;
        fmt::print(stderr, "calyx: taking over from the running calyx (pid {})\n", predecessor);
    } else {
        // Free locks may be a successor's for a few milliseconds: the calyx it replaces has
        // exited and the successor, serving already, is about to take them. It holds the
        // hand-over lock from then until its state file is in place; a calyx starting now would
        // restore the exited one's table and contend for the ports the successor serves. (A
        // successor still pre-restoring serves nothing: a calyx restarted then starts.)
        pid_t successor = 0;
        auto probe = take_lock(handover_lock(*cfg), "the hand-over of " + cfg->state_path(), &successor);
        if (!probe) {
            fmt::print(stderr,
                       "calyx: pid {} is taking over {} from a calyx that has just exited, and serves: not starting "
                       "(start this one with --take-over once it logged that it took over, to replace it)\n",
                       successor, cfg->state_path());
            return 1;
        }
        ::close(*probe);
        if (opts.take_over)
            fmt::print(stderr, "calyx: --take-over: no calyx runs on {}; starting normally\n", cfg->control.socket);
    }
    const std::string control_socket = cfg->control.socket;
    const sigset_t signals = control_signals();
    const sigset_t tap = tap_signal();
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    pthread_sigmask(SIG_BLOCK, &tap, nullptr);
    if (auto eal = calyx::io::init_eal(
            calyx::io::eal_arguments(cfg->dataplane, cfg->uplink, argv0));
        !eal) {
        fmt::print(stderr, "calyx: {}\n", eal.error());
        return 1;
    }
    pthread_sigmask(SIG_UNBLOCK, &tap, nullptr);
    int status = 0;
    {
        TakeOver take_over;
        calyx::daemon::Router::StartHooks hooks;
        if (taking_over) {
            // Whose table we read is whoever held the locks when we opened its file: a calyx that
            // crashed and was started again before that (its start restored the same table) is the
            // one we take over from, not the pid that held them when we started.
            hooks.state_file_opened = [&] {
                if (const pid_t now = lock_owner(control_socket + ".lock"); now > 0 && now != predecessor) {
                    fmt::print(stderr, "calyx: the running calyx is pid {} now (pid {} was, when this one started): "
                                       "taking over from pid {}\n",
                               now, predecessor, now);
                    predecessor = now;
                }
            };
            hooks.before_ports = [&](std::optional<uint64_t> state_generation) {
                take_over.expected = {predecessor, state_generation};
                return ask_to_hand_over(control_socket, take_over, opts.take_over_hold, opts.take_over_after);
            };
            hooks.defer_state_commit = true;
        }
        // With a datastore the site is etcd's, applied through the same reload path as the file.
        // It is listed before the router starts, which then starts with it: its instances' ports
        // and their restored connections are there from the first packet (a successor taking
        // over would otherwise serve the file's instances only until its first sync, and restore
        // none of the site's connections).
        const calyx::config::Config host_config = *cfg;  // the file: the host's own part
        const bool from_datastore = cfg->datastore.type == calyx::config::DatastoreType::etcd;
        if (taking_over && !from_datastore)
            hooks.config_at_hand_over = [&] { return file_at_hand_over(config_path, host_config, take_over); };
        SiteTarget site_target;
        const auto start_syncer = [&] {
            calyx::cp::datastore::Syncer::Callbacks callbacks;
            callbacks.apply = [&site_target](calyx::config::Config next) { return site_target.apply(std::move(next)); };
            callbacks.ports_connected = [&site_target] { return site_target.ports_connected(); };
            callbacks.log = [](const std::string& line) { fmt::print(stderr, "calyx: {}\n", line); };
            return std::make_unique<calyx::cp::datastore::Syncer>(host_config, std::move(callbacks));
        };
        std::unique_ptr<calyx::cp::datastore::Syncer> syncer;
        if (from_datastore) {
            syncer = start_syncer();
            if (!syncer->wait_first_sync(kFirstSyncWait)) {
                if (taking_over) {
                    // The running calyx has the site; a successor without it would cut the
                    // connections of every instance etcd names. It goes on serving.
                    fmt::print(stderr, "calyx: --take-over: no site from {} within {} s: not taking over (pid {} "
                                       "goes on serving)\n",
                               fmt::join(cfg->datastore.endpoints, ", "), kFirstSyncWait.count(), predecessor);
                    syncer.reset();
                    rte_eal_cleanup();
                    return 1;
                }
                fmt::print(stderr, "calyx: datastore: no site from {} within {} s; serving without it until etcd "
                                   "answers\n",
                           fmt::join(cfg->datastore.endpoints, ", "), kFirstSyncWait.count());
            }
            if (auto site = site_target.take()) *cfg = std::move(*site);
            // A site the running calyx applied while we pre-restored (an instance added, say):
            // the restore completes with it, or its instances' connections would be taken for
            // those of removed instances. It stopped with the site of the revision it answered;
            // our own watch has it or is about to.
            if (taking_over)
                hooks.config_at_hand_over = [&]() -> std::expected<std::optional<calyx::config::Config>, std::string> {
                    const auto deadline = std::chrono::steady_clock::now() + kSiteCatchUp;
                    while (syncer->sample().revision < take_over.datastore_revision &&
                           std::chrono::steady_clock::now() < deadline)
                        std::this_thread::sleep_for(std::chrono::milliseconds(1));
                    if (const int64_t have = syncer->sample().revision; have < take_over.datastore_revision)
                        fmt::print(stderr,
                                   "calyx: datastore: pid {} served etcd's revision {}, this calyx has {} after {} ms: "
                                   "connections of instances added since are not kept\n",
                                   take_over.predecessor, take_over.datastore_revision, have, kSiteCatchUp.count());
                    return site_target.take();
                };
        }
        if (!opts.take_over_before_open.empty() && taking_over)
            wait_for_file(opts.take_over_before_open, "it opens the running calyx's state file");
        auto router = calyx::daemon::Router::start(std::move(*cfg), hooks);
        if (!router) {
            fmt::print(stderr, "calyx: {}\n", router.error());
            syncer.reset();
            rte_eal_cleanup();
            return 1;
        }
        calyx::daemon::Router& r = **router;
        site_target.attach(&r);
        if (!r.restore_report().empty()) fmt::print(stderr, "calyx: {}\n", r.restore_report());
        const auto sample = [&r, &syncer] {
            calyx::cp::RouterSample s = r.sample();
            if (syncer) s.datastore = syncer->sample();
            return s;
        };
        std::string listen = r.config().metrics.listen;
        if (listen.starts_with("localhost:")) listen = "127.0.0.1" + listen.substr(9);
        if (const auto warning = calyx::cp::exposure_warning(listen)) fmt::print(stderr, "calyx: {}\n", *warning);
        const auto start_metrics = [&] { return calyx::cp::MetricsServer::start(listen, sample); };
        auto metrics = start_metrics();
        if (!metrics) {
            fmt::print(stderr, "calyx: {}\n", metrics.error());
            syncer.reset();
            router->reset();
            rte_eal_cleanup();
            return 1;
        }
        // Read before the control server starts: from then on a reload may replace the config.
        const size_t instances = r.config().local_instances().size();
        const size_t workers = r.config().dataplane.workers.size();
        const uint64_t generation = r.generation();
        calyx::cp::CommandEnv env;
        env.info = {CALYX_VERSION, static_cast<int64_t>(::getpid()), started};
        env.reload = [&r, &config_path, &syncer] {
            fmt::print(stderr, "calyx: reload requested by calyxctl\n");
            return reload_config(r, config_path, syncer.get());
        };
        if (syncer) env.datastore = [&syncer] { return syncer->sample(); };
        env.now_ns = [] { return calyx::io::now_ns(); };
        HandOverRequest hand_over;
        std::atomic<bool> owner{!taking_over};  // holds the locks: may hand over in turn
        std::atomic<pid_t> upgrade_child{0};    // started by `calyxctl upgrade`, not yet reaped
        const auto start_control = [&] {
            calyx::cp::CommandTable table = calyx::cp::make_command_table(r, env);
            table["take-over"] = [&](const calyx::cp::Json& args) -> calyx::cp::CommandResult {
                if (!args.is_object() || !args.contains("pid") || !args["pid"].is_number_integer() ||
                    args["pid"].get<int64_t>() <= 0)
                    return std::unexpected(calyx::cp::CommandError{"take-over needs {\"pid\": <the successor's pid>}", true, {}});
                if (!owner.load())
                    return std::unexpected(calyx::cp::CommandError{"this calyx is itself still taking over", false, {}});
                if (auto other = not_this_calyx(args, ::getpid(), r.state_generation())) {
                    fmt::print(stderr, "calyx: take-over refused: {}\n", other->message);
                    return std::unexpected(std::move(*other));
                }
                // Under systemd the unit's processes are those of its cgroup: a successor started
                // beside it (from a shell) would serve outside the unit, and the unit would end
                // when this process exits. Only a child of ours is inside.
                const auto successor = static_cast<pid_t>(args["pid"].get<int64_t>());
                if (calyx::daemon::under_service_manager() && calyx::daemon::parent_of(successor) != ::getpid())
                    return std::unexpected(calyx::cp::CommandError{
                        fmt::format("this calyx runs under a service manager (systemd) and pid {} is outside its "
                                    "unit: upgrade with `calyxctl upgrade`, which starts the new calyx inside it",
                                    successor),
                        false, {}});
                std::unique_lock lock(hand_over.mutex);
                if (hand_over.requested) return std::unexpected(calyx::cp::CommandError{"a hand-over is in progress", false, {}});
                hand_over.requested = true;
                hand_over.done = false;
                hand_over.successor = static_cast<pid_t>(args["pid"].get<int64_t>());
                ::kill(::getpid(), SIGUSR2);  // wakes the main lcore
                if (!hand_over.answered.wait_for(lock, std::chrono::seconds(20), [&] { return hand_over.done; }))
                    return std::unexpected(calyx::cp::CommandError{"the main lcore did not stop the data plane in time", false, {}});
                return hand_over.result;
            };
            // `calyxctl upgrade`: the new binary as our child, which then takes over like any
            // --take-over (it is inside our cgroup, so it can become a systemd unit's main process).
            table["upgrade"] = [&](const calyx::cp::Json& args) -> calyx::cp::CommandResult {
                std::string binary = calyx::daemon::own_binary();
                if (args.is_object() && args.contains("binary")) {
                    if (!args["binary"].is_string() || args["binary"].get<std::string>().empty())
                        return std::unexpected(calyx::cp::CommandError{"upgrade: \"binary\" must be a path", true, {}});
                    binary = args["binary"].get<std::string>();
                }
                if (!owner.load())
                    return std::unexpected(calyx::cp::CommandError{"this calyx is itself still taking over", false, {}});
                {
                    std::lock_guard lock(hand_over.mutex);
                    if (hand_over.requested)
                        return std::unexpected(calyx::cp::CommandError{"a hand-over is in progress", false, {}});
                }
                if (const pid_t pending = upgrade_child.load(); pending > 0)
                    return std::unexpected(calyx::cp::CommandError{
                        fmt::format("an upgrade is in progress (the new calyx is pid {})", pending), false, {}});
                if (auto fit = r.inspect([&](const calyx::config::Config& running, const auto&, const auto&) {
                        return calyx::daemon::successor_can_read(config_path, running);
                    });
                    !fit)
                    return std::unexpected(fit.error());
                auto child = calyx::daemon::spawn_successor(binary, config_path);
                if (!child) return std::unexpected(calyx::cp::CommandError{child.error(), false, {}});
                upgrade_child.store(*child);
                fmt::print(stderr, "calyx: upgrade requested: started {} (pid {}) to take over\n", binary, *child);
                calyx::daemon::notify_status(fmt::format("serving; upgrading: pid {} takes over", *child));
                return calyx::cp::Json{{"pid", ::getpid()}, {"successor", *child}, {"binary", binary}};
            };
            return calyx::cp::ControlServer::start(control_socket, std::move(table));
        };
        auto control = start_control();
        if (!control) {
            fmt::print(stderr, "calyx: {}\n", control.error());
            metrics->reset();
            syncer.reset();
            router->reset();
            rte_eal_cleanup();
            return 1;
        }
        if (taking_over) {
            // Ready: the predecessor may go. Its locks are ours once it has exited. A service
            // manager learns first that we are its main process now.
            calyx::daemon::notify_main_process(fmt::format("serving; took over from pid {}", take_over.predecessor));
            // Serving: until our state file is in place, a calyx starting on the locks the
            // predecessor leaves must not take them (see the start above).
            auto handing_over = take_lock(handover_lock(r.config()), "the hand-over of " + r.config().state_path());
            if (!handing_over) fmt::print(stderr, "calyx: {}\n", handing_over.error());
            ::kill(take_over.predecessor, SIGTERM);
            if (!opts.take_over_before_locks.empty()) {
                // Its locks free: it has exited (it may linger as a zombie of its parent).
                for (;;) {
                    auto probe = take_lock(control_socket + ".lock", "the control socket");
                    if (probe) {
                        ::close(*probe);
                        break;
                    }
                    std::this_thread::sleep_for(std::chrono::milliseconds(5));
                }
                wait_for_file(opts.take_over_before_locks, "it takes the locks of the calyx that exited");
            }
            auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
            std::expected<void, std::string> locked = std::unexpected("");
            while (!(locked = take_locks(r.config())) && std::chrono::steady_clock::now() < deadline)
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            if (!locked) fmt::print(stderr, "calyx: the predecessor (pid {}) did not exit: {}\n", take_over.predecessor, locked.error());
            owner.store(true);
            if (!opts.take_over_before_commit.empty())
                wait_for_file(opts.take_over_before_commit, "it puts its state file in place");
            if (auto committed = r.commit_state_file(); !committed) fmt::print(stderr, "calyx: {}\n", committed.error());
            // Only now may another take-over begin: it reads the state file, which is ours from here.
            ::close(successor_lock);
            if (handing_over) ::close(*handing_over);
            fmt::print(stderr,
                       "calyx: took over from pid {}: the data plane stood still for {:.1f} ms (its workers "
                       "stopping to ours polling)\n",
                       take_over.predecessor, static_cast<double>(r.workers_started_ns() - take_over.stopped_ns) / 1e6);
        }
        fmt::print(stderr, "calyx: ready: {} instances, {} workers, generation {}\n", instances,
                   workers, generation);
        if (!taking_over) calyx::daemon::notify_ready(fmt::format("serving, generation {}", generation));
        // Housekeeping every 100 ms, whatever interrupts the wait (a tap uplink's signal
        // handler may, once per packet).
        constexpr uint64_t kTickNs = 100'000'000;
        uint64_t last_tick = 0;
        for (;;) {
            const timespec tick{0, static_cast<long>(kTickNs)};
            const int sig = sigtimedwait(&signals, nullptr, &tick);
            if (const uint64_t now = calyx::io::now_ns(); now - last_tick >= kTickNs) {
                (*router)->housekeeping();
                last_tick = now;
            }
            if (const pid_t child = upgrade_child.load(); child > 0) {
                int child_status = 0;
                if (::waitpid(child, &child_status, WNOHANG) == child) {
                    upgrade_child.store(0);
                    fmt::print(stderr, "calyx: the new calyx (pid {}) {} {} before it took over: serving on\n", child,
                               WIFEXITED(child_status) ? "exited with" : "was killed by signal",
                               WIFEXITED(child_status) ? WEXITSTATUS(child_status) : WTERMSIG(child_status));
                    calyx::daemon::notify_status(fmt::format("serving; the upgrade failed (pid {} exited)", child));
                }
            }
            if (sig == SIGINT || sig == SIGTERM) {
                calyx::daemon::notify_stopping();
                break;
            }
            if (sig == SIGUSR1) fmt::print(stderr, "calyx: counters\n{}", (*router)->counters_report());
            if (sig == SIGHUP) reload_config(r, config_path, syncer.get());
            pid_t successor = 0;
            {
                std::lock_guard lock(hand_over.mutex);
                if (hand_over.requested && !hand_over.done) successor = hand_over.successor;
            }
            if (successor == 0) continue;
            // Hand over: stop polling, release every port and the metrics listener, answer, and
            // leave the control socket to the successor. Then either it signals that it runs
            // (SIGTERM: exit) or it dies first (resume).
            fmt::print(stderr, "calyx: handing over to pid {}\n", successor);
            const int successor_fd = static_cast<int>(::syscall(SYS_pidfd_open, successor, 0));
            metrics->reset();
            // No apply from etcd while the ports change hands; the successor finishes its restore
            // with this revision's site or a newer one.
            int64_t datastore_revision = 0;
            if (syncer) {
                syncer->stop();
                datastore_revision = syncer->sample().revision;
            }
            syncer.reset();
            const uint64_t stopped = r.release_for_hand_over();
            {
                std::lock_guard lock(hand_over.mutex);
                calyx::cp::Json neighbors = calyx::cp::Json::array();
                for (const auto& n : r.resolved_neighbors())
                    neighbors.push_back({{"ip", n.ip.to_string()}, {"mac", n.mac.to_string()}});
                hand_over.result = {{"pid", ::getpid()},
                                    {"stopped_ns", stopped},
                                    {"state_file", r.config().state_path()},
                                    {"neighbors", std::move(neighbors)}};
                if (from_datastore) hand_over.result["datastore_revision"] = datastore_revision;
                else hand_over.result["config_digest"] = r.config().source_digest;
                hand_over.done = true;
            }
            hand_over.answered.notify_all();
            control->reset();  // after the answer went out (the server finishes its request)
            bool handed_over = false;
            const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
            for (;;) {
                const timespec wait{0, 20'000'000};
                const int s2 = sigtimedwait(&signals, nullptr, &wait);
                if (s2 == SIGTERM || s2 == SIGINT) {
                    handed_over = true;
                    break;
                }
                pollfd p{successor_fd, POLLIN, 0};
                if (successor_fd < 0 || ::poll(&p, 1, 0) > 0) break;  // the successor is gone
                if (std::chrono::steady_clock::now() > give_up) {
                    fmt::print(stderr, "calyx: pid {} did not complete the hand-over in 60 s: killing it\n", successor);
                    ::kill(successor, SIGKILL);
                }
            }
            if (successor_fd >= 0) ::close(successor_fd);
            if (handed_over) {
                fmt::print(stderr, "calyx: handed over to pid {}; exiting\n", successor);
                status = 0;
                break;
            }
            fmt::print(stderr, "calyx: pid {} exited before it completed the hand-over: resuming\n", successor);
            if (auto resumed = r.resume_after_hand_over(); !resumed) {
                fmt::print(stderr, "calyx: cannot resume: {}\n", resumed.error());
                status = 1;
                break;
            }
            if (from_datastore) syncer = start_syncer();
            metrics = start_metrics();
            if (!metrics) fmt::print(stderr, "calyx: metrics after resuming: {}\n", metrics.error());
            control = start_control();
            if (!control) fmt::print(stderr, "calyx: control socket after resuming: {}\n", control.error());
            {
                std::lock_guard lock(hand_over.mutex);
                hand_over.requested = false;
            }
            fmt::print(stderr, "calyx: resumed serving\n");
        }
        if (control && *control) control->reset();  // no calyxctl request (a reload) may run while calyx stops
        fmt::print(stderr, "calyx: stopping; counters\n{}", r.counters_report());
        if (metrics && *metrics) metrics->reset();  // no scrape may reach the router once it is gone
        syncer.reset();                             // nor an apply from etcd
    }
    rte_eal_cleanup();
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    calyx::daemon::remember_own_binary();
    calyx::daemon::remember_start_affinity();
    po::options_description desc(
        "calyx: a userspace virtual router for VM clouds\n\nUsage: calyx --config FILE [--check]\n\nOptions");
    desc.add_options()("help,h", "show this help and exit")("version", "show the version and exit")(
        "config,c", po::value<std::string>()->default_value(kDefaultConfig), "configuration file (YAML)")(
        "check", "validate the configuration, print every error, and exit (0 when valid)")(
        "take-over", "replace the calyx running on this configuration's control socket without cutting "
                     "connections: it stops and releases its ports once this one is ready, then exits")(
        "take-over-hold-ms", po::value<unsigned>()->default_value(0),
        "testing: wait this long after the running calyx released its ports (a successor dying midway)")(
        "take-over-after", po::value<std::string>()->default_value(""),
        "testing: once the running calyx's table is pre-restored, wait until this file exists before asking it to "
        "hand over (a calyx restarted meanwhile)")(
        "take-over-before-open", po::value<std::string>()->default_value(""),
        "testing: wait until this file exists before opening the running calyx's state file (a calyx restarted "
        "before)")(
        "take-over-before-commit", po::value<std::string>()->default_value(""),
        "testing: once serving, wait until this file exists before putting the state file in place (a take-over "
        "started then)")(
        "take-over-before-locks", po::value<std::string>()->default_value(""),
        "testing: once the running calyx has exited, wait until this file exists before taking its locks (a calyx "
        "started then)");
    po::variables_map vm;
    try {
        po::store(po::parse_command_line(argc, argv, desc), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        fmt::print(stderr, "calyx: {}\n{}", e.what(), "Try 'calyx --help'.\n");
        return 2;
    }
    if (vm.count("help")) {
        std::cout << desc << "\n";
        return 0;
    }
    if (vm.count("version")) {
        fmt::print("calyx {}\n", CALYX_VERSION);
        return 0;
    }
    const std::string config_path = vm["config"].as<std::string>();
    if (vm.count("check")) {
        auto cfg = calyx::config::load_config_file(config_path);
        if (!cfg) {
            print_errors(cfg.error());
            return 1;
        }
        fmt::print("{}: valid ({} networks, {} instances, {} of them on this host '{}')\n", config_path,
                   cfg->networks.size(), cfg->instances.size(), cfg->local_instances().size(), cfg->host);
        return 0;
    }
    RunOptions run_options;
    run_options.take_over = vm.count("take-over") > 0;
    run_options.take_over_hold = std::chrono::milliseconds(vm["take-over-hold-ms"].as<unsigned>());
    run_options.take_over_after = vm["take-over-after"].as<std::string>();
    run_options.take_over_before_open = vm["take-over-before-open"].as<std::string>();
    run_options.take_over_before_commit = vm["take-over-before-commit"].as<std::string>();
    run_options.take_over_before_locks = vm["take-over-before-locks"].as<std::string>();
    return run(config_path, argv[0], run_options);
}
