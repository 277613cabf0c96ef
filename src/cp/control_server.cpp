#include "cp/control_server.hpp"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <system_error>

#include <fmt/format.h>

namespace calyx::cp {
namespace {

using Clock = std::chrono::steady_clock;

// A reply larger than this is not something calyx sends (conntrack listings are bounded):
// the client stops reading rather than grow without limit.
constexpr size_t kMaxReplyBytes = size_t{256} << 20;

// strerror() is not thread-safe; the generic category's message is.
std::string errno_text(int e) {
    return std::error_code(e, std::generic_category()).message();
}

class Fd {
  public:
    explicit Fd(int fd = -1) : fd_(fd) {}
    ~Fd() {
        if (fd_ >= 0) ::close(fd_);
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    explicit operator bool() const { return fd_ >= 0; }

  private:
    int fd_;
};

std::expected<sockaddr_un, std::string> socket_address(const std::string& path) {
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.empty()) return std::unexpected("the control socket path is empty");
    if (path.size() >= sizeof(a.sun_path))
        return std::unexpected(
            fmt::format("control socket path {} is too long ({} bytes, at most {})", path,
                        path.size(), sizeof(a.sun_path) - 1));
    std::memcpy(a.sun_path, path.data(), path.size());
    return a;
}

int connect_to(int fd, const sockaddr_un& a) {
    return ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a));
}

int ms_until(Clock::time_point deadline) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
}

// Waits until `fd` has `events` or `deadline` passes; also returns (false) when `wake` (if
// >= 0) becomes readable, so a stopping server never waits for a client.
bool wait_for(int fd, short events, Clock::time_point deadline, int wake = -1) {
    for (;;) {
        pollfd p[2] = {{fd, events, 0}, {wake, POLLIN, 0}};
        const int n = ::poll(p, wake >= 0 ? 2 : 1, ms_until(deadline));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        if (wake >= 0 && (p[1].revents & POLLIN)) return false;
        return true;
    }
}

// Sends all of `data` before `deadline`. MSG_NOSIGNAL: a client that went away must not
// raise SIGPIPE in calyx (which does not block it).
bool send_all(int fd, std::string_view data, Clock::time_point deadline, int wake = -1) {
    while (!data.empty()) {
        const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            data.remove_prefix(static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!wait_for(fd, POLLOUT, deadline, wake)) return false;
            continue;
        }
        return false;
    }
    return true;
}

enum class ReadStatus { line, eof, timeout, too_long, failed };

// Reads into `out` until a '\n' (not kept), end of stream, `limit` bytes or `deadline`.
ReadStatus read_line(int fd, std::string& out, size_t limit, Clock::time_point deadline,
                     int wake = -1) {
    char buf[16384];
    for (;;) {
        if (!wait_for(fd, POLLIN, deadline, wake)) return ReadStatus::timeout;
        const ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (n < 0) return ReadStatus::failed;
        if (n == 0) return ReadStatus::eof;
        const std::string_view chunk(buf, static_cast<size_t>(n));
        const size_t nl = chunk.find('\n');
        out.append(chunk.substr(0, nl));
        if (out.size() > limit) return ReadStatus::too_long;
        if (nl != std::string_view::npos) return ReadStatus::line;
    }
}

std::string dump(const Json& j) {
    // Names come from the configuration file; never let a stray byte turn a reply into an
    // exception.
    return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

std::string error_reply(const CommandError& e) {
    Json j;
    j["ok"] = false;
    j["error"] = e.message;
    if (!e.errors.empty()) j["errors"] = e.errors;
    if (e.usage) j["usage"] = true;
    return dump(j);
}

CommandError usage_error(std::string message) {
    return {std::move(message), true, {}};
}

}  // namespace

std::string handle_request(const CommandTable& commands, std::string_view request) {
    const Json req = Json::parse(request.begin(), request.end(), nullptr, false);
    if (req.is_discarded()) return error_reply(usage_error("the request is not valid JSON"));
    if (!req.is_object()) return error_reply(usage_error("the request is not a JSON object"));
    const auto cmd = req.find("command");
    if (cmd == req.end() || !cmd->is_string())
        return error_reply(usage_error("the request has no \"command\" string"));
    Json args = Json::object();
    if (const auto a = req.find("args"); a != req.end() && !a->is_null()) {
        if (!a->is_object()) return error_reply(usage_error("\"args\" must be a JSON object"));
        args = *a;
    }
    const auto& name = cmd->get_ref<const std::string&>();
    const auto handler = commands.find(name);
    if (handler == commands.end()) {
        std::string known;
        for (const auto& [n, h] : commands) known += (known.empty() ? "" : ", ") + n;
        return error_reply(
            usage_error(fmt::format("unknown command '{}' (known: {})", name, known)));
    }
    try {
        CommandResult r = handler->second(args);
        if (!r) return error_reply(r.error());
        Json reply;
        reply["ok"] = true;
        reply["result"] = std::move(*r);
        return dump(reply);
    } catch (const std::exception& e) {
        // Handlers return their errors; this is the last line of defence (e.g. bad_alloc).
        return error_reply({fmt::format("{}: internal error: {}", name, e.what()), false, {}});
    }
}

std::expected<std::unique_ptr<ControlServer>, std::string> ControlServer::start(
    std::string path, CommandTable commands) {
    const auto addr = socket_address(path);
    if (!addr) return std::unexpected(addr.error());
    const auto fail = [&](std::string_view what, int e) {
        return std::unexpected(fmt::format("control socket {}: {}: {}", path, what, errno_text(e)));
    };

    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    if (!parent.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(parent, ec);
        if (ec)
            return std::unexpected(fmt::format("control socket {}: cannot create {}: {}", path,
                                               parent.string(), ec.message()));
    }

    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return std::unexpected(fmt::format(
                "control socket {}: the path exists and is not a socket; remove it or set "
                "another control.socket",
                path));
        // A socket file survives a crash. If something still answers on it, it is another
        // calyx (or another program): leave it alone.
        Fd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!probe) return fail("socket", errno);
        if (connect_to(probe.get(), *addr) == 0)
            return std::unexpected(fmt::format(
                "control socket {}: another process is listening on it (is calyx already "
                "running?)",
                path));
        if (::unlink(path.c_str()) != 0 && errno != ENOENT)
            return fail("cannot remove the stale socket", errno);
    }

    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return fail("socket", errno);
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*addr), sizeof(*addr)) != 0)
        return fail("cannot bind", errno);
    // No client can connect before listen(): restricting the file here means no one ever
    // reaches a socket more open than 0600. (A umask would do it too, but the umask is per
    // process and the vhost library creates sockets from its own thread.)
    if (::chmod(path.c_str(), 0600) != 0 || ::lstat(path.c_str(), &st) != 0) {
        const int e = errno;
        ::unlink(path.c_str());
        return fail("cannot restrict the socket to its owner", e);
    }
    if (::listen(fd.get(), 16) != 0) {
        const int e = errno;
        ::unlink(path.c_str());
        return fail("listen", e);
    }
    Fd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake) {
        const int e = errno;
        ::unlink(path.c_str());
        return fail("eventfd", e);
    }

    std::unique_ptr<ControlServer> s(new ControlServer());
    s->path_ = std::move(path);
    s->commands_ = std::move(commands);
    s->dev_ = st.st_dev;
    s->ino_ = st.st_ino;
    s->listen_fd_ = fd.release();
    s->wake_fd_ = wake.release();
    s->thread_ = std::thread([server = s.get()] { server->run(); });
    return s;
}

ControlServer::~ControlServer() {
    const uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_fd_, &one, sizeof(one));
    if (thread_.joinable()) thread_.join();
    ::close(listen_fd_);
    ::close(wake_fd_);
    // Remove the socket only if it is still ours: an operator may have started another calyx
    // on the same path after deleting our file.
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_)
        ::unlink(path_.c_str());
}

void ControlServer::run() {
    for (;;) {
        pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
        if (::poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (p[1].revents & POLLIN) return;
        if (!(p[0].revents & POLLIN)) continue;
        const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                continue;
            // Out of descriptors or memory: the connection stays queued and poll would
            // report it again at once. Back off instead of spinning (still stoppable).
            pollfd w{wake_fd_, POLLIN, 0};
            if (::poll(&w, 1, 100) > 0) return;
            continue;
        }
        Fd conn(c);
        serve(conn.get());
    }
}

void ControlServer::serve(int fd) {
    std::string request;
    const ReadStatus rs =
        read_line(fd, request, kMaxRequestBytes, Clock::now() + kRequestTimeout, wake_fd_);
    std::string reply;
    switch (rs) {
        case ReadStatus::line:
        case ReadStatus::eof:
            reply = request.empty() ? error_reply(usage_error("empty request"))
                                    : handle_request(commands_, request);
            break;
        case ReadStatus::too_long:
            reply = error_reply(
                usage_error(fmt::format("request longer than {} bytes", kMaxRequestBytes)));
            break;
        case ReadStatus::timeout:
            // Said for the record; a client that sends nothing may not read either.
            reply = error_reply(usage_error(
                fmt::format("no complete request within {} ms", kRequestTimeout.count())));
            break;
        case ReadStatus::failed:
            return;
    }
    reply += '\n';
    send_all(fd, reply, Clock::now() + kReplyTimeout, wake_fd_);
}

// ------------------------------------------------------------------------------------------
// Client

std::expected<ControlReply, CallError> control_call(const std::string& path,
                                                    std::string_view command, const Json& args,
                                                    std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    const auto addr = socket_address(path);
    if (!addr) return std::unexpected(CallError{CallFailure::io, addr.error()});
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd)
        return std::unexpected(
            CallError{CallFailure::io, fmt::format("socket: {}", errno_text(errno))});
    // A UNIX connect blocks while the server's backlog is full; SO_SNDTIMEO bounds it.
    const timeval tv{static_cast<time_t>(timeout.count() / 1000),
                     static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect_to(fd.get(), *addr) != 0) {
        const int e = errno;
        switch (e) {
            case ENOENT:
            case ENOTDIR:
                return std::unexpected(
                    CallError{CallFailure::not_running,
                              fmt::format("no control socket at {}: calyx is not running, or its "
                                          "control.socket is elsewhere (use --socket PATH)",
                                          path)});
            case ECONNREFUSED:
                return std::unexpected(CallError{
                    CallFailure::not_running,
                    fmt::format("nothing listens on {}: calyx is not running (the socket file "
                                "is left from an earlier run)",
                                path)});
            case EACCES:
            case EPERM:
                return std::unexpected(CallError{
                    CallFailure::permission,
                    fmt::format("permission denied on {}: the control socket is only for the "
                                "user calyx runs as (root); run calyxctl as that user",
                                path)});
            case EAGAIN:
            case EINPROGRESS:
            case ETIMEDOUT:
                return std::unexpected(
                    CallError{CallFailure::timeout,
                              fmt::format("calyx did not accept the connection on {} within {} ms",
                                          path, timeout.count())});
            default:
                return std::unexpected(CallError{
                    CallFailure::io, fmt::format("cannot connect to {}: {}", path, errno_text(e))});
        }
    }

    Json req;
    req["command"] = std::string(command);
    req["args"] = args.is_null() ? Json::object() : args;
    const std::string line = dump(req) + "\n";
    if (!send_all(fd.get(), line, deadline))
        return std::unexpected(CallError{
            CallFailure::io,
            fmt::format("cannot send the request to {}: calyx closed the connection or did not "
                        "read it in time",
                        path)});
    ::shutdown(fd.get(), SHUT_WR);

    std::string text;
    switch (read_line(fd.get(), text, kMaxReplyBytes, deadline)) {
        case ReadStatus::line:
        case ReadStatus::eof:
            break;
        case ReadStatus::timeout:
            return std::unexpected(CallError{
                CallFailure::timeout,
                fmt::format("calyx did not answer within {} ms (use --timeout to wait longer)",
                            timeout.count())});
        case ReadStatus::too_long:
            return std::unexpected(
                CallError{CallFailure::protocol,
                          fmt::format("calyx's reply exceeds {} bytes", kMaxReplyBytes)});
        case ReadStatus::failed:
            return std::unexpected(
                CallError{CallFailure::io,
                          fmt::format("reading the reply from {}: {}", path, errno_text(errno))});
    }
    const Json j = Json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("ok") || !j["ok"].is_boolean())
        return std::unexpected(CallError{
            CallFailure::protocol,
            text.empty() ? fmt::format("calyx closed the connection on {} without a reply", path)
                         : fmt::format("calyx sent something that is not a reply: {}",
                                       text.substr(0, 200))});
    ControlReply r;
    r.ok = j["ok"].get<bool>();
    if (r.ok) {
        r.result = j.contains("result") ? j["result"] : Json();
    } else {
        r.error = j.contains("error") && j["error"].is_string() ? j["error"].get<std::string>()
                                                                : std::string("(no message)");
        if (const auto e = j.find("errors"); e != j.end() && e->is_array())
            for (const auto& line : *e)
                if (line.is_string()) r.errors.push_back(line.get<std::string>());
        r.usage = j.contains("usage") && j["usage"].is_boolean() && j["usage"].get<bool>();
    }
    return r;
}

}  // namespace calyx::cp
