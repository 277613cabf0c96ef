// The control socket that calyxctl talks to, and the client side of its protocol.
//
// ## Protocol
//
// A UNIX stream socket at `control.socket` (default /run/calyx/calyx.sock), mode 0600: only
// the user calyx runs as (root) may connect. One request per connection:
//
//   client -> calyx   one line of JSON, at most kMaxRequestBytes, ended by '\n' (or by the
//                     client shutting down its writing side):
//                       {"command": "conntrack", "args": {"instance": "web-1", "limit": 10}}
//                     "args" may be omitted; it is an object whose keys depend on the command.
//   calyx -> client   one line of JSON, then calyx closes the connection:
//                       {"ok": true, "result": <command-specific JSON>}
//                       {"ok": false, "error": "one line for humans",
//                        "errors": ["file:line:col: message", ...],   (optional: every error)
//                        "usage": true}                               (optional: the request
//                                                                      itself was wrong)
//
// `usage` marks requests that could never succeed as written (not JSON, unknown command,
// missing or malformed argument); its absence means the command ran and failed (e.g. a
// reload that was rejected). The commands and their results are in cp/control_commands.hpp.
//
// ## Threading
//
// The server runs one std::thread on the control side (never a worker lcore). It serves one
// connection at a time: every request is a short control-plane query or a reload, and serving
// them in order is what makes two reloads never interleave their log lines. A client that
// connects and sends nothing, or stops reading its reply, is cut off after kRequestTimeout /
// kReplyTimeout, so it cannot hold the socket for others.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <expected>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace calyx::cp {

// Ordered: replies keep the order in which handlers add fields, which is what humans reading
// `calyxctl --json` expect.
using Json = nlohmann::ordered_json;

inline constexpr size_t kMaxRequestBytes = 64 * 1024;
inline constexpr std::chrono::milliseconds kRequestTimeout{2000};  // whole request, from accept
inline constexpr std::chrono::milliseconds kReplyTimeout{10000};   // whole reply

// Why a command failed, as the reply reports it.
struct CommandError {
    std::string message;
    bool usage = false;               // the request was wrong (see "usage" above)
    std::vector<std::string> errors;  // every error, e.g. a rejected file's file:line:col lines
};

using CommandResult = std::expected<Json, CommandError>;
using CommandHandler = std::function<CommandResult(const Json& args)>;
using CommandTable = std::map<std::string, CommandHandler, std::less<>>;

// The reply line (without its '\n') for one request line. Never throws: a handler that throws
// becomes an error reply.
std::string handle_request(const CommandTable& commands, std::string_view request);

class ControlServer {
  public:
    // Creates the socket at `path` (and its parent directory), serving `commands` on a new
    // thread. A stale socket file (no one listening) is replaced; a socket someone still
    // listens on, or a path that is not a socket, is an error: calyx never takes the socket
    // of another running calyx, nor deletes a file it did not create.
    static std::expected<std::unique_ptr<ControlServer>, std::string> start(std::string path,
                                                                            CommandTable commands);
    // Stops the thread (promptly: it is woken, not polled) and removes the socket.
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    const std::string& path() const { return path_; }

  private:
    ControlServer() = default;
    void run();
    void serve(int fd);

    std::string path_;
    CommandTable commands_;
    int listen_fd_ = -1;
    int wake_fd_ = -1;  // eventfd: the destructor's stop request
    dev_t dev_ = 0;     // the socket file we created, so we remove only that one
    ino_t ino_ = 0;
    std::thread thread_;
};

// ------------------------------------------------------------------------------------------
// Client side (calyxctl, tests).

struct ControlReply {
    bool ok = false;
    Json result;                      // when ok
    std::string error;                // when not ok
    std::vector<std::string> errors;  // when not ok, if the daemon listed them
    bool usage = false;
};

enum class CallFailure {
    not_running,  // no socket, or a socket no one listens on
    permission,   // the socket exists but this user may not connect
    timeout,      // calyx did not answer in time
    io,           // another socket error
    protocol,     // calyx answered something that is not a reply
};

struct CallError {
    CallFailure kind = CallFailure::io;
    std::string message;  // says what happened and what to do, for humans
};

// Sends {"command": command, "args": args} to the socket at `path` and waits up to `timeout`
// for the reply.
std::expected<ControlReply, CallError> control_call(const std::string& path,
                                                    std::string_view command, const Json& args,
                                                    std::chrono::milliseconds timeout);

}  // namespace calyx::cp
