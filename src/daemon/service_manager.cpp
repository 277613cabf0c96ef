#include "daemon/service_manager.hpp"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <systemd/sd-daemon.h>

extern char** environ;

namespace calyx::daemon {
namespace {

std::string g_binary;
cpu_set_t g_affinity;
bool g_affinity_known = false;

void notify(const std::string& state) {
    if (!under_service_manager()) return;
    // A manager that went away is no reason to stop routing: the result is only logged.
    if (const int r = sd_notify(0, state.c_str()); r < 0)
        fmt::print(stderr, "calyx: sd_notify: {}\n", std::strerror(-r));
}

}  // namespace

bool under_service_manager() {
    static const bool under = [] {
        const char* socket = std::getenv("NOTIFY_SOCKET");
        return socket != nullptr && *socket != '\0';
    }();
    return under;
}

void notify_ready(std::string_view status) { notify(fmt::format("READY=1\nSTATUS={}", status)); }

void notify_reloading() {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    const uint64_t usec = static_cast<uint64_t>(now.tv_sec) * 1'000'000 + static_cast<uint64_t>(now.tv_nsec) / 1000;
    notify(fmt::format("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration", usec));
}

void notify_status(std::string_view status) { notify(fmt::format("STATUS={}", status)); }

void notify_stopping() { notify("STOPPING=1\nSTATUS=stopping"); }

void notify_main_process(std::string_view status) {
    if (!under_service_manager()) return;
    notify(fmt::format("MAINPID={}\nREADY=1\nSTATUS={}", ::getpid(), status));
    if (const int r = sd_notify_barrier(0, 5'000'000); r < 0)
        fmt::print(stderr, "calyx: the service manager did not confirm the new main process: {}\n", std::strerror(-r));
}

void remember_own_binary() {
    std::error_code ec;
    const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) g_binary = exe.string();
}

const std::string& own_binary() { return g_binary; }

void remember_start_affinity() {
    CPU_ZERO(&g_affinity);
    g_affinity_known = sched_getaffinity(0, sizeof(g_affinity), &g_affinity) == 0;
}

std::expected<pid_t, std::string> spawn_successor(const std::string& binary, const std::string& config_path) {
    if (binary.empty()) return std::unexpected("no binary to start");
    if (::access(binary.c_str(), X_OK) != 0)
        return std::unexpected(fmt::format("{} is not an executable file: {}", binary, std::strerror(errno)));
    std::error_code ec;
    const std::string config = std::filesystem::absolute(config_path, ec).string();
    std::vector<std::string> args{binary, "--config", ec ? config_path : config, "--take-over"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    posix_spawnattr_t attr;
    posix_spawn_file_actions_t files;
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_init(&files);
    // calyx blocks its control signals in every thread (main.cpp); the successor must start
    // with none blocked and every handler at its default, as from a shell.
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    // Nothing of ours but stdin, stdout and stderr: the locks are close-on-exec, but EAL's and
    // the PMDs' descriptors (a tap's /dev/net/tun among them) need not be, and a tap held
    // open by the successor could not be released by this process.
    posix_spawn_file_actions_addclosefrom_np(&files, 3);
    // The child inherits this thread's affinity: give it the one calyx started with (EAL
    // pinned this thread to a single CPU), then take ours back.
    cpu_set_t mine;
    CPU_ZERO(&mine);
    const bool repin = g_affinity_known && pthread_getaffinity_np(pthread_self(), sizeof(mine), &mine) == 0 &&
                       pthread_setaffinity_np(pthread_self(), sizeof(g_affinity), &g_affinity) == 0;
    pid_t pid = 0;
    const int r = posix_spawn(&pid, binary.c_str(), &files, &attr, argv.data(), environ);
    if (repin) pthread_setaffinity_np(pthread_self(), sizeof(mine), &mine);
    posix_spawn_file_actions_destroy(&files);
    posix_spawnattr_destroy(&attr);
    if (r != 0) return std::unexpected(fmt::format("cannot start {}: {}", binary, std::strerror(r)));
    return pid;
}

std::expected<void, cp::CommandError> successor_can_read(const std::string& config_path,
                                                         const config::Config& running) {
    auto next = config::load_config_file(config_path);
    if (!next) {
        cp::CommandError e{fmt::format("upgrade refused: {} has {} error(s); the running calyx serves on", config_path,
                                       next.error().size()),
                           false, {}};
        for (const auto& error : next.error()) e.errors.push_back(error.to_string());
        return std::unexpected(e);
    }
    const auto file_prefix = [](const config::Config& c) -> std::string {
        const auto& args = c.dataplane.eal_args;
        const auto it = std::ranges::find(args, "--file-prefix");
        return it == args.end() || it + 1 == args.end() ? "" : *(it + 1);
    };
    if (const std::string prefix = file_prefix(*next); !prefix.empty() && prefix == file_prefix(running))
        return std::unexpected(cp::CommandError{
            fmt::format("upgrade refused: dataplane.eal_args has --file-prefix {} as the running calyx's: EAL refuses "
                        "a second primary with the same prefix; remove it (calyx then runs without shared runtime "
                        "files) or give the file another one",
                        prefix),
            false, {}});
    return {};
}

pid_t parent_of(pid_t pid) {
    std::ifstream stat(fmt::format("/proc/{}/stat", pid));
    std::string line;
    if (!std::getline(stat, line)) return 0;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ')' ends it.
    const size_t close = line.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream rest(line.substr(close + 1));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    return ppid;
}

}  // namespace calyx::daemon
