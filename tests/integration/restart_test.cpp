// Restart without cutting connections (issue 17) against the real calyx: established TCP
// connections, one between instances (web-1 -> db-1, both ends played by the test) and one
// masqueraded to the Internet (app-1 -> a kernel TCP echo server in the namespace), continue
// after calyx is killed with SIGKILL and started again; the masqueraded one keeps its external
// port (the kernel's socket is bound to it: nothing else would be answered), and out-of-window
// segments are still dropped. A second calyx on the same control socket refuses to start.
#include <fmt/format.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "dp/state_file.hpp"
#include "internet_fixture.hpp"
#include "io/clock.hpp"
#include "numbered_stream.hpp"

namespace calyx::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr uint16_t kEchoPort = 7000;
constexpr uint8_t kSyn = TcpHdr::kSyn, kAck = TcpHdr::kAck, kPsh = TcpHdr::kPsh;

// Keeps every connection open and answers each line with "IP:PORT line" of its peer.
constexpr const char* kEchoServer = R"(import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.0.2.80", 7000))
s.listen(16)
open(sys.argv[1], "w").close()
def serve(c, peer):
    for line in c.makefile("rb"):
        c.sendall(f"{peer[0]}:{peer[1]} {line.decode().strip()}\n".encode())
while True:
    c, peer = s.accept()
    threading.Thread(target=serve, args=(c, peer), daemon=True).start()
)";

// One side of a TCP connection played by hand: what it sends next and what it acknowledges.
struct Side {
    const Vm* vm;
    Ipv4Addr peer;
    uint16_t port, peer_port;
    uint32_t seq, ack;
};

Bytes segment(const Side& s, uint8_t flags, std::string_view payload = {}, uint32_t seq_offset = 0) {
    return FrameBuilder()
        .eth(s.vm->mac, kGatewayMac)
        .ipv4(s.vm->ip, s.peer, ipproto::kTcp)
        .tcp(s.port, s.peer_port, flags, s.seq + seq_offset, s.ack, std::vector<uint8_t>(payload.begin(), payload.end()))
        .build();
}

// A process that has not exited (a zombie has).
bool process_runs(pid_t pid) {
    std::ifstream stat(fmt::format("/proc/{}/stat", pid));
    std::string line;
    if (!std::getline(stat, line)) return false;
    const size_t close = line.rfind(')');
    return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z' && line[close + 2] != 'X';
}

// The service manager's side of sd_notify, played by the test: a datagram socket for
// $NOTIFY_SOCKET that records every message with its sender's pid (SCM_CREDENTIALS, as systemd
// reads it) and whether a watched process still ran when it arrived; the descriptor of a
// BARRIER=1 is closed at once, as systemd does once it has read everything before it.
class NotifySocket {
public:
    struct Message {
        pid_t sender = 0;
        std::string text;
        bool watched_ran = false;
    };

    explicit NotifySocket(const fs::path& path) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
        const int on = 1;
        bound_ = fd_ >= 0 && ::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) == 0 &&
                 ::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
        reader_ = std::thread([this] { read_messages(); });
    }
    ~NotifySocket() {
        stop_ = true;
        reader_.join();
        if (fd_ >= 0) ::close(fd_);
    }
    bool bound() const { return bound_; }
    void watch(pid_t pid) { watched_ = pid; }
    std::vector<Message> messages() {
        std::lock_guard lock(mutex_);
        return messages_;
    }
    // The first message from `sender` at index `since` or later that contains `text`, and its
    // index; nullopt after `timeout`.
    std::optional<std::pair<size_t, Message>> wait_for(std::string_view text, pid_t sender, size_t since,
                                                       std::chrono::milliseconds timeout) {
        std::unique_lock lock(mutex_);
        std::optional<std::pair<size_t, Message>> found;
        arrived_.wait_for(lock, timeout, [&] {
            for (size_t i = since; i < messages_.size(); ++i)
                if (messages_[i].sender == sender && messages_[i].text.find(text) != std::string::npos) {
                    found = {i, messages_[i]};
                    return true;
                }
            return false;
        });
        return found;
    }
    std::string describe() {
        std::string out;
        for (const Message& m : messages()) out += fmt::format("  from {}: {:?}\n", m.sender, m.text);
        return out.empty() ? "  (no message)\n" : out;
    }

private:
    void read_messages() {
        while (!stop_) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) continue;
            char data[4096];
            alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(16 * sizeof(int))];
            iovec iov{data, sizeof(data)};
            msghdr msg{};
            msg.msg_iov = &iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control;
            msg.msg_controllen = sizeof(control);
            const ssize_t n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
            if (n < 0) continue;
            Message m{0, std::string(data, static_cast<size_t>(n)), watched_ > 0 && process_runs(watched_)};
            for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
                if (c->cmsg_level != SOL_SOCKET) continue;
                if (c->cmsg_type == SCM_CREDENTIALS) m.sender = reinterpret_cast<const ucred*>(CMSG_DATA(c))->pid;
                if (c->cmsg_type == SCM_RIGHTS) {
                    const size_t fds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                    for (size_t i = 0; i < fds; ++i) ::close(reinterpret_cast<const int*>(CMSG_DATA(c))[i]);
                }
            }
            std::lock_guard lock(mutex_);
            messages_.push_back(std::move(m));
            arrived_.notify_all();
        }
    }

    int fd_ = -1;
    bool bound_ = false;
    std::atomic<bool> stop_{false};
    std::atomic<pid_t> watched_{0};
    std::mutex mutex_;
    std::condition_variable arrived_;
    std::vector<Message> messages_;
    std::thread reader_;
};

std::string calyxctl_binary() {
    const char* env = std::getenv("CALYXCTL_BIN");
    return env ? env : "build/calyxctl";
}

class RestartTest : public InternetFixture {
protected:
    virtual ConfigOptions restart_options() const { return {}; }
    void SetUp() override {
        ASSERT_NO_FATAL_FAILURE(start_with_internet(restart_options()));
        std::ofstream(dir_ / "echo.py") << kEchoServer;
        const auto ready = dir_ / "echo.ready";
        const auto started = ns_->exec(fmt::format("python3 {} {} >/dev/null 2>&1 & echo $!",
                                                   (dir_ / "echo.py").string(), ready.string()));
        echo_pid_ = std::atoi(started.output.c_str());
        ASSERT_GT(echo_pid_, 0) << started.output;
        for (int i = 0; i < 100 && !fs::exists(ready); ++i) std::this_thread::sleep_for(50ms);
        ASSERT_TRUE(fs::exists(ready)) << "the echo server did not start";
    }
    void TearDown() override {
        if (echo_pid_ > 0) sh(fmt::format("kill {}", echo_pid_));
        InternetFixture::TearDown();
    }

    // `from`:`port` (web-1 unless said) -> db-1:5432, both ends by hand.
    void open_between_instances(uint16_t port = 50000, const Vm& from = kWeb) {
        web_ = {&from, kDb.ip, port, 5432, 100, 0};
        db_ = {&kDb, from.ip, 5432, port, 900, 0};
        ASSERT_TRUE(vm(from).send(segment(web_, kSyn)));
        ASSERT_TRUE(vm(kDb).receive(kReply, tcp_to(kDb, 5432, kSyn))) << "SYN did not reach db-1";
        db_.ack = ++web_.seq;
        ASSERT_TRUE(vm(kDb).send(segment(db_, kSyn | kAck)));
        ASSERT_TRUE(vm(from).receive(kReply, tcp_to(from, web_.port, kSyn | kAck))) << "SYN-ACK did not reach " << from.name;
        web_.ack = ++db_.seq;
        ASSERT_TRUE(vm(from).send(segment(web_, kAck)));
        ASSERT_TRUE(vm(kDb).receive(kReply, tcp_to(kDb, 5432, kAck)));
    }
    // web_'s side (web-1 unless opened from another) sends `data` to db-1, which acknowledges it.
    void exchange_between_instances(std::string_view data) {
        const Vm& from = *web_.vm;
        ASSERT_TRUE(vm(from).send(segment(web_, kAck | kPsh, data)));
        ASSERT_TRUE(vm(kDb).receive(kReply, [&](const Bytes& f) {
            return tcp_to(kDb, 5432, kAck)(f) && tcp_payload(f) == data;
        })) << from.name << "'s data did not reach db-1";
        web_.seq += static_cast<uint32_t>(data.size());
        db_.ack = web_.seq;
        ASSERT_TRUE(vm(kDb).send(segment(db_, kAck)));
        ASSERT_TRUE(vm(from).receive(kReply, tcp_to(from, web_.port, kAck))) << "db-1's ACK did not reach " << from.name;
    }
    // The same, retransmitted (as TCP would) while calyx comes up.
    void send_until_db_receives(std::string_view data, std::chrono::milliseconds wait) {
        const Vm& from = *web_.vm;
        const Bytes out = segment(web_, kAck | kPsh, data);
        const auto deadline = Clock::now() + wait;
        while (Clock::now() < deadline) {
            ASSERT_TRUE(vm(from).send(out));
            if (vm(kDb).receive(300ms, [&](const Bytes& f) { return tcp_to(kDb, 5432, kAck)(f) && tcp_payload(f) == data; })) {
                web_.seq += static_cast<uint32_t>(data.size());
                db_.ack = web_.seq;
                ASSERT_TRUE(vm(kDb).send(segment(db_, kAck)));
                ASSERT_TRUE(vm(from).receive(kReply, tcp_to(from, web_.port, kAck))) << "db-1's ACK did not reach " << from.name;
                return;
            }
        }
        FAIL() << from.name << "'s data did not reach db-1 within " << wait.count() << " ms";
    }

    // app-1 -> the echo server, masqueraded.
    void open_to_internet() {
        app_ = {&kApp, kInternetServer, 41000, kEchoPort, 1000, 0};
        ASSERT_TRUE(vm(kApp).send(segment(app_, kSyn)));
        const auto syn_ack = vm(kApp).receive(kReply, tcp_to(kApp, 41000, kSyn | kAck));
        ASSERT_TRUE(syn_ack) << "no SYN-ACK from the echo server";
        ++app_.seq;
        app_.ack = tcp_of(*syn_ack).seq.host() + 1;
        ASSERT_TRUE(vm(kApp).send(segment(app_, kAck)));
    }
    // app-1 sends a line, retransmitting until the echo server's answer arrives; returns it.
    std::string echo(std::string_view word, std::chrono::milliseconds wait = kReply) {
        const std::string line = std::string(word) + "\n";
        const auto answer = vm(kApp).request(segment(app_, kAck | kPsh, line), wait, [&](const Bytes& f) {
            return tcp_to(kApp, 41000, kAck)(f) && tcp_payload(f).find(word) != std::string::npos;
        }, 300ms);
        if (!answer) return "";
        app_.seq += static_cast<uint32_t>(line.size());
        const std::string got = tcp_payload(*answer);
        app_.ack = tcp_of(*answer).seq.host() + static_cast<uint32_t>(got.size());
        vm(kApp).send(segment(app_, kAck));
        return got;
    }

    // SIGKILL, then a new calyx on the same config; the VMs re-attach (their sockets are new)
    // and the Internet gets the new tap.
    void crash_and_start() {
        for (auto& [name, p] : peers_) p->detach();
        calyx_->kill();
        ASSERT_NO_FATAL_FAILURE(start_calyx(options_));
        ASSERT_TRUE(calyx_->process().wait_for_log("calyx: ready", 15s)) << calyx_->log();
        ASSERT_NO_FATAL_FAILURE(connect_uplink());
        for (const Vm* v : kVms) ASSERT_NO_FATAL_FAILURE(attach(*v));
    }

    // The same configuration for a second calyx beside the first: only its EAL file prefix
    // differs (two DPDK primaries cannot share one; calyx's default, --in-memory, needs none).
    fs::path successor_config(std::string_view which = "next") {
        std::string text = read_file(config_);
        const std::string prefix = identity_.eal_prefix;
        const size_t at = text.find(prefix);
        EXPECT_NE(at, std::string::npos);
        text.replace(at, prefix.size(), fmt::format("{}-{}", prefix, which));
        return dir_.write(fmt::format("calyx-{}.yaml", which), text);
    }
    // `text` without the EAL file prefix the fixture gives calyx: calyx's default then
    // (--in-memory), so that two calyx processes run on the same file, as in production.
    std::string without_file_prefix(std::string text) const {
        const std::string prefix = fmt::format(", \"--file-prefix\", \"{}\"", identity_.eal_prefix);
        const size_t at = text.find(prefix);
        EXPECT_NE(at, std::string::npos) << text;
        if (at != std::string::npos) text.erase(at, prefix.size());
        return text;
    }
    // The running calyx restarted on its file without the EAL file prefix: a successor can
    // then take over on that very file.
    void serve_from_one_file() {
        const std::string text = without_file_prefix(read_file(config_));  // before the file is truncated
        std::ofstream(config_) << text;
        ASSERT_NO_FATAL_FAILURE(crash_and_start());
    }
    // A successor (`--take-over` and `args`) on `config`, returned once it printed `line`.
    std::unique_ptr<CalyxProcess> start_successor(const fs::path& config, std::vector<std::string> args,
                                                  const std::string& line) {
        args.insert(args.begin(), "--take-over");
        auto next = CalyxProcess::start(config, {.ready_line = line, .timeout = 30s, .extra_args = std::move(args)});
        EXPECT_TRUE(next.has_value()) << next.error() << "\nthe running calyx:\n" << calyx_->log();
        return next ? std::move(*next) : nullptr;
    }
    // A third calyx started on `config` while a successor holds the stage under test: it must
    // refuse (exit status 1); its log, to say why.
    std::string refused_third(const fs::path& config, std::vector<std::string> extra = {}) {
        std::vector<std::string> args{calyx_binary(), "--config", config.string()};
        args.insert(args.end(), extra.begin(), extra.end());
        auto third = ChildProcess::spawn(args, dir_ / "third.log");
        EXPECT_TRUE(third.has_value()) << third.error();
        if (!third) return {};
        const auto status = (*third)->wait(30s);
        EXPECT_TRUE(status.has_value()) << "it started\n" << (*third)->log();
        if (status) EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << describe_status(*status);
        return (*third)->log();
    }
    // After the VMs' backend changed: re-attach them and give the Internet the new tap.
    void reattach_everything() {
        ASSERT_NO_FATAL_FAILURE(connect_uplink());
        for (const Vm* v : kVms) {
            vm(*v).detach();
            ASSERT_NO_FATAL_FAILURE(attach(*v));
        }
    }
    // Both connections carry data again; the masqueraded one from the same external endpoint.
    void expect_connections_continue(const std::string& seen_as) {
        ASSERT_NO_FATAL_FAILURE(send_until_db_receives("after", 10s));
        const std::string again = echo("after", 10s);
        ASSERT_FALSE(again.empty()) << "the masqueraded connection did not continue\n" << calyx_->log();
        EXPECT_EQ(again.substr(0, again.find(' ')), seen_as) << "the same external address and port";
        ASSERT_TRUE(vm(kWeb).send(segment(web_, kAck | kPsh, "stray", 0x40000000)));
        expect_nothing(kDb, [](const Bytes& f) { return is_tcp(f) && tcp_payload(f) == "stray"; },
                       "out-of-window segment");
        const auto c = wait_for_drops("web-1", "ct_out_of_window", 1);
        ASSERT_TRUE(c);
        EXPECT_EQ(c->drops("web-1", "ct_out_of_window"), 1u);
        ASSERT_NO_FATAL_FAILURE(exchange_between_instances("in-window"));
    }
    // Both connections open and carrying data; returns how the echo server sees app-1.
    std::string open_both() {
        open_between_instances();
        exchange_between_instances("before");
        open_to_internet();
        const std::string first = echo("before");
        EXPECT_FALSE(first.empty()) << "no echo before the restart";
        return first.substr(0, first.find(' '));
    }

    // calyx as systemd runs it (conf/calyx.service, Type=notify): restarted with $NOTIFY_SOCKET
    // at `notify`, on its config without an EAL file prefix (a successor it starts itself reads
    // the same file, and two DPDK primaries cannot share a prefix). This test process becomes a
    // child subreaper, as systemd is: a successor outliving its parent is re-parented here.
    void serve_under_service_manager(const fs::path& notify) {
        ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
        const std::string text = without_file_prefix(read_file(config_));  // before the file is truncated
        std::ofstream(config_) << text;
        ::setenv("NOTIFY_SOCKET", notify.c_str(), 1);
        crash_and_start();
        ::unsetenv("NOTIFY_SOCKET");
    }
    // The pid in the running calyx's "upgrade requested: started BINARY (pid N)" line.
    pid_t successor_started() {
        const std::string log = calyx_->log();
        const size_t at = log.rfind("calyx: upgrade requested: started ");
        if (at == std::string::npos) return 0;
        const size_t pid = log.find("(pid ", at);
        return pid == std::string::npos ? 0 : std::atoi(log.c_str() + pid + 5);
    }

    std::pair<std::unique_ptr<CalyxProcess>, std::string> reload_web2_while_a_successor_waits(
        const fs::path& go, ConfigOptions& with_web2);
    std::string expect_no_take_over_with_file(std::unique_ptr<CalyxProcess> next, const fs::path& go,
                                              const std::string& text);

    int echo_pid_ = 0;
    Side web_{}, db_{}, app_{};
};

TEST_F(RestartTest, HandOverToANewCalyxKeepsConnectionsAndTheirNatPort) {
    const std::string seen_as = open_both();
    ASSERT_FALSE(HasFatalFailure());
    const pid_t old_pid = calyx_->process().pid();
    CalyxStartOptions o;
    o.extra_args = {"--take-over"};
    o.timeout = 30s;
    auto next = CalyxProcess::start(successor_config(), o);
    ASSERT_TRUE(next.has_value()) << next.error() << "\nthe running calyx:\n" << calyx_->log();
    // The old one exits by itself, successfully, once the new one runs.
    const auto old_status = calyx_->process().wait(10s);
    ASSERT_TRUE(old_status.has_value()) << "the old calyx still runs\n" << calyx_->log();
    EXPECT_TRUE(WIFEXITED(*old_status) && WEXITSTATUS(*old_status) == 0) << describe_status(*old_status);
    EXPECT_NE(calyx_->log().find(fmt::format("handed over to pid {}", (*next)->process().pid())), std::string::npos)
        << calyx_->log();
    auto previous = std::move(calyx_);
    calyx_ = std::move(*next);
    const std::string log = calyx_->log();
    EXPECT_NE(log.find(fmt::format("took over from pid {}", old_pid)), std::string::npos) << log;
    EXPECT_NE(log.find("restored 2 connections (1 masqueraded)"), std::string::npos) << log;
    const size_t gap = log.find("the data plane stood still for ");
    if (gap != std::string::npos) fmt::print("{}\n", log.substr(gap, log.find('\n', gap) - gap));
    EXPECT_NE(log.find("(1 neighbours handed over)"), std::string::npos) << "the uplink's gateway\n" << log;
    // The gateway's MAC came with the hand-over: app-1's next segment leaves at once, before
    // the new tap is even in the namespace where the gateway could answer an ARP request.
    vm(kApp).detach();
    ASSERT_NO_FATAL_FAILURE(attach(kApp));
    ASSERT_TRUE(vm(kApp).send(segment(app_, kAck | kPsh, "early\n")));
    std::this_thread::sleep_for(300ms);
    const auto early = counters();
    ASSERT_TRUE(early);
    EXPECT_EQ(early->drops("app-1", "neighbor_unresolved"), 0u) << early->text;
    ASSERT_NO_FATAL_FAILURE(reattach_everything());
    ASSERT_NO_FATAL_FAILURE(expect_connections_continue(seen_as));
    // Single ownership passed on: a third calyx without --take-over is refused by the new one.
    auto third = CalyxProcess::start(successor_config(), {.timeout = 10s});
    ASSERT_FALSE(third.has_value());
    EXPECT_NE(third.error().find(fmt::format("another calyx (pid {})", calyx_->process().pid())), std::string::npos)
        << third.error();
}

// A successor whose configuration names another state file (dataplane.state_file moved, as the
// warning about a file on disk advises) finds none and restores no table: the running calyx
// still hands over to it (its pid is the one the successor started beside); the connections
// are cut, as that move cuts them.
TEST_F(RestartTest, HandOverToACalyxWithAnotherStateFileProceedsWithoutTheTable) {
    ASSERT_NO_FATAL_FAILURE(open_between_instances());
    const pid_t old_pid = calyx_->process().pid();
    std::string text = read_file(successor_config());
    const size_t at = text.find("dataplane:\n");
    ASSERT_NE(at, std::string::npos) << text;
    text.insert(at + std::string("dataplane:\n").size(),
                fmt::format("  state_file: {}\n", (dir_.path() / "moved.state").string()));
    const fs::path moved = dir_.write("calyx-moved.yaml", text);
    CalyxStartOptions o;
    o.extra_args = {"--take-over"};
    o.timeout = 30s;
    auto next = CalyxProcess::start(moved, o);
    ASSERT_TRUE(next.has_value()) << next.error() << "\nthe running calyx:\n" << calyx_->log();
    const auto old_status = calyx_->process().wait(10s);
    ASSERT_TRUE(old_status.has_value()) << "the old calyx still runs\n" << calyx_->log();
    EXPECT_TRUE(WIFEXITED(*old_status) && WEXITSTATUS(*old_status) == 0) << describe_status(*old_status);
    EXPECT_EQ(calyx_->log().find("take-over refused"), std::string::npos) << calyx_->log();
    auto previous = std::move(calyx_);
    calyx_ = std::move(*next);
    EXPECT_NE(calyx_->log().find(fmt::format("took over from pid {}", old_pid)), std::string::npos) << calyx_->log();
    EXPECT_TRUE(fs::exists(dir_.path() / "moved.state"));
}

TEST_F(RestartTest, HandOverWhileTrafficFlowsCountsWhatIsLost) {
    // web-1 streams numbered segments of its connection to db-1, one every 2 ms, through the
    // hand-over; db-1 receives. The VMs re-attach as soon as the new calyx's sockets appear (a
    // QEMU guest with reconnect=1 does that by itself). Lost: segments sent that never arrived.
    ASSERT_NO_FATAL_FAILURE(open_between_instances());
    auto next = ChildProcess::spawn({calyx_binary(), "--config", successor_config().string(), "--take-over"},
                                    dir_ / "successor.log");
    ASSERT_TRUE(next.has_value()) << next.error();
    std::set<uint32_t> arrived;
    uint32_t sent = 0;
    Clock::time_point last_before{}, first_after{};
    bool handed_over = false, reattached = false;
    const auto deadline = Clock::now() + 30s;
    Clock::time_point stop_at = deadline;
    const auto payload_of = [](uint32_t n) { return fmt::format("seg{:06}", n); };
    while (Clock::now() < stop_at) {
        const std::string data = payload_of(sent);
        if (vm(kWeb).attached()) vm(kWeb).send(segment(web_, kAck | kPsh, data));
        web_.seq += static_cast<uint32_t>(data.size());
        ++sent;
        if (sent % 64 == 0 && vm(kDb).attached()) {  // db-1 acknowledges: the window moves on
            db_.ack = web_.seq;
            vm(kDb).send(segment(db_, kAck));
        }
        if (vm(kDb).attached())
            for (const Bytes& f : vm(kDb).receive_all(2ms, [](const Bytes& f) { return is_tcp(f); })) {
                const std::string got = tcp_payload(f);
                if (!got.starts_with("seg")) continue;
                arrived.insert(static_cast<uint32_t>(std::stoul(got.substr(3))));
                if (!handed_over) last_before = Clock::now();
                if (handed_over && first_after == Clock::time_point{}) {
                    first_after = Clock::now();
                    stop_at = first_after + 300ms;
                }
            }
        if (!handed_over && (*next)->log().find("calyx: ready") != std::string::npos) handed_over = true;
        if (handed_over && !reattached) {
            ASSERT_NO_FATAL_FAILURE(reattach_everything());
            reattached = true;
        }
    }
    ASSERT_TRUE(handed_over) << (*next)->log();
    ASSERT_NE(first_after, Clock::time_point{}) << "nothing arrived after the hand-over\n" << (*next)->log();
    const auto gap = std::chrono::duration_cast<std::chrono::milliseconds>(first_after - last_before);
    const uint32_t lost = sent - static_cast<uint32_t>(arrived.size());
    const std::string log = (*next)->log();
    const size_t still = log.find("the data plane stood still for ");
    fmt::print("hand-over while web-1 streams to db-1 (a segment every 2 ms): {} sent, {} lost, {} ms from the last "
               "segment through the old calyx to the first through the new one (VMs re-attached by the harness); "
               "calyx: {}\n",
               sent, lost, gap.count(), still == std::string::npos ? "?" : log.substr(still, log.find('\n', still) - still));
    EXPECT_GT(arrived.size(), 0u);
    EXPECT_LT(gap, 10s);
    // The connection is the same one: it goes on without a SYN.
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("after"));
    calyx_->process().wait(10s);
    // The new process becomes the fixture's calyx (TearDown stops it).
    calyx_.reset();
    (*next)->stop();
}

TEST_F(RestartTest, AHandOverWhoseSuccessorDiesMidwayLeavesTheOldOneServing) {
    const std::string seen_as = open_both();
    ASSERT_FALSE(HasFatalFailure());
    // The successor stops the old one, then holds for 5 s before it takes the ports: killed
    // then, it never took anything.
    auto next = ChildProcess::spawn({calyx_binary(), "--config", successor_config().string(), "--take-over",
                                     "--take-over-hold-ms", "5000"},
                                    dir_ / "successor.log");
    ASSERT_TRUE(next.has_value()) << next.error();
    ASSERT_TRUE(calyx_->process().wait_for_log("calyx: handing over to pid", 20s)) << calyx_->log();
    ASSERT_TRUE((*next)->wait_for_log("it stopped its workers and released its ports", 10s)) << (*next)->log();
    (*next)->kill();
    ASSERT_TRUE(calyx_->process().wait_for_log("calyx: resumed serving", 10s)) << calyx_->log();
    EXPECT_TRUE(calyx_->running());
    ASSERT_NO_FATAL_FAILURE(reattach_everything());
    ASSERT_NO_FATAL_FAILURE(expect_connections_continue(seen_as));
    // Its control socket answers again: another hand-over could be tried.
    EXPECT_TRUE(fs::exists(control_socket()));
}

TEST_F(RestartTest, ACalyxRestartedWhileItsSuccessorPreRestoredRefusesToHandOverAndServesOn) {
    // The successor pre-restores the running calyx's table, then waits (a test hook) before it
    // asks for the ports. Meanwhile that calyx crashes and is started again: the restarted one
    // restores the same table and goes on tracking in a file of its own. The successor's table
    // is the dead one's; handed the restarted one's ports, it would drop every connection
    // opened since (and have the restarted one's file renamed over by its stale one).
    ASSERT_NO_FATAL_FAILURE(open_between_instances());
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("before"));
    const pid_t crashed = calyx_->process().pid();
    const fs::path go = dir_ / "successor.go";
    auto next = ChildProcess::spawn({calyx_binary(), "--config", successor_config().string(), "--take-over",
                                     "--take-over-after", go.string()},
                                    dir_ / "successor.log");
    ASSERT_TRUE(next.has_value()) << next.error();
    ASSERT_TRUE((*next)->wait_for_log("before it asks the running calyx to hand over", 30s)) << (*next)->log();
    ASSERT_NO_FATAL_FAILURE(crash_and_start());
    const pid_t restarted = calyx_->process().pid();
    ASSERT_NO_FATAL_FAILURE(send_until_db_receives("restarted", 10s));
    // What only the restarted calyx tracks: a connection opened through it.
    const Side first_web = web_, first_db = db_;
    ASSERT_NO_FATAL_FAILURE(open_between_instances(50001));
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("new"));

    std::ofstream(go).close();
    const auto status = (*next)->wait(30s);
    ASSERT_TRUE(status.has_value()) << "the successor took over from the restarted calyx\n"
                                    << (*next)->log() << "the restarted calyx:\n" << calyx_->log();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << describe_status(*status);
    const std::string log = (*next)->log();
    EXPECT_NE(log.find(fmt::format("this calyx (pid {}, state file generation", restarted)), std::string::npos) << log;
    EXPECT_NE(log.find(fmt::format("the one whose table the successor restored (pid {}, generation", crashed)),
              std::string::npos)
        << log;
    EXPECT_EQ(calyx_->log().find("calyx: handing over to pid"), std::string::npos) << calyx_->log();
    EXPECT_NE(calyx_->log().find("calyx: take-over refused: this calyx"), std::string::npos) << calyx_->log();
    ASSERT_TRUE(calyx_->running()) << calyx_->log();
    // Both connections go on through the restarted calyx, which never stopped.
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("still"));
    web_ = first_web;
    db_ = first_db;
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("after"));
}

// web-2, an instance the operator adds (public, in the fixture's open group).
const Vm kWeb2{"web-2", "public", {{0x52, 0x54, 0x00, 0x00, 0x01, 0x02}}, Ipv4Addr::from_octets(203, 0, 113, 11),
               Ipv4Addr::from_octets(203, 0, 113, 1)};

// With the running calyx on one file (serve_from_one_file): a successor on it that waits (`go`)
// before it asks to hand over; web-2 added to the file (`with_web2`) and reloaded into the
// running calyx, and a connection web-2 -> db-1 opened through it. Returns the successor and the
// text the running calyx serves.
std::pair<std::unique_ptr<CalyxProcess>, std::string> RestartTest::reload_web2_while_a_successor_waits(
    const fs::path& go, ConfigOptions& with_web2) {
    auto next = start_successor(config_, {"--take-over-after", go.string()}, "before it asks the running calyx");
    if (!next) return {};
    with_web2 = options_;
    with_web2.more_vms = {kWeb2};
    with_web2.security.member(kWeb2, {"open"});
    const std::string served = without_file_prefix(config_text(with_web2));
    const ReloadOutcome added = reload_text(served);
    EXPECT_TRUE(added.accepted) << added.output;
    attach(kWeb2);
    if (HasFatalFailure()) return {};
    open_between_instances(50002, kWeb2);
    if (HasFatalFailure()) return {};
    exchange_between_instances("before");
    if (HasFatalFailure()) return {};
    return {std::move(next), served};
}

// Without a datastore: the operator adds an instance to the file and reloads the running calyx
// while its successor pre-restores (the successor read the file before). The successor must
// finish with the file as the running calyx served it; with the file it read at its start it
// refused web-2's connections as "of removed instances" and served without web-2. The running
// calyx names the configuration it served (its digest) when it hands over. Both run on the same
// file, as in production.
TEST_F(RestartTest, AnInstanceReloadedIntoTheRunningCalyxWhileItsSuccessorPreRestoredKeepsItsConnections) {
    ASSERT_NO_FATAL_FAILURE(serve_from_one_file());
    ASSERT_NO_FATAL_FAILURE(open_between_instances());
    const Side first_web = web_, first_db = db_;
    const fs::path go = dir_ / "successor.go";
    ConfigOptions with_web2;
    auto next = reload_web2_while_a_successor_waits(go, with_web2).first;
    ASSERT_TRUE(next);

    std::ofstream(go).close();
    ASSERT_TRUE(next->process().wait_for_log("calyx: ready", 30s)) << next->log();
    ASSERT_TRUE(calyx_->process().wait(10s)) << "the old calyx still runs\n" << calyx_->log();
    calyx_ = std::move(next);
    const std::string log = calyx_->log();
    EXPECT_NE(log.find("changed while this calyx pre-restored: finishing with the file as it is now (as pid"), std::string::npos)
        << log;
    EXPECT_NE(log.find("restored 2 connections"), std::string::npos) << log;
    EXPECT_NE(log.find("0 of removed instances"), std::string::npos) << log;
    ASSERT_NO_FATAL_FAILURE(reattach_everything());
    vm(kWeb2).detach();
    ASSERT_NO_FATAL_FAILURE(attach(kWeb2));
    // web-2's connection goes on through the successor (no SYN), and so does web-1's.
    ASSERT_NO_FATAL_FAILURE(send_until_db_receives("after", 10s));
    web_ = first_web;
    db_ = first_db;
    ASSERT_NO_FATAL_FAILURE(send_until_db_receives("after", 10s));
}

// The file replaced by `text` after the reload, before the successor asks: it can finish neither
// with what the running calyx served (the file no longer says it) nor with what it read at its
// start (without web-2: its connections would be lost). It exits 1 without taking over, and the
// running calyx resumes with its own configuration and table: nothing is lost. Returns what the
// successor printed.
std::string RestartTest::expect_no_take_over_with_file(std::unique_ptr<CalyxProcess> next, const fs::path& go,
                                                       const std::string& text) {
    dir_.write("calyx.yaml.next", text);
    fs::rename(dir_ / "calyx.yaml.next", config_);
    std::ofstream(go).close();
    const auto status = next->process().wait(30s);
    const std::string log = next->log();
    EXPECT_TRUE(status.has_value()) << "the successor took over\n" << log;
    if (!status) return log;
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << describe_status(*status);
    EXPECT_NE(log.find("not taking over, pid"), std::string::npos) << log;
    EXPECT_TRUE(calyx_->process().wait_for_log("calyx: resumed serving", 10s)) << calyx_->log();
    reattach_everything();
    vm(kWeb2).detach();
    attach(kWeb2);
    if (!HasFatalFailure()) send_until_db_receives("after", 10s);
    return log;
}

TEST_F(RestartTest, AFileBrokenAfterAReloadDuringThePreRestoreStopsTheTakeOverAndLosesNothing) {
    ASSERT_NO_FATAL_FAILURE(serve_from_one_file());
    const fs::path go = dir_ / "successor.go";
    ConfigOptions with_web2;
    auto [next, served] = reload_web2_while_a_successor_waits(go, with_web2);
    ASSERT_TRUE(next);
    const std::string log = expect_no_take_over_with_file(std::move(next), go, served + "uplnk: {}\n");
    // The error, located, then why it does not take over.
    EXPECT_NE(log.find("calyx.yaml:" + std::to_string(line_of(served + "uplnk: {}\n", "uplnk")) +
                       ":1: unknown key 'uplnk'"),
              std::string::npos)
        << log;
    EXPECT_NE(log.find("served another configuration than " + config_.string() +
                       " held when this calyx started, and the file now has 1 error(s)"),
              std::string::npos)
        << log;
}

// The same with a file that changes what a running calyx cannot change: the successor built its
// table for the capacity it started with, and must not serve a configuration that says another.
TEST_F(RestartTest, AFileChangingAFixedSettingAfterAReloadDuringThePreRestoreStopsTheTakeOver) {
    ASSERT_NO_FATAL_FAILURE(serve_from_one_file());
    const fs::path go = dir_ / "successor.go";
    ConfigOptions with_web2;
    auto [next, served] = reload_web2_while_a_successor_waits(go, with_web2);
    ASSERT_TRUE(next);
    with_web2.conntrack_capacity = 131072;
    const std::string log = expect_no_take_over_with_file(std::move(next), go, without_file_prefix(config_text(with_web2)));
    EXPECT_NE(log.find(config_.string() + " changed since this calyx started (dataplane.conntrack.capacity cannot "
                                          "change while calyx runs"),
              std::string::npos)
        << log;
}

// The running calyx crashes and is started again before its successor opens the state file
// (a supervisor restarting it while the successor initialises EAL): the successor reads the
// restarted calyx's table, so it is that one it takes over from. It named the crashed one's
// pid, the pid in the lock file when it started, and was refused as if the restart had come
// during its restore.
TEST_F(RestartTest, ACalyxRestartedBeforeItsSuccessorOpenedTheStateFileHandsOverToIt) {
    ASSERT_NO_FATAL_FAILURE(open_between_instances());
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("before"));
    const pid_t crashed = calyx_->process().pid();
    const fs::path go = dir_ / "successor.go";
    auto next = start_successor(successor_config(), {"--take-over-before-open", go.string()},
                                "before it opens the running calyx's state file");
    ASSERT_TRUE(next);
    ASSERT_NO_FATAL_FAILURE(crash_and_start());
    const pid_t restarted = calyx_->process().pid();
    ASSERT_NO_FATAL_FAILURE(send_until_db_receives("restarted", 10s));
    // What only the restarted calyx tracks: a connection opened through it.
    const Side first_web = web_, first_db = db_;
    ASSERT_NO_FATAL_FAILURE(open_between_instances(50001));
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("new"));

    std::ofstream(go).close();
    ASSERT_TRUE(next->process().wait_for_log("calyx: ready", 30s)) << next->log() << "the restarted calyx:\n"
                                                                   << calyx_->log();
    const auto old_status = calyx_->process().wait(10s);
    ASSERT_TRUE(old_status.has_value()) << "the restarted calyx still runs\n" << calyx_->log();
    EXPECT_TRUE(WIFEXITED(*old_status) && WEXITSTATUS(*old_status) == 0) << describe_status(*old_status);
    calyx_ = std::move(next);
    const std::string log = calyx_->log();
    EXPECT_NE(log.find(fmt::format("the running calyx is pid {} now (pid {} was", restarted, crashed)),
              std::string::npos)
        << log;
    EXPECT_NE(log.find(fmt::format("took over from pid {}", restarted)), std::string::npos) << log;
    EXPECT_NE(log.find("restored 2 connections"), std::string::npos) << log;
    ASSERT_NO_FATAL_FAILURE(reattach_everything());
    ASSERT_NO_FATAL_FAILURE(send_until_db_receives("after", 10s));
    web_ = first_web;
    db_ = first_db;
    ASSERT_NO_FATAL_FAILURE(send_until_db_receives("after", 10s));
}

// A third --take-over while the successor completes its own: the successor serves and holds the
// locks, but its state file is not in place yet, so the file there is still its predecessor's. A
// take-over then would restore that stale table and be refused as "started again meanwhile",
// which is not what happened. It is refused at once, saying what is going on; started again once
// the successor took over, it takes over.
TEST_F(RestartTest, ATakeOverStartedWhileTheSuccessorCompletesItsOwnIsRefusedSayingSo) {
    ASSERT_NO_FATAL_FAILURE(open_between_instances());
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("before"));
    const fs::path go = dir_ / "commit.go";
    auto next = start_successor(successor_config(), {"--take-over-before-commit", go.string()},
                                "before it puts its state file in place");
    ASSERT_TRUE(next);
    ASSERT_TRUE(calyx_->process().wait(10s)) << "the old calyx still runs\n" << calyx_->log();
    const pid_t successor = next->process().pid();
    const fs::path third_config = successor_config("third");
    const std::string refused = refused_third(third_config, {"--take-over"});
    ASSERT_FALSE(HasFailure());
    EXPECT_NE(refused.find(fmt::format("pid {} is completing its own take-over", successor)), std::string::npos)
        << refused;
    EXPECT_EQ(refused.find("started again meanwhile"), std::string::npos) << refused;

    std::ofstream(go).close();
    ASSERT_TRUE(next->process().wait_for_log("calyx: ready", 10s)) << next->log();
    calyx_ = std::move(next);
    ASSERT_NO_FATAL_FAILURE(reattach_everything());
    ASSERT_NO_FATAL_FAILURE(send_until_db_receives("after", 10s));
    // As the message says: once it took over, the take-over can be started again.
    auto again = start_successor(third_config, {}, "calyx: ready");
    ASSERT_TRUE(again);
    ASSERT_TRUE(calyx_->process().wait(10s)) << "the successor still runs\n" << calyx_->log();
    calyx_ = std::move(again);
    EXPECT_NE(calyx_->log().find(fmt::format("took over from pid {}", successor)), std::string::npos) << calyx_->log();
    ASSERT_NO_FATAL_FAILURE(reattach_everything());
    ASSERT_NO_FATAL_FAILURE(send_until_db_receives("again", 10s));
}

// A calyx started in the moment between the old calyx's exit and its successor taking the
// locks (a supervisor's restart, an operator's start): the locks are free, but the successor
// serves already, holding the take-over lock until its state file is in place. Started, the
// newcomer would restore the exited one's table and contend for the successor's ports; it
// refuses instead, saying who is taking over, and the successor completes its take-over.
TEST_F(RestartTest, ACalyxStartedWhileTheSuccessorTakesTheExitedOnesLocksRefusesToStart) {
    ASSERT_NO_FATAL_FAILURE(open_between_instances());
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("before"));
    const fs::path go = dir_ / "locks.go";
    auto next = start_successor(successor_config(), {"--take-over-before-locks", go.string()},
                                "before it takes the locks of the calyx that exited");
    ASSERT_TRUE(next);
    ASSERT_TRUE(calyx_->process().wait(10s)) << "the old calyx still runs\n" << calyx_->log();
    const pid_t successor = next->process().pid();
    const std::string refused = refused_third(successor_config("third"));
    ASSERT_FALSE(HasFailure());
    EXPECT_NE(refused.find(fmt::format("pid {} is taking over", successor)), std::string::npos) << refused;

    std::ofstream(go).close();
    ASSERT_TRUE(next->process().wait_for_log("calyx: ready", 10s)) << next->log();
    EXPECT_EQ(next->log().find("did not exit"), std::string::npos) << next->log();
    calyx_ = std::move(next);
    ASSERT_NO_FATAL_FAILURE(reattach_everything());
    ASSERT_NO_FATAL_FAILURE(send_until_db_receives("after", 10s));
}

TEST_F(RestartTest, ConnectionsContinueThroughKillAndStartMasqueradedOnesOnTheirPort) {
    ASSERT_NO_FATAL_FAILURE(open_between_instances());
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("before"));
    ASSERT_NO_FATAL_FAILURE(open_to_internet());
    const std::string first = echo("before");
    ASSERT_FALSE(first.empty()) << "no echo before the restart";
    const std::string seen_as = first.substr(0, first.find(' '));
    EXPECT_TRUE(seen_as.starts_with(text(kHostAddress) + ":")) << first;

    const auto killed = Clock::now();
    ASSERT_NO_FATAL_FAILURE(crash_and_start());
    EXPECT_NE(calyx_->log().find("restored 2 connections (1 masqueraded)"), std::string::npos) << calyx_->log();

    // No SYN: a calyx that forgot them drops these as ct_invalid_new.
    ASSERT_NO_FATAL_FAILURE(send_until_db_receives("after", 10s));
    const std::string again = echo("after", 10s);
    const auto continued = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed);
    ASSERT_FALSE(again.empty()) << "the masqueraded connection did not continue\n" << calyx_->log();
    EXPECT_EQ(again.substr(0, again.find(' ')), seen_as) << "the same external address and port";
    fmt::print("kill -9 to both connections flowing again (start, VMs re-attached, uplink moved): {} ms\n",
               continued.count());

    // Still tracked: a segment far beyond db-1's window is dropped, the next in-window one passes.
    ASSERT_TRUE(vm(kWeb).send(segment(web_, kAck | kPsh, "stray", 0x40000000)));
    expect_nothing(kDb, [](const Bytes& f) { return is_tcp(f) && tcp_payload(f) == "stray"; }, "out-of-window segment");
    const auto c = wait_for_drops("web-1", "ct_out_of_window", 1);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->drops("web-1", "ct_out_of_window"), 1u);
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("in-window"));
}

TEST_F(RestartTest, WithoutTheStateFileTheConnectionsAreCut) {
    // The control: the same restart with the state file removed, as every restart was before.
    ASSERT_NO_FATAL_FAILURE(open_between_instances());
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("before"));
    for (auto& [name, p] : peers_) p->detach();
    calyx_->kill();
    fs::remove(dir_ / "calyx.state");
    ASSERT_NO_FATAL_FAILURE(start_calyx(options_));
    ASSERT_TRUE(calyx_->process().wait_for_log("calyx: ready", 15s)) << calyx_->log();
    for (const Vm* v : kVms) ASSERT_NO_FATAL_FAILURE(attach(*v));
    ASSERT_NO_FATAL_FAILURE(warm_up(kWeb));
    ASSERT_TRUE(vm(kWeb).send(segment(web_, kAck | kPsh, "after")));
    expect_nothing(kDb, [](const Bytes& f) { return is_tcp(f) && tcp_payload(f) == "after"; }, "a forgotten connection");
    const auto c = wait_for_drops("web-1", "ct_invalid_new", 1);
    ASSERT_TRUE(c);
    EXPECT_GE(c->drops("web-1", "ct_invalid_new"), 1u);
}

TEST_F(RestartTest, ASecondCalyxOnTheSameControlSocketRefusesToStart) {
    CalyxStartOptions o;
    o.timeout = 10s;
    auto second = CalyxProcess::start(config_, o);
    ASSERT_FALSE(second.has_value()) << "a second calyx started beside the first";
    EXPECT_NE(second.error().find("another calyx (pid"), std::string::npos) << second.error();
    EXPECT_NE(second.error().find("owns control socket"), std::string::npos) << second.error();
    // The first one is untouched.
    EXPECT_TRUE(calyx_->running());
    expect_ping_between(kWeb, kDb, 0x1700, 1);
}

TEST_F(RestartTest, UpgradeUnderSystemdMakesTheNewCalyxTheMainProcessBeforeTheOldOneExits) {
    NotifySocket notify(dir_ / "notify.sock");
    ASSERT_TRUE(notify.bound());
    ASSERT_NO_FATAL_FAILURE(serve_under_service_manager(dir_ / "notify.sock"));
    const pid_t old_pid = calyx_->process().pid();
    ASSERT_TRUE(notify.wait_for("READY=1", old_pid, 0, 10s)) << "no READY=1 at start\n" << notify.describe();
    const std::string seen_as = open_both();
    ASSERT_FALSE(HasFatalFailure());

    notify.watch(old_pid);
    const size_t before = notify.messages().size();
    const CommandResult upgrade =
        sh(fmt::format("{} --socket {} upgrade 2>&1", calyxctl_binary(), control_socket().string()));
    ASSERT_EQ(upgrade.status, 0) << upgrade.output << calyx_->log();
    const std::string prefix = fmt::format("upgraded: calyx pid {} handed over to pid ", old_pid);
    ASSERT_NE(upgrade.output.find(prefix), std::string::npos) << upgrade.output;
    const pid_t new_pid = std::atoi(upgrade.output.c_str() + upgrade.output.find(prefix) + prefix.size());
    EXPECT_EQ(new_pid, successor_started()) << calyx_->log();
    const auto old_status = calyx_->process().wait(10s);
    ASSERT_TRUE(old_status.has_value()) << "the old calyx still runs\n" << calyx_->log();
    EXPECT_TRUE(WIFEXITED(*old_status) && WEXITSTATUS(*old_status) == 0) << describe_status(*old_status);

    // The manager learnt its new main process from the new one, with READY=1, while the old one
    // still ran: the old one's exit is then that of an ordinary process of the unit.
    const auto main = notify.wait_for(fmt::format("MAINPID={}\n", new_pid), new_pid, before, 5s);
    ASSERT_TRUE(main) << notify.describe();
    EXPECT_NE(main->second.text.find("READY=1"), std::string::npos) << main->second.text;
    EXPECT_TRUE(main->second.watched_ran) << "the old calyx had exited before the manager heard MAINPID=";
    EXPECT_TRUE(notify.wait_for("BARRIER=1", new_pid, main->first, 1s)) << notify.describe();
    for (const auto& m : notify.messages())
        EXPECT_FALSE(m.sender == old_pid && m.text.find("STOPPING=1") != std::string::npos)
            << "the old calyx told the manager the unit stops:\n" << notify.describe();

    auto previous = std::move(calyx_);
    calyx_ = CalyxProcess::adopt(new_pid, previous->process().log_file());
    ASSERT_TRUE(calyx_->running()) << "the new calyx is not this test's (re-parented) child";
    ASSERT_NO_FATAL_FAILURE(reattach_everything());
    ASSERT_NO_FATAL_FAILURE(expect_connections_continue(seen_as));

    // A reload of the new main process: RELOADING=1, then READY=1.
    const size_t reload_from = notify.messages().size();
    const CommandResult reload =
        sh(fmt::format("{} --socket {} reload 2>&1", calyxctl_binary(), control_socket().string()));
    ASSERT_EQ(reload.status, 0) << reload.output;
    const auto reloading = notify.wait_for("RELOADING=1", new_pid, reload_from, 5s);
    ASSERT_TRUE(reloading) << notify.describe();
    EXPECT_TRUE(notify.wait_for("READY=1", new_pid, reloading->first + 1, 5s)) << notify.describe();
}

TEST_F(RestartTest, AFailedUpgradeLeavesTheOldOneServingAndTheMainProcessUnchanged) {
    NotifySocket notify(dir_ / "notify.sock");
    ASSERT_TRUE(notify.bound());
    ASSERT_NO_FATAL_FAILURE(serve_under_service_manager(dir_ / "notify.sock"));
    const pid_t old_pid = calyx_->process().pid();
    const std::string seen_as = open_both();
    ASSERT_FALSE(HasFatalFailure());
    // A configuration file the new calyx would refuse: refused before anything starts.
    const std::string good = read_file(config_);
    std::ofstream(config_) << good << "colour: blue\n";
    const CommandResult refused =
        sh(fmt::format("{} --socket {} upgrade 2>&1", calyxctl_binary(), control_socket().string()));
    EXPECT_TRUE(WIFEXITED(refused.status) && WEXITSTATUS(refused.status) == 1) << refused.output;
    EXPECT_NE(refused.output.find("upgrade refused: " + config_.string() + " has 1 error(s)"), std::string::npos)
        << refused.output;
    EXPECT_NE(refused.output.find("colour"), std::string::npos) << refused.output;
    EXPECT_EQ(successor_started(), 0) << calyx_->log();
    std::ofstream(config_) << good;
    // A new binary that dies after the old calyx released its ports: it holds 5 s there and
    // is killed.
    const fs::path held = dir_.write("calyx-held", fmt::format("#!/bin/sh\nexec {} \"$@\" --take-over-hold-ms 5000\n",
                                                               calyx_binary()));
    fs::permissions(held, fs::perms::owner_all);
    auto ctl = ChildProcess::spawn({calyxctl_binary(), "--socket", control_socket().string(), "upgrade", "--binary",
                                    held.string()},
                                   dir_ / "calyxctl.log");
    ASSERT_TRUE(ctl.has_value()) << ctl.error();
    ASSERT_TRUE(calyx_->process().wait_for_log("it stopped its workers and released its ports", 20s)) << calyx_->log();
    const pid_t successor = successor_started();
    ASSERT_GT(successor, 0) << calyx_->log();
    ::kill(successor, SIGKILL);
    ASSERT_TRUE(calyx_->process().wait_for_log("calyx: resumed serving", 10s)) << calyx_->log();
    const auto answered = (*ctl)->wait(30s);
    ASSERT_TRUE(answered.has_value()) << (*ctl)->log();
    EXPECT_TRUE(WIFEXITED(*answered) && WEXITSTATUS(*answered) == 1) << describe_status(*answered);
    EXPECT_NE((*ctl)->log().find(fmt::format("exited before it took over; calyx pid {} serves on", old_pid)),
              std::string::npos)
        << (*ctl)->log();
    for (const auto& m : notify.messages())
        EXPECT_EQ(m.text.find("MAINPID="), std::string::npos) << "the main process changed:\n" << notify.describe();
    EXPECT_TRUE(calyx_->running());
    ASSERT_NO_FATAL_FAILURE(reattach_everything());
    ASSERT_NO_FATAL_FAILURE(expect_connections_continue(seen_as));
}

TEST_F(RestartTest, UnderSystemdATakeOverFromOutsideTheUnitIsRefused) {
    // A successor started from a shell, beside the unit: it would serve outside the unit's
    // cgroup, and the unit would end (and restart calyx) when the old process exits.
    NotifySocket notify(dir_ / "notify.sock");
    ASSERT_TRUE(notify.bound());
    ASSERT_NO_FATAL_FAILURE(serve_under_service_manager(dir_ / "notify.sock"));
    auto outsider = ChildProcess::spawn({calyx_binary(), "--config", config_.string(), "--take-over"},
                                        dir_ / "outsider.log");
    ASSERT_TRUE(outsider.has_value()) << outsider.error();
    const auto status = (*outsider)->wait(30s);
    ASSERT_TRUE(status.has_value()) << "the outsider took over\n" << (*outsider)->log();
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 1) << describe_status(*status);
    EXPECT_NE((*outsider)->log().find("runs under a service manager (systemd)"), std::string::npos)
        << (*outsider)->log();
    EXPECT_TRUE(calyx_->running());
    EXPECT_EQ(calyx_->log().find("handing over"), std::string::npos) << calyx_->log();
    expect_ping_between(kWeb, kDb, 0x1701, 1);
}

// The issue's figure: a hand-over with a million connections in the table, while every VM
// streams (web-1 and db-1 a numbered segment each way every ~2 ms on their connection, app-1 an
// echo request to the Internet server, masqueraded). The million are written into the state
// file of a killed calyx (a test hook: the data path never writes a file this way) and restored
// by the next start; the hand-over then moves them all. Prints, per VM, what was lost and the
// longest silence, and what calyx says of its own gap; rerun with perf/handover_gap.sh.
// CALYX_HANDOVER_CONNECTIONS sets the table size (default 1,000,000).
class RestartAtScaleTest : public RestartTest {
protected:
    // An interface in this (the root) namespace, up: a tap a new calyx created and started.
    static bool interface_up(const std::string& name) {
        const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ifreq req{};
        std::strncpy(req.ifr_name, name.c_str(), IFNAMSIZ - 1);
        const bool up = fd >= 0 && ::ioctl(fd, SIOCGIFFLAGS, &req) == 0 && (req.ifr_flags & IFF_UP);
        if (fd >= 0) ::close(fd);
        return up;
    }
    static uint32_t connections() {
        const char* env = std::getenv("CALYX_HANDOVER_CONNECTIONS");
        return env && *env ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10)) : 1'000'000u;
    }
    ConfigOptions restart_options() const override {
        ConfigOptions o;
        o.conntrack_capacity = connections() + connections() / 8 + 65536;
        o.limits = fmt::format("{{connections: {}}}", connections());  // a third each, and the streams
        return o;
    }

    // Kills calyx and adds `n` established connections of web-1, app-1 and db-1 (to made-up
    // Internet hosts) beside what its state file holds, then starts calyx again on it.
    void fill_and_restart(uint32_t n) {
        for (auto& [name, p] : peers_) p->detach();
        calyx_->kill();
        const std::string path = (dir_ / "calyx.state").string();
        auto killed = dp::StateFile::open(path);
        ASSERT_TRUE(killed.has_value() && *killed) << (killed ? "no state file" : killed.error());
        const dp::StateFile& old = **killed;
        const dp::StateNames names = old.names();
        ASSERT_EQ(names.accounts.size(), 3u);
        auto filled = dp::StateFile::create(path + ".fill", old.slots() + n, old.params());
        ASSERT_TRUE(filled.has_value()) << filled.error();
        dp::StateFile& f = **filled;
        ASSERT_TRUE(f.write_names(names).has_value());
        f.set_generation(old.generation());
        size_t at = 0;
        for (size_t pos = 0; pos < old.slots(); ++pos)
            if (!old.entries()[pos].dead()) {
                f.entries()[at] = old.entries()[pos];
                f.keys()[at++] = old.keys()[pos];
            }
        const uint64_t hz = old.params().tsc_hz;
        const uint64_t now_s = static_cast<uint64_t>(static_cast<unsigned __int128>(rte_rdtsc()) / hz);
        std::vector<std::pair<uint16_t, uint16_t>> owners;  // (zone, account) of each instance's network
        for (const Vm* v : kVms) owners.emplace_back(names.zones.at(v->network), names.accounts.at(v->name));
        for (uint32_t i = 0; i < n; ++i, ++at) {
            const auto [zone, account] = owners[i % owners.size()];
            const auto key = dp::make_ct_key(
                ipproto::kTcp, {zone, Ipv4Addr{0x0a630000u + i / 50000}, static_cast<uint16_t>(10000 + i % 50000)},
                {0, Ipv4Addr::from_octets(192, 0, 2, static_cast<uint8_t>(100 + i % 100)), 443});
            dp::CtEntry& e = f.entries()[at];
            e = dp::CtEntry{};
            e.state.proto = ipproto::kTcp;
            e.state.tcp_state = dp::TcpCtState::established;
            e.state.flags = dp::kConnSeenReply | dp::kConnAssured;
            e.state.expires_s = static_cast<uint32_t>(now_s + 3600);
            e.orig_side = key.src_side;
            e.account = account;
            e.key_check = dp::ct_key_check(key.key);
            f.keys()[at] = dp::CtKeyRecord::of(key.key);
        }
        ASSERT_TRUE(f.rename_to(path).has_value());
        filled->reset();
        killed->reset();
        ASSERT_NO_FATAL_FAILURE(start_calyx(options_));
        ASSERT_TRUE(calyx_->process().wait_for_log("calyx: ready", 60s)) << calyx_->log();
        ASSERT_NO_FATAL_FAILURE(connect_uplink());
        for (const Vm* v : kVms) ASSERT_NO_FATAL_FAILURE(attach(*v));
    }
    // "restored N connections" in a calyx's log (0: not said).
    static uint32_t restored_count(const std::string& log) {
        const size_t at = log.find("calyx: restored ");
        return at == std::string::npos ? 0 : static_cast<uint32_t>(std::strtoul(log.c_str() + at + 16, nullptr, 10));
    }
    // Connections between the instances and to the Internet in a table of `n` more, all
    // restored by a calyx that serves them.
    void serve_a_full_table(uint32_t n) {
        ASSERT_NO_FATAL_FAILURE(open_between_instances());
        ASSERT_NO_FATAL_FAILURE(fill_and_restart(n));
        ASSERT_EQ(restored_count(calyx_->log()), n + 1) << calyx_->log();
        ASSERT_NO_FATAL_FAILURE(exchange_between_instances("filled"));
        ASSERT_TRUE(vm(kApp).request(ping_frame(kApp, kInternetServer, 0x4242, 0), 10s, is_echo_reply(0x4242, 0)))
            << "app-1 does not reach the Internet server\n" << calyx_->log();
    }
    // What every VM saw while the running calyx was replaced: web-1 and db-1 a numbered TCP
    // segment each way, app-1 an echo request to the Internet server, as fast as the loop goes
    // (~2 ms), from `replace` (which starts the new calyx) until 1.5 s after the new one is ready.
    struct Replacement {
        std::unique_ptr<ChildProcess> next;
        std::map<std::string, NumberedStream> streams;
        std::chrono::milliseconds to_ready{0};  // from `replace` to the new one's "calyx: ready"
    };
    void stream_while_replaced(const std::function<std::expected<std::unique_ptr<ChildProcess>, std::string>()>& replace,
                               Replacement& out) {
        std::map<std::string, NumberedStream>& streams = out.streams;
        // A socket file by inode and change time: a file system may give a new file the inode
        // of the one just removed (ext4 does, when a restarted calyx replaces a dead one's).
        using Identity = std::pair<ino_t, int64_t>;
        const auto inode = [](const fs::path& p) -> Identity {
            struct stat st{};
            if (::stat(p.c_str(), &st) != 0) return {0, 0};
            return {st.st_ino, int64_t{st.st_ctim.tv_sec} * 1'000'000'000 + st.st_ctim.tv_nsec};
        };
        std::map<std::string, Identity> sockets;
        for (const Vm* v : kVms) sockets[v->name] = inode(socket_of(*v));
        far_end_ready_ = false;  // the old tap is in the namespace; the new one, once up here, moves there
        const Clock::time_point replaced_at = Clock::now();
        auto next = replace();
        ASSERT_TRUE(next.has_value()) << next.error();
        const auto payload = [](char who, uint32_t k) { return fmt::format("{}{:06}", who, k); };
        bool uplink_moved = false, ready = false;
        std::set<std::string> stalled;
        Clock::time_point stop_at = Clock::now() + 60s;
        while (Clock::now() < stop_at) {
            // A VM re-attaches as soon as its new socket is there (QEMU with a short reconnect
            // interval), the Internet as soon as the new tap is started.
            for (const Vm* v : kVms) {
                if (!vm(*v).attached() || inode(socket_of(*v)) == sockets[v->name]) continue;
                if (const Identity now = inode(socket_of(*v)); now.first != 0) {
                    vm(*v).detach();
                    ASSERT_NO_FATAL_FAILURE(attach(*v));
                    sockets[v->name] = now;
                    stalled.erase(v->name);
                }
            }
            if (!ready && (*next)->log().find("calyx: ready") != std::string::npos) {
                ready = true;
                out.to_ready = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - replaced_at);
                stop_at = Clock::now() + 1500ms;
            }
            // Not before its ports started (its restore report follows): until then calyx addresses
            // its new tap by name in this namespace, and a link that moved away fails the start.
            if (!uplink_moved && (*next)->log().find("calyx: restored ") != std::string::npos &&
                interface_up(internet_end_)) {
                ASSERT_NO_FATAL_FAILURE(connect_uplink()) << "the successor:\n" << (*next)->log();
                uplink_moved = true;
            }
            // A VM whose ring stayed full (its backend is gone) waits for its new socket; sending
            // into it again would only stall the others (VmPeer::send waits 100 ms on a full ring).
            const auto offer = [&](const Vm& v, const auto& frame_for) {
                if (stalled.contains(v.name)) return;
                if (!vm(v).send(frame_for(streams[v.name].next()))) stalled.insert(v.name);
            };
            offer(kWeb, [&](uint32_t k) {
                const Bytes f = segment(web_, kAck | kPsh, payload('w', k));
                web_.seq += 7;
                return f;
            });
            offer(kDb, [&](uint32_t k) {
                const Bytes f = segment(db_, kAck | kPsh, payload('d', k));
                db_.seq += 7;
                return f;
            });
            offer(kApp, [&](uint32_t k) { return ping_frame(kApp, kInternetServer, 0x4242, static_cast<uint16_t>(k + 1)); });
            // Each side acknowledges what reached it (the next segment carries it).
            const auto take = [&](Side& receiver, const Bytes& f, std::string_view tag, NumberedStream& stream) {
                const std::string got = tcp_payload(f);
                if (!got.starts_with(tag)) return;
                stream.arrived.insert(static_cast<uint32_t>(std::stoul(got.substr(1))));
                receiver.ack = tcp_of(f).seq.host() + static_cast<uint32_t>(got.size());
            };
            for (const Bytes& f : vm(kDb).receive_all(1ms, [](const Bytes& f) { return is_tcp(f); }))
                take(db_, f, "w", streams["web-1"]);
            for (const Bytes& f : vm(kWeb).receive_all(1ms, [](const Bytes& f) { return is_tcp(f); }))
                take(web_, f, "d", streams["db-1"]);
            for (const Bytes& f : vm(kApp).receive_all(1ms, [](const Bytes& f) {
                     return is_icmp(f) && icmp_of(f).type == icmp::kEchoReply && icmp_of(f).id.host() == 0x4242;
                 }))
                streams["app-1"].arrived.insert(icmp_of(f).seq.host() - 1u);
        }
        ASSERT_TRUE(ready) << (*next)->log();
        out.next = std::move(*next);
    }
    void print(std::string_view what, uint32_t n, const Replacement& r, std::string_view calyx_says) {
        const std::string log = r.next->log();
        const auto line = [&](std::string_view text) {
            const size_t at = log.find(text);
            return at == std::string::npos ? std::string("?") : log.substr(at, log.find('\n', at) - at);
        };
        fmt::print("{} with {} connections: {}\n  {}\n  ready {} ms after it started\n", what, n, line("restored "),
                   line(calyx_says), r.to_ready.count());
        for (const auto& [name, s] : r.streams)
            fmt::print("  {}: {} sent, {} lost, lost for {} ms\n", name, s.sent_at.size(), s.lost(),
                       s.longest_loss().count());
    }
};

TEST_F(RestartAtScaleTest, HandOverWithAMillionConnectionsWhileEveryVmStreams) {
    const uint32_t n = connections();
    ASSERT_NO_FATAL_FAILURE(serve_a_full_table(n));
    Replacement r;
    ASSERT_NO_FATAL_FAILURE(stream_while_replaced(
        [&] {
            return ChildProcess::spawn({calyx_binary(), "--config", successor_config().string(), "--take-over"},
                                       dir_ / "successor.log");
        },
        r));
    print("hand-over", n, r, "the data plane stood still");
    const std::string log = r.next->log();
    EXPECT_GE(restored_count(log), n + 1) << log;
    // Restored while the old one served: what was left for the gap is what the streams changed.
    const size_t after = log.find("after it stopped, ");
    ASSERT_NE(after, std::string::npos) << "not restored before the old one stopped\n" << log;
    EXPECT_LT(std::strtoul(log.c_str() + after + 18, nullptr, 10), 1000u) << log;
    for (const auto& [name, s] : r.streams) EXPECT_GT(s.arrived.size(), s.sent_at.size() / 2) << name;
    // The same connection, no SYN: it was handed over.
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("after"));
    calyx_->process().wait(10s);
    calyx_.reset();
    r.next->stop();
}

// The same table and streams across a crash: kill -9, then an ordinary start on the state file
// it left (what systemd's Restart=on-failure does). The gap is the new process's whole start.
TEST_F(RestartAtScaleTest, CrashWithAMillionConnectionsWhileEveryVmStreams) {
    const uint32_t n = connections();
    ASSERT_NO_FATAL_FAILURE(serve_a_full_table(n));
    Replacement r;
    ASSERT_NO_FATAL_FAILURE(stream_while_replaced(
        [&] {
            calyx_->kill();
            return ChildProcess::spawn({calyx_binary(), "--config", successor_config().string()},
                                       dir_ / "restarted.log");
        },
        r));
    print("crash (kill -9) and start", n, r, "calyx: ready");
    // Every connection back but those a worker was writing at the kill (at most one), and
    // the streams go on: the same connections, no SYN.
    EXPECT_GE(restored_count(r.next->log()), n) << r.next->log();
    for (const auto& [name, s] : r.streams) EXPECT_GT(s.arrived.size(), s.sent_at.size() / 2) << name;
    ASSERT_NO_FATAL_FAILURE(exchange_between_instances("after"));
    calyx_.reset();
    r.next->stop();
}

}  // namespace
}  // namespace calyx::test

int main(int argc, char** argv) {
    return calyx::test::run_integration_tests(argc, argv);
}
