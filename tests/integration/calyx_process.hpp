// Runs programs under test as child processes: the real `calyx` binary (and, in the harness
// self-test, dpdk-testpmd), with stdout and stderr captured to a log file that failure
// messages quote.
//
//   TempDir dir;                                       // /tmp/calyx-it-XXXXXX, removed at exit
//   auto cfg = dir.write("calyx.yaml", yaml_text);
//   auto calyx = CalyxProcess::start(cfg, {.server_sockets = {dir / "web-1.sock"}});
//   ASSERT_TRUE(calyx) << calyx.error();
//   ... (*calyx)->log() ...
//   (*calyx)->stop();                                  // SIGTERM, then SIGKILL on timeout
#pragma once

#include <sys/types.h>

#include <chrono>
#include <expected>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace calyx::test {

namespace fs = std::filesystem;

// The calyx binary under test: $CALYX_BIN (set by meson), else what main() passed to
// set_calyx_binary() (e.g. from argv), else "build/calyx".
std::string calyx_binary();
void set_calyx_binary(std::string path);

// A fresh directory under /tmp for one test's config, sockets and logs. Removed by the
// destructor unless $CALYX_IT_KEEP is set (then its path is printed).
class TempDir {
  public:
    explicit TempDir(std::string_view tag = "calyx-it");
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const fs::path& path() const { return path_; }
    fs::path operator/(std::string_view name) const { return path_ / name; }
    // Write `text` to path()/name and return the full path.
    fs::path write(std::string_view name, std::string_view text) const;

  private:
    fs::path path_;
};

std::string read_file(const fs::path& p);

// A child process with stdout and stderr appended to one log file.
class ChildProcess {
  public:
    // Start argv[0] (a path) with argv. stdout goes to `log_file`, and so does stderr unless
    // `stderr_file` is given. The child gets no other descriptors of this process (in
    // particular no vhost-user sockets of the VM peers) and is killed if the test dies.
    static std::expected<std::unique_ptr<ChildProcess>, std::string> spawn(
        const std::vector<std::string>& argv, const fs::path& log_file,
        const std::optional<fs::path>& stderr_file = std::nullopt);
    // A process that became this one's child later: an orphan re-parented to this process, a
    // child subreaper (PR_SET_CHILD_SUBREAPER), e.g. the calyx a `calyxctl upgrade` started.
    static std::unique_ptr<ChildProcess> adopt(pid_t pid, const fs::path& log_file);
    ~ChildProcess();  // kills the child if it still runs
    ChildProcess(const ChildProcess&) = delete;
    ChildProcess& operator=(const ChildProcess&) = delete;

    pid_t pid() const { return pid_; }
    // True while the child has not exited (reaps it if it has).
    bool running();
    // Exit status as from waitpid once exited (see describe_status()).
    std::optional<int> status() const { return status_; }
    // SIGTERM, wait up to `grace`, then SIGKILL. Returns the wait status.
    int stop(std::chrono::milliseconds grace = std::chrono::seconds(5));
    // SIGKILL at once (a crash, as far as the peers can tell). Returns the wait status.
    int kill();
    // Wait for exit up to `timeout`; nullopt if still running.
    std::optional<int> wait(std::chrono::milliseconds timeout);

    const fs::path& log_file() const { return log_file_; }
    std::string log() const { return read_file(log_file_); }
    // Poll the log until it contains `text`, the child exits, or `timeout` passes.
    bool wait_for_log(std::string_view text, std::chrono::milliseconds timeout);

  private:
    ChildProcess() = default;
    pid_t pid_ = -1;
    std::optional<int> status_;
    fs::path log_file_;
};

// "exited with 0", "killed by signal 11 (core dumped)", ...
std::string describe_status(int wait_status);

struct CalyxStartOptions {
    // Server-mode vhost-user sockets calyx must have created before start() returns.
    std::vector<fs::path> server_sockets{};
    // Line calyx prints on stderr once every port is registered and the workers run.
    std::string ready_line = "calyx: ready";
    // Return as soon as all server_sockets exist, without waiting for ready_line. With no
    // server sockets the ready line is always required.
    bool sockets_suffice = false;
    std::chrono::milliseconds timeout{std::chrono::seconds(15)};
    std::vector<std::string> extra_args{};
};

// The real calyx binary running `--config FILE`, output captured next to the config.
class CalyxProcess {
  public:
    static std::expected<std::unique_ptr<CalyxProcess>, std::string> start(
        const fs::path& config, const CalyxStartOptions& opts = {});

    // The calyx `pid` (see ChildProcess::adopt) writing to `log_file`.
    static std::unique_ptr<CalyxProcess> adopt(pid_t pid, const fs::path& log_file);

    ChildProcess& process() { return *child_; }
    std::string log() const { return child_->log(); }
    bool running() { return child_->running(); }
    // SIGTERM and wait; SIGKILL after `grace`. Returns the wait status.
    int stop(std::chrono::milliseconds grace = std::chrono::seconds(5)) {
        return child_->stop(grace);
    }
    int kill() { return child_->kill(); }
    // For failure messages: status plus the captured output.
    std::string report();

  private:
    std::unique_ptr<ChildProcess> child_;
};

struct CheckResult {
    int exit_code = -1;  // -1: did not exit normally (signal, timeout, exec failure)
    std::string err;     // what calyx printed on stderr
    std::string out;     // and on stdout
};

// `calyx --config FILE --check`, bounded by `timeout`.
CheckResult run_check(const fs::path& config,
                      std::chrono::milliseconds timeout = std::chrono::seconds(20));

}  // namespace calyx::test
