// calyx: the router daemon. `calyx --config FILE` runs it; `--check` only validates.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>

#include <boost/program_options.hpp>
#include <fmt/format.h>
#include <rte_eal.h>

#include "calyx/config.hpp"
#include "cp/control_commands.hpp"
#include "cp/control_server.hpp"
#include "cp/datastore/syncer.hpp"
#include "cp/metrics.hpp"
#include "daemon/router.hpp"
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

// With a datastore the site is etcd's: the syncer applies the file with the current site, in
// turn with its own applies, so that an older site never follows a newer one.
calyx::cp::ReloadResult reload_config(calyx::daemon::Router& r, const std::string& config_path,
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

int run(const std::string& config_path, const std::string& argv0) {
    const auto started = std::chrono::steady_clock::now();
    auto cfg = calyx::config::load_config_file(config_path);
    if (!cfg) {
        print_errors(cfg.error());
        return 1;
    }
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
        auto router = calyx::daemon::Router::start(std::move(*cfg));
        if (!router) {
            fmt::print(stderr, "calyx: {}\n", router.error());
            rte_eal_cleanup();
            return 1;
        }
        calyx::daemon::Router& r = **router;
        // With a datastore: the site from etcd, applied through the same reload path as the file.
        std::unique_ptr<calyx::cp::datastore::Syncer> syncer;
        if (r.config().datastore.type == calyx::config::DatastoreType::etcd) {
            calyx::cp::datastore::Syncer::Callbacks callbacks;
            callbacks.apply = [&r](calyx::config::Config next) -> std::expected<uint64_t, std::string> {
                auto applied = r.apply(std::move(next));
                r.count_reload(applied.has_value());
                if (!applied) return std::unexpected(applied.error());
                return r.sample().config_generation;
            };
            callbacks.ports_connected = [&r] { return r.ports_connected(); };
            callbacks.log = [](const std::string& line) { fmt::print(stderr, "calyx: {}\n", line); };
            syncer = std::make_unique<calyx::cp::datastore::Syncer>(r.config(), std::move(callbacks));
            if (!syncer->wait_first_sync(kFirstSyncWait))
                fmt::print(stderr, "calyx: datastore: no site from {} within {} s; serving without it until etcd "
                                   "answers\n",
                           fmt::join(r.config().datastore.endpoints, ", "), kFirstSyncWait.count());
        }
        const auto sample = [&r, &syncer] {
            calyx::cp::RouterSample s = r.sample();
            if (syncer) s.datastore = syncer->sample();
            return s;
        };
        std::string listen = r.config().metrics.listen;
        if (listen.starts_with("localhost:")) listen = "127.0.0.1" + listen.substr(9);
        if (const auto warning = calyx::cp::exposure_warning(listen)) fmt::print(stderr, "calyx: {}\n", *warning);
        auto metrics = calyx::cp::MetricsServer::start(listen, sample);
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
        auto control = calyx::cp::ControlServer::start(r.config().control.socket,
                                                       calyx::cp::make_command_table(r, env));
        if (!control) {
            fmt::print(stderr, "calyx: {}\n", control.error());
            metrics->reset();
            syncer.reset();
            router->reset();
            rte_eal_cleanup();
            return 1;
        }
        fmt::print(stderr, "calyx: ready: {} instances, {} workers, generation {}\n", instances,
                   workers, generation);
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
            if (sig == SIGINT || sig == SIGTERM) break;
            if (sig == SIGUSR1) fmt::print(stderr, "calyx: counters\n{}", (*router)->counters_report());
            if (sig == SIGHUP) reload_config(r, config_path, syncer.get());
        }
        control->reset();  // no calyxctl request (a reload) may run while calyx stops
        fmt::print(stderr, "calyx: stopping; counters\n{}", r.counters_report());
        metrics->reset();  // no scrape may reach the router once it is gone
        syncer.reset();    // nor an apply from etcd
    }
    rte_eal_cleanup();
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    po::options_description desc(
        "calyx: a userspace virtual router for VM clouds\n\nUsage: calyx --config FILE [--check]\n\nOptions");
    desc.add_options()("help,h", "show this help and exit")("version", "show the version and exit")(
        "config,c", po::value<std::string>()->default_value(kDefaultConfig), "configuration file (YAML)")(
        "check", "validate the configuration, print every error, and exit (0 when valid)");
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
    return run(config_path, argv[0]);
}
