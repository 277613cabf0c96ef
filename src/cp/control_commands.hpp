// What calyxctl's commands answer. Each handler is a pure function of one consistent view of
// the router (its configuration, published snapshot and connection table, taken together under
// Router::inspect) and of a counter sample (Router::sample), so unit tests call them on a
// snapshot built from a parsed configuration, without a daemon. make_command_table() binds
// them to a running router for the control socket (cp/control_server.hpp has the protocol).
//
// Commands, their arguments ("args" of a request) and results:
//   status                        version, uptime, configuration generation and reloads,
//                                 ports up, workers, connection table, uplink and NAT, the
//                                 datastore (revision, sync lag, keys refused)
//   reload                        re-reads the configuration file, as SIGHUP does
//   ports                         per port: state, socket, traffic and drop counters
//   instances                     per instance: network, address, MAC, port, groups
//   routes                        the routing table, each route's next hop as the FIB has it
//   conntrack {instance, limit}   tracked connections, at most `limit` (default 1000) and
//                                 the total
//   nat       {limit}             uplink, masquerade ports in use, translated connections
//   leases                        the (static) DHCP lease of every instance, DHCP counters
//   drops     {all}               drops per port and reason; only non-zero unless `all`
//   explain   {from, to, proto, port, type, code}
//                                 would a new connection be allowed, and by which rules; the
//                                 data plane's own evaluate_new_connection decides
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "calyx/config.hpp"
#include "cp/control_server.hpp"
#include "cp/metrics.hpp"
#include "dp/conntrack.hpp"
#include "dp/snapshot.hpp"

namespace calyx::cp {

inline constexpr uint32_t kDefaultListLimit = 1000;
inline constexpr uint32_t kMaxListLimit = 100000;  // keeps a reply to tens of megabytes

struct DaemonInfo {
    std::string version;
    int64_t pid = 0;
    std::chrono::steady_clock::time_point started;
};

// What a reload did. main.cpp's reload function (the one SIGHUP runs too) returns it.
struct ReloadResult {
    bool ok = false;
    uint64_t generation = 0;          // the running generation after the attempt
    std::string message;              // one line: what happened
    std::vector<std::string> errors;  // a rejected file: every "file:line:col: message"
};
using ReloadFn = std::function<ReloadResult()>;

// --- Arguments ----------------------------------------------------------------------------

struct ConntrackQuery {
    std::optional<std::string> instance;  // only connections with this instance at one end
    uint32_t limit = kDefaultListLimit;   // entries listed; the total is always counted
    bool translated_only = false;         // NAT'd connections only (the `nat` command)
};

struct ExplainQuery {
    std::string from;  // instance name, an instance's address, or an outside address
    std::string to;
    uint8_t protocol = 0;   // ipproto::kTcp, kUdp or kIcmp
    uint16_t port = 0;      // TCP/UDP destination port
    uint8_t icmp_type = 8;  // ICMP: echo request unless given
    uint8_t icmp_code = 0;
};

std::expected<void, CommandError> no_args(const Json& args);
std::expected<ConntrackQuery, CommandError> conntrack_query(const Json& args);
std::expected<uint32_t, CommandError> nat_query(const Json& args);  // the limit
std::expected<bool, CommandError> drops_query(const Json& args);    // `all`
std::expected<ExplainQuery, CommandError> explain_query(const Json& args);

// --- Handlers -----------------------------------------------------------------------------

Json status_result(const config::Config& cfg, const dp::Snapshot& snap, const RouterSample& s,
                   const DaemonInfo& info, std::chrono::steady_clock::time_point now);
Json ports_result(const config::Config& cfg, const RouterSample& s);
Json instances_result(const config::Config& cfg, const dp::Snapshot& snap, const RouterSample& s);
Json routes_result(const dp::Snapshot& snap);
// `now_ns` is the data plane's clock (io::now_ns): connections already expired are not listed.
std::expected<Json, CommandError> conntrack_result(const dp::Snapshot& snap,
                                                   const dp::ConnTable& table,
                                                   const ConntrackQuery& q, uint64_t now_ns);
Json nat_result(const dp::Snapshot& snap, const dp::ConnTable& table, uint32_t limit,
                uint64_t now_ns);
Json leases_result(const config::Config& cfg, const dp::Snapshot& snap, const RouterSample& s);
Json drops_result(const RouterSample& s, bool all);
std::expected<Json, CommandError> explain_result(const config::Config& cfg,
                                                 const dp::Snapshot& snap, const ExplainQuery& q);
CommandResult reload_result(const ReloadResult& r);

// --- Binding to a router ------------------------------------------------------------------

struct CommandEnv {
    DaemonInfo info;
    ReloadFn reload;                   // what `reload` runs (main.cpp: the SIGHUP path)
    std::function<uint64_t()> now_ns;  // the data plane's clock
    // With a datastore: its state, for status (cp/datastore/syncer.hpp). Unset: no datastore.
    std::function<DatastoreSample()> datastore;
};

// The command table for the control socket. `Source` is daemon::Router, or anything with the
// same inspect(f) and sample() (the unit tests' snapshot). A template so that this header,
// which the unit tests use, needs no link dependency on the router.
template <typename Source>
CommandTable make_command_table(const Source& source, CommandEnv env) {
    using config::Config;
    using dp::ConnTable;
    using dp::Snapshot;
    // Router::sample() and Router::inspect() both take the router's control lock, so the
    // sample is taken first, never from inside inspect().
    CommandTable t;
    t["status"] = [&source, env](const Json& args) -> CommandResult {
        if (auto ok = no_args(args); !ok) return std::unexpected(ok.error());
        RouterSample s = source.sample();
        if (env.datastore) s.datastore = env.datastore();
        const auto now = std::chrono::steady_clock::now();
        return source.inspect([&](const Config& c, const Snapshot& snap, const ConnTable&) {
            return status_result(c, snap, s, env.info, now);
        });
    };
    t["reload"] = [env](const Json& args) -> CommandResult {
        if (auto ok = no_args(args); !ok) return std::unexpected(ok.error());
        return reload_result(env.reload());
    };
    t["ports"] = [&source](const Json& args) -> CommandResult {
        if (auto ok = no_args(args); !ok) return std::unexpected(ok.error());
        const RouterSample s = source.sample();
        return source.inspect(
            [&](const Config& c, const Snapshot&, const ConnTable&) { return ports_result(c, s); });
    };
    t["instances"] = [&source](const Json& args) -> CommandResult {
        if (auto ok = no_args(args); !ok) return std::unexpected(ok.error());
        const RouterSample s = source.sample();
        return source.inspect([&](const Config& c, const Snapshot& snap, const ConnTable&) {
            return instances_result(c, snap, s);
        });
    };
    t["routes"] = [&source](const Json& args) -> CommandResult {
        if (auto ok = no_args(args); !ok) return std::unexpected(ok.error());
        return source.inspect([&](const Config&, const Snapshot& snap, const ConnTable&) {
            return routes_result(snap);
        });
    };
    t["conntrack"] = [&source, env](const Json& args) -> CommandResult {
        const auto q = conntrack_query(args);
        if (!q) return std::unexpected(q.error());
        return source.inspect([&](const Config&, const Snapshot& snap, const ConnTable& table) {
            return conntrack_result(snap, table, *q, env.now_ns());
        });
    };
    t["nat"] = [&source, env](const Json& args) -> CommandResult {
        const auto limit = nat_query(args);
        if (!limit) return std::unexpected(limit.error());
        return source.inspect([&](const Config&, const Snapshot& snap, const ConnTable& table) {
            return nat_result(snap, table, *limit, env.now_ns());
        });
    };
    t["leases"] = [&source](const Json& args) -> CommandResult {
        if (auto ok = no_args(args); !ok) return std::unexpected(ok.error());
        const RouterSample s = source.sample();
        return source.inspect([&](const Config& c, const Snapshot& snap, const ConnTable&) {
            return leases_result(c, snap, s);
        });
    };
    t["drops"] = [&source](const Json& args) -> CommandResult {
        const auto all = drops_query(args);
        if (!all) return std::unexpected(all.error());
        return drops_result(source.sample(), *all);
    };
    t["explain"] = [&source](const Json& args) -> CommandResult {
        const auto q = explain_query(args);
        if (!q) return std::unexpected(q.error());
        return source.inspect([&](const Config& c, const Snapshot& snap, const ConnTable&) {
            return explain_result(c, snap, *q);
        });
    };
    return t;
}

}  // namespace calyx::cp
