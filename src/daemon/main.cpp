// calyx: the router daemon. `calyx --config FILE` runs it; `--check` only validates.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
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
calyx::cp::ReloadResult reload_config(calyx::daemon::Router& r, const std::string& config_path) {
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
    if (auto applied = r.apply(std::move(*next)); !applied) {
        fmt::print(stderr, "calyx: reload failed, running configuration kept: {}\n", applied.error());
        r.count_reload(false);
        result.message = fmt::format("reload failed, running configuration kept: {}", applied.error());
        result.generation = r.sample().config_generation;
        return result;
    }
    r.count_reload(true);
    result.ok = true;
    result.generation = r.sample().config_generation;
    result.message = fmt::format("reloaded: generation {}", result.generation);
    fmt::print(stderr, "calyx: {}\n", result.message);
    return result;
}

// Single ownership: an exclusive lock on `path` (created if missing) held for the whole life of
// the process (the kernel drops it when the process dies, however it dies), with our pid in the
// file for the message of whoever finds it taken.
std::expected<int, std::string> take_lock(const std::string& path, std::string_view what) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return std::unexpected(fmt::format("cannot open the lock file {}: {}", path, std::strerror(errno)));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = {};
        (void)::pread(fd, pid, sizeof(pid) - 1, 0);
        ::close(fd);
        std::string owner(pid);
        while (!owner.empty() && (owner.back() == '\n' || owner.back() == ' ')) owner.pop_back();
        return std::unexpected(fmt::format(
            "another calyx (pid {}) owns {} (lock {}): two processes never own the same ports and tables; "
            "stop it first",
            owner.empty() ? "?" : owner, what, path));
    }
    const std::string pid = fmt::format("{}\n", ::getpid());
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
        // The lock is what matters; the pid is only for messages.
    }
    return fd;
}

int run(const std::string& config_path, const std::string& argv0) {
    const auto started = std::chrono::steady_clock::now();
    auto cfg = calyx::config::load_config_file(config_path);
    if (!cfg) {
        print_errors(cfg.error());
        return 1;
    }
    // Before anything is opened: a second calyx on the same control socket or state file stops
    // here, touching nothing of the running one's.
    for (const auto& [path, what] : {std::pair{cfg->control.socket + ".lock", "control socket " + cfg->control.socket},
                                     std::pair{cfg->state_path() + ".lock", "state file " + cfg->state_path()}}) {
        if (auto lock = take_lock(path, what); !lock) {
            fmt::print(stderr, "calyx: {}\n", lock.error());
            return 1;
        }
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
        if (!r.restore_report().empty()) fmt::print(stderr, "calyx: {}\n", r.restore_report());
        std::string listen = r.config().metrics.listen;
        if (listen.starts_with("localhost:")) listen = "127.0.0.1" + listen.substr(9);
        if (const auto warning = calyx::cp::exposure_warning(listen)) fmt::print(stderr, "calyx: {}\n", *warning);
        auto metrics = calyx::cp::MetricsServer::start(listen, [&r] { return r.sample(); });
        if (!metrics) {
            fmt::print(stderr, "calyx: {}\n", metrics.error());
            router->reset();
            rte_eal_cleanup();
            return 1;
        }
        // Read before the control server starts: from then on a reload may replace the config.
        const size_t instances = r.config().instances.size();
        const size_t workers = r.config().dataplane.workers.size();
        const uint64_t generation = r.generation();
        calyx::cp::CommandEnv env;
        env.info = {CALYX_VERSION, static_cast<int64_t>(::getpid()), started};
        env.reload = [&r, &config_path] {
            fmt::print(stderr, "calyx: reload requested by calyxctl\n");
            return reload_config(r, config_path);
        };
        env.now_ns = [] { return calyx::io::now_ns(); };
        auto control = calyx::cp::ControlServer::start(r.config().control.socket,
                                                       calyx::cp::make_command_table(r, env));
        if (!control) {
            fmt::print(stderr, "calyx: {}\n", control.error());
            metrics->reset();
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
            if (sig == SIGHUP) reload_config(r, config_path);
        }
        control->reset();  // no calyxctl request (a reload) may run while calyx stops
        fmt::print(stderr, "calyx: stopping; counters\n{}", r.counters_report());
        metrics->reset();  // no scrape may reach the router once it is gone
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
            fmt::print("{}: valid ({} networks, {} instances)\n", config_path, cfg->networks.size(),
                   cfg->instances.size());
        return 0;
    }
    return run(config_path, argv[0]);
}
