#include "calyx_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

namespace calyx::test {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string& binary_override() {
    static std::string path;
    return path;
}

std::atomic<unsigned> g_log_seq{0};

}  // namespace

std::string calyx_binary() {
    if (const char* env = std::getenv("CALYX_BIN"); env && *env) return env;
    if (!binary_override().empty()) return binary_override();
    return "build/calyx";
}

void set_calyx_binary(std::string path) {
    binary_override() = std::move(path);
}

// ---------------------------------------------------------------------------------------------

TempDir::TempDir(std::string_view tag) {
    std::string tmpl = fmt::format("/tmp/{}-XXXXXX", tag);
    if (!::mkdtemp(tmpl.data()))
        throw std::runtime_error(fmt::format("mkdtemp({}): {}", tmpl, std::strerror(errno)));
    path_ = tmpl;
}

TempDir::~TempDir() {
    if (std::getenv("CALYX_IT_KEEP")) {
        fmt::print(stderr, "[calyx-it] keeping {}\n", path_.string());
        return;
    }
    std::error_code ec;
    fs::remove_all(path_, ec);
}

fs::path TempDir::write(std::string_view name, std::string_view text) const {
    const fs::path p = path_ / name;
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << text;
    if (!f) throw std::runtime_error(fmt::format("cannot write {}", p.string()));
    return p;
}

std::string read_file(const fs::path& p) {
    std::ifstream f(p, std::ios::binary);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

std::string describe_status(int st) {
    if (WIFEXITED(st)) return fmt::format("exited with {}", WEXITSTATUS(st));
    if (WIFSIGNALED(st))
        return fmt::format("killed by signal {} ({}){}", WTERMSIG(st), strsignal(WTERMSIG(st)),
                           WCOREDUMP(st) ? " (core dumped)" : "");
    return fmt::format("wait status 0x{:x}", st);
}

// ---------------------------------------------------------------------------------------------

std::expected<std::unique_ptr<ChildProcess>, std::string> ChildProcess::spawn(
    const std::vector<std::string>& argv, const fs::path& log_file,
    const std::optional<fs::path>& stderr_file) {
    if (argv.empty()) return std::unexpected("spawn: empty argv");
    if (::access(argv[0].c_str(), X_OK) != 0)
        return std::unexpected(
            fmt::format("{}: not executable: {}", argv[0], std::strerror(errno)));

    // Everything the child needs is prepared here: after fork() in this multi-threaded process
    // (EAL threads) the child may only make async-signal-safe calls until exec.
    const int out_fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0)
        return std::unexpected(fmt::format("open {}: {}", log_file.string(), std::strerror(errno)));
    int err_fd = out_fd;
    if (stderr_file) {
        err_fd = ::open(stderr_file->c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (err_fd < 0) {
            ::close(out_fd);
            return std::unexpected(
                fmt::format("open {}: {}", stderr_file->string(), std::strerror(errno)));
        }
    }
    const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    std::vector<std::string> args = argv;
    std::vector<char*> cargv;
    for (auto& a : args) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    const pid_t parent = ::getpid();

    const pid_t pid = ::fork();
    if (pid < 0) {
        const int e = errno;
        ::close(out_fd);
        if (err_fd != out_fd) ::close(err_fd);
        ::close(null_fd);
        return std::unexpected(fmt::format("fork: {}", std::strerror(e)));
    }
    if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != parent) ::_exit(127);
        ::setpgid(0, 0);
        // Ignored signals and the signal mask survive exec: give the child the defaults
        // (the test process ignores SIGPIPE, see VmPeerEal).
        ::signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::dup2(null_fd, 0);
        ::dup2(out_fd, 1);
        ::dup2(err_fd, 2);
        // Drop every other descriptor: a vhost-user socket of a VM peer that stayed open in
        // the child would keep the connection alive after the peer detaches.
        ::syscall(SYS_close_range, 3u, ~0u, 0u);
        ::execv(cargv[0], cargv.data());
        ::_exit(127);
    }
    ::close(out_fd);
    if (err_fd != out_fd) ::close(err_fd);
    ::close(null_fd);
    std::unique_ptr<ChildProcess> child(new ChildProcess());
    child->pid_ = pid;
    child->log_file_ = log_file;
    return child;
}

std::unique_ptr<ChildProcess> ChildProcess::adopt(pid_t pid, const fs::path& log_file) {
    std::unique_ptr<ChildProcess> child(new ChildProcess());
    child->pid_ = pid;
    child->log_file_ = log_file;
    return child;
}

ChildProcess::~ChildProcess() {
    if (running()) kill();
}

bool ChildProcess::running() {
    if (status_) return false;
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
        status_ = st;
        return false;
    }
    return r == 0;
}

std::optional<int> ChildProcess::wait(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (running()) {
        if (Clock::now() >= deadline) return std::nullopt;
        std::this_thread::sleep_for(10ms);
    }
    return status_;
}

int ChildProcess::stop(std::chrono::milliseconds grace) {
    if (running()) {
        ::kill(pid_, SIGTERM);
        if (!wait(grace)) {
            fmt::print(stderr, "[calyx-it] pid {} ignored SIGTERM for {} ms: SIGKILL\n", pid_,
                       grace.count());
            return kill();
        }
    }
    return status_.value_or(-1);
}

int ChildProcess::kill() {
    if (running()) {
        ::kill(pid_, SIGKILL);
        int st = 0;
        if (::waitpid(pid_, &st, 0) == pid_) status_ = st;
    }
    return status_.value_or(-1);
}

bool ChildProcess::wait_for_log(std::string_view text, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        if (log().find(text) != std::string::npos) return true;
        if (!running() || Clock::now() >= deadline) return log().find(text) != std::string::npos;
        std::this_thread::sleep_for(20ms);
    }
}

// ---------------------------------------------------------------------------------------------

std::unique_ptr<CalyxProcess> CalyxProcess::adopt(pid_t pid, const fs::path& log_file) {
    std::unique_ptr<CalyxProcess> p(new CalyxProcess());
    p->child_ = ChildProcess::adopt(pid, log_file);
    return p;
}

std::expected<std::unique_ptr<CalyxProcess>, std::string> CalyxProcess::start(
    const fs::path& config, const CalyxStartOptions& opts) {
    std::vector<std::string> argv{calyx_binary(), "--config", config.string()};
    for (auto& a : opts.extra_args) argv.push_back(a);
    const fs::path log = config.parent_path() / fmt::format("calyx-{}.log", ++g_log_seq);
    auto child = ChildProcess::spawn(argv, log);
    if (!child) return std::unexpected(child.error());

    std::unique_ptr<CalyxProcess> p(new CalyxProcess());
    p->child_ = std::move(*child);
    const auto deadline = Clock::now() + opts.timeout;
    auto sockets_exist = [&] {
        for (auto& s : opts.server_sockets)
            if (!fs::exists(s)) return false;
        return true;
    };
    for (;;) {
        const bool ready = p->log().find(opts.ready_line) != std::string::npos;
        const bool sockets = sockets_exist();
        if (sockets && (ready || (opts.sockets_suffice && !opts.server_sockets.empty()))) return p;
        if (!p->running())
            return std::unexpected(fmt::format("calyx stopped during start-up\n{}", p->report()));
        if (Clock::now() >= deadline) {
            std::string missing;
            for (auto& s : opts.server_sockets)
                if (!fs::exists(s)) missing += " " + s.string();
            std::string why = fmt::format(
                "calyx not ready after {} ms ({}{})", opts.timeout.count(),
                ready ? "ready line seen" : fmt::format("no \"{}\" line", opts.ready_line),
                missing.empty() ? "" : "; missing sockets:" + missing);
            p->stop(2s);
            return std::unexpected(fmt::format("{}\n{}", why, p->report()));
        }
        std::this_thread::sleep_for(20ms);
    }
}

std::string CalyxProcess::report() {
    std::string state =
        child_->running() ? fmt::format("calyx (pid {}) is running", child_->pid())
                          : fmt::format("calyx {}", describe_status(child_->status().value_or(-1)));
    std::string out = child_->log();
    constexpr size_t kMax = 16000;  // keep the tail: the failure is usually at the end
    if (out.size() > kMax) out = "...\n" + out.substr(out.size() - kMax);
    return fmt::format("{}; output ({}):\n{}--- end of calyx output ---", state,
                       child_->log_file().string(), out);
}

CheckResult run_check(const fs::path& config, std::chrono::milliseconds timeout) {
    CheckResult r;
    const unsigned seq = ++g_log_seq;
    const fs::path out = config.parent_path() / fmt::format("check-{}.out", seq);
    const fs::path err = config.parent_path() / fmt::format("check-{}.err", seq);
    auto child =
        ChildProcess::spawn({calyx_binary(), "--config", config.string(), "--check"}, out, err);
    if (!child) {
        r.err = child.error();
        return r;
    }
    auto st = (*child)->wait(timeout);
    if (!st) {
        (*child)->kill();
        r.err = fmt::format("calyx --check did not finish within {} ms\n", timeout.count());
    } else if (WIFEXITED(*st)) {
        r.exit_code = WEXITSTATUS(*st);
    } else {
        r.err = describe_status(*st) + "\n";
    }
    r.err += read_file(err);
    r.out = read_file(out);
    return r;
}

}  // namespace calyx::test
