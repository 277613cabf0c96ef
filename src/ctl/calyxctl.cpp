// calyxctl: the operator's view into a running calyx, over its control socket
// (cp/control_server.hpp has the protocol, doc/operations.md every command with examples).
//
//   calyxctl [--socket PATH] [--json] [--timeout SECONDS] COMMAND [options]
//
// Exit codes, so that scripts can tell the cases apart:
//   0  the command succeeded (explain: the connection would be allowed)
//   1  the command ran and the answer is no: a reload was rejected, explain says denied, an
//      upgrade failed (the running calyx serves on)
//   2  the request was wrong: unknown command or option, unknown instance, bad address
//   3  calyx could not be asked: not running, permission denied, no answer in time
#include <cstdio>
#include <fstream>
#include <iostream>
#include <thread>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <boost/program_options.hpp>

#include "cp/control_server.hpp"

namespace po = boost::program_options;
using calyx::cp::Json;

namespace {

constexpr const char* kDefaultSocket = "/run/calyx/calyx.sock";  // conf/demo.yaml's, the default

enum Exit : int { kOk = 0, kNo = 1, kUsage = 2, kUnreachable = 3 };

struct Command {
    const char* name;
    const char* summary;
};

// In the order `calyxctl --help` lists them.
constexpr Command kCommands[] = {
    {"status", "version, uptime, configuration generation, ports, workers, connections, uplink, datastore"},
    {"reload", "re-read the configuration file (as SIGHUP); print every error if it is refused"},
    {"upgrade",
     "replace the running calyx by a new one (the binary it was started from, after a package upgrade) "
     "without cutting connections [--binary PATH]"},
    {"ports", "per port: state, socket, packets and bytes each way, drops"},
    {"instances", "per instance: network, address, MAC, port state, security groups, connections and NAT ports held (of its limits)"},
    {"routes", "the routing table, with each route's next hop"},
    {"conntrack", "tracked connections [--instance NAME] [--limit N]"},
    {"nat", "uplink, masquerade ports in use, translated connections [--limit N]"},
    {"leases", "the DHCP lease of every instance and the DHCP reply counters"},
    {"drops", "dropped packets per port and reason [--all: zeros too]"},
    {"explain",
     "would a new connection be allowed, and by which rule: --from --to --proto "
     "[--port | --type --code]"},
};

const Command* find_command(const std::string& name) {
    for (const auto& c : kCommands)
        if (name == c.name) return &c;
    return nullptr;
}

std::string usage_text(const po::options_description& global) {
    std::ostringstream o;
    o << "calyxctl: query and control a running calyx over its control socket\n\n"
         "Usage: calyxctl [--socket PATH] [--json] COMMAND [options]\n\nCommands:\n";
    for (const auto& c : kCommands) o << fmt::format("  {:<10}  {}\n", c.name, c.summary);
    o << "\n" << global;
    o << "\n'calyxctl COMMAND --help' shows a command's options.\n"
         "Exit codes: 0 ok (explain: allowed), 1 refused (reload rejected, explain denied),\n"
         "2 wrong request (unknown command, option or instance), 3 calyx unreachable.\n";
    return o.str();
}

// Options of one command, as the daemon's "args".
po::options_description command_options(const std::string& name) {
    po::options_description d(fmt::format("Options of '{}'", name));
    if (name == "conntrack") {
        d.add_options()("instance", po::value<std::string>(), "only connections of this instance")(
            "limit", po::value<uint32_t>(),
            "list at most N connections (default 1000; the total is always counted)");
    } else if (name == "nat") {
        d.add_options()("limit", po::value<uint32_t>(),
                        "list at most N translated connections (default 1000)");
    } else if (name == "upgrade") {
        d.add_options()("binary", po::value<std::string>(),
                        "the calyx binary to start (default: the path the running calyx was started from)");
    } else if (name == "drops") {
        d.add_options()("all", "list every reason of every port, zeros included");
    } else if (name == "explain") {
        d.add_options()("from", po::value<std::string>(),
                        "source: instance name or address (outside addresses too)")(
            "to", po::value<std::string>(), "destination: instance name or address")(
            "proto", po::value<std::string>(), "tcp, udp or icmp")("port", po::value<uint32_t>(),
                                                                   "destination port (tcp, udp)")(
            "type", po::value<uint32_t>(), "ICMP type (default 8, echo request)")(
            "code", po::value<uint32_t>(), "ICMP code (default 0)");
    }
    return d;
}

Json args_from(const std::string& name, const po::variables_map& vm) {
    Json args = Json::object();
    for (const char* key : {"instance", "from", "to", "proto", "binary"})
        if (vm.count(key)) args[key] = vm[key].as<std::string>();
    for (const char* key : {"limit", "port", "type", "code"})
        if (vm.count(key)) args[key] = vm[key].as<uint32_t>();
    if (name == "drops" && vm.count("all")) args["all"] = true;
    return args;
}

// --- Tables -------------------------------------------------------------------------------

// Columns aligned to their widest cell, two spaces apart; numbers right-aligned.
class Table {
  public:
    explicit Table(std::vector<std::string> header, std::vector<bool> numeric = {})
        : header_(std::move(header)), numeric_(std::move(numeric)) {
        numeric_.resize(header_.size(), false);
    }
    void add(std::vector<std::string> row) {
        row.resize(header_.size());
        rows_.push_back(std::move(row));
    }
    bool empty() const { return rows_.empty(); }
    void print() const {
        std::vector<size_t> width(header_.size());
        for (size_t c = 0; c < header_.size(); ++c) width[c] = header_[c].size();
        for (const auto& r : rows_)
            for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
        print_row(header_, width);
        for (const auto& r : rows_) print_row(r, width);
    }

  private:
    void print_row(const std::vector<std::string>& row, const std::vector<size_t>& width) const {
        std::string line;
        for (size_t c = 0; c < row.size(); ++c) {
            const bool last = c + 1 == row.size();
            if (c) line += "  ";
            if (numeric_[c])
                line += fmt::format("{:>{}}", row[c], width[c]);
            else
                line += last ? row[c] : fmt::format("{:<{}}", row[c], width[c]);
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        fmt::print("{}\n", line);
    }

    std::vector<std::string> header_;
    std::vector<bool> numeric_;
    std::vector<std::vector<std::string>> rows_;
};

// A JSON value as a cell: strings bare, null as "-".
std::string cell(const Json& v) {
    if (v.is_null()) return "-";
    if (v.is_string()) return v.get<std::string>();
    if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
    return v.dump();
}

std::string str(const Json& j, const char* key) {
    const auto it = j.find(key);
    return it == j.end() ? std::string("-") : cell(*it);
}

// "1 connection", "2 connections".
std::string count_text(uint64_t n, std::string_view one, std::string_view many) {
    return fmt::format("{} {}", n, n == 1 ? one : many);
}

std::string duration_text(int64_t s) {
    if (s < 60) return fmt::format("{}s", s);
    if (s < 3600) return fmt::format("{}m {:02}s", s / 60, s % 60);
    if (s < 86400) return fmt::format("{}h {:02}m", s / 3600, s % 3600 / 60);
    return fmt::format("{}d {:02}h", s / 86400, s % 86400 / 3600);
}

void print_pairs(const std::vector<std::pair<std::string, std::string>>& pairs) {
    size_t w = 0;
    for (const auto& [k, v] : pairs) w = std::max(w, k.size());
    for (const auto& [k, v] : pairs) fmt::print("{:<{}}  {}\n", k, w, v);
}

std::string uplink_text(const Json& u) {
    if (u.is_null()) return "none: the instances reach only each other";
    return fmt::format("{} on {} via {} (MAC {}, MTU {}, port slot {})", str(u, "address"),
                       str(u, "subnet"), str(u, "gateway"), str(u, "mac"), str(u, "mtu"),
                       str(u, "port_slot"));
}

std::string nat_ports_text(const Json& n) {
    if (n.is_null()) return "none (no uplink)";
    const Json& u = n["in_use"];
    std::string text =
        fmt::format("ports {} in {} pools; in use: tcp {}, udp {}, icmp {}", str(n, "range"),
                    str(n, "partitions"), str(u, "tcp"), str(u, "udp"), str(u, "icmp"));
    if (n.contains("exhausted"))
        text += fmt::format("; {} refused for want of a port", str(n, "exhausted"));
    return text;
}

void print_status(const Json& r) {
    std::vector<std::pair<std::string, std::string>> p;
    fmt::print("calyx {} (pid {}), up {}\n", str(r, "version"), str(r, "pid"),
               duration_text(r.value("uptime_s", int64_t{0})));
    p.emplace_back(
        "configuration",
        fmt::format("{}, generation {} (reloads: {} ok, {} failed)", str(r, "config"),
                    str(r, "generation"), str(r["reloads"], "ok"), str(r["reloads"], "failed")));
    p.emplace_back("instances", fmt::format("{} on {} networks; ports up: {} of {}",
                                            str(r, "instances"), str(r, "networks"),
                                            str(r["ports"], "up"), str(r["ports"], "total")));
    std::string workers;
    for (const auto& w : r["workers"])
        workers += fmt::format("{}lcore {} ({}% busy, {} cycles/packet, {}% asleep)",
                               workers.empty() ? "" : ", ", str(w, "lcore"), str(w, "busy_percent"),
                               str(w, "cycles_per_packet"), str(w, "asleep_percent"));
    p.emplace_back("workers", workers.empty() ? "-" : workers);
    const Json& ct = r["conntrack"];
    p.emplace_back("connections",
                   fmt::format("{} of {} ({} created, {} expired)", str(ct, "entries"),
                               str(ct, "capacity"), str(ct, "created"), str(ct, "expired")));
    p.emplace_back("uplink", uplink_text(r["uplink"]));
    p.emplace_back("masquerade", nat_ports_text(r["nat"]));
    p.emplace_back("control", str(r, "control_socket"));
    p.emplace_back("metrics", str(r, "metrics_listen"));
    const Json& d = r.contains("datastore") ? r["datastore"] : Json(nullptr);
    if (d.is_null()) {
        p.emplace_back("datastore", "none: the site comes from the configuration file");
    } else {
        p.emplace_back("datastore", fmt::format("{} at {}, {}; revision {}, last in sync {}", str(d, "type"),
                                                str(d, "endpoint"), d.value("up", false) ? "up" : "DOWN",
                                                str(d, "revision"),
                                                d["sync_lag_s"].is_null() ? std::string("never")
                                                                          : str(d, "sync_lag_s") + " s ago"));
        p.emplace_back("site", fmt::format("{} endpoints ({} here), {} policies, {} subnets; {} refused",
                                           str(d, "endpoints"), str(d, "local_endpoints"), str(d, "policies"),
                                           str(d, "subnets"), str(d, "problems")));
        if (!d["last_error"].is_null()) p.emplace_back("etcd error", str(d, "last_error"));
    }
    print_pairs(p);
    if (!d.is_null())
        for (const auto& problem : d["first_problems"]) fmt::print("  refused: {}\n", cell(problem));
}

void print_ports(const Json& r) {
    Table t({"PORT", "STATE", "MODE", "RX PKTS", "RX BYTES", "TX PKTS", "TX BYTES", "DROPS",
             "SOCKET/DEVICE"},
            {false, false, false, true, true, true, true, true, false});
    for (const auto& p : r["ports"])
        t.add({str(p, "name"), p.value("up", false) ? "up" : "down", str(p, "mode"),
               str(p, "rx_packets"), str(p, "rx_bytes"), str(p, "tx_packets"), str(p, "tx_bytes"),
               str(p, "drops"), p["socket"].is_null() ? str(p, "device") : str(p, "socket")});
    if (t.empty())
        fmt::print("no ports\n");
    else
        t.print();
}

void print_instances(const Json& r) {
    Table t({"INSTANCE", "NETWORK", "KIND", "ADDRESS", "MAC", "PORT", "RULES IN/OUT", "GROUPS",
             "CONNECTIONS", "NAT PORTS"});
    for (const auto& i : r["instances"]) {
        std::string groups;
        for (const auto& g : i["security_groups"]) groups += (groups.empty() ? "" : ",") + cell(g);
        const std::string rules =
            i.contains("rules")
                ? fmt::format("{}/{}", str(i["rules"], "ingress"), str(i["rules"], "egress"))
                : "-";
        // Held of the limit: who fills the table shows at once.
        const auto held = [&](const char* key) {
            return i.contains("limits") ? fmt::format("{}/{}", str(i, key), str(i["limits"], key)) : str(i, key);
        };
        t.add({str(i, "name"), str(i, "network"), str(i, "kind"), str(i, "address"), str(i, "mac"),
               i.value("up", false) ? "up" : "down", rules, groups.empty() ? "-" : groups,
               held("connections"), held("nat_ports")});
    }
    if (t.empty())
        fmt::print("no instances\n");
    else
        t.print();
}

void print_routes(const Json& r) {
    Table t({"PREFIX", "NETWORK", "NEXT HOP", "ORIGIN"});
    for (const auto& route : r["routes"]) {
        const Json& o = route.value("origin", Json::object());
        // "table 101 (bird)" for a route learnt from the site, "calyx" for its own.
        const std::string origin = o.contains("table") && !o["table"].is_null()
                                       ? fmt::format("table {} ({})", str(o, "table"), str(o, "protocol"))
                                       : str(o, "protocol");
        t.add({str(route, "prefix"), str(route, "network"), str(route["next_hop"], "text"), origin});
    }
    t.print();
}

std::string endpoint_text(const Json& e, bool ports) {
    std::string s = e["instance"].is_null() ? "" : cell(e["instance"]) + " ";
    s += str(e, "address");
    if (ports && e.contains("port")) s += ":" + str(e, "port");
    return s;
}

void print_connections(const Json& c, std::string_view one, std::string_view many) {
    Table t({"PROTO", "STATE", "FROM", "TO", "NAT", "EXPIRES"});
    for (const auto& e : c["entries"]) {
        std::string proto = str(e, "protocol");
        if (e.contains("icmp_id")) proto += " id " + str(e, "icmp_id");
        const Json& nat = e["nat"];
        // For ICMP the masquerade "port" is the echo identifier.
        const std::string nat_text =
            nat.is_null() ? "-"
            : str(e, "protocol") == "icmp"
                ? fmt::format("{} id {}", str(nat, "address"), str(nat, "port"))
                : fmt::format("{}:{}", str(nat, "address"), str(nat, "port"));
        t.add({proto, str(e, "state"), endpoint_text(e["from"], true), endpoint_text(e["to"], true),
               nat_text, duration_text(e.value("expires_in_s", int64_t{0}))});
    }
    if (!t.empty()) t.print();
    const uint64_t total = c.value("total", uint64_t{0});
    if (c.value("truncated", false))
        fmt::print("{} of {} shown (--limit N shows more)\n", str(c, "shown"),
                   count_text(total, one, many));
    else
        fmt::print("{}\n", count_text(total, one, many));
}

void print_conntrack(const Json& r) {
    print_connections(r, "connection", "connections");
}

void print_nat(const Json& r) {
    std::string nets;
    for (const auto& n : r["nat_networks"])
        nets += fmt::format("{}{} ({})", nets.empty() ? "" : ", ", str(n, "name"), str(n, "cidr"));
    print_pairs({{"uplink", uplink_text(r["uplink"])},
                 {"nat networks", nets.empty() ? "none" : nets},
                 {"masquerade", nat_ports_text(r["ports"])}});
    print_connections(r["connections"], "translated connection", "translated connections");
}

void print_leases(const Json& r) {
    Table t({"INSTANCE", "MAC", "ADDRESS", "NETWORK", "GATEWAY", "LEASE", "PORT"});
    for (const auto& l : r["leases"])
        t.add({str(l, "instance"), str(l, "mac"),
               l.contains("prefix_length")
                   ? fmt::format("{}/{}", str(l, "address"), str(l, "prefix_length"))
                   : str(l, "address"),
               str(l, "network"), str(l, "gateway"),
               l.contains("lease_seconds") ? str(l, "lease_seconds") + "s" : "-",
               l.value("port_up", false) ? "up" : "down"});
    if (t.empty())
        fmt::print("no instances\n");
    else
        t.print();
    const Json& d = r["dhcp_replies"];
    fmt::print(
        "DHCP replies sent: {} offer, {} ack, {} nak (addresses are static: each instance "
        "always gets its configured one)\n",
        str(d, "offer"), str(d, "ack"), str(d, "nak"));
}

void print_drops(const Json& r) {
    Table t({"PORT", "REASON", "PACKETS", "MEANING"}, {false, false, true, false});
    for (const auto& d : r["drops"])
        t.add({str(d, "port"), str(d, "reason"), str(d, "packets"), str(d, "text")});
    if (t.empty()) {
        fmt::print("no drops\n");
        return;
    }
    t.print();
    fmt::print("{} dropped in all\n",
               count_text(r.value("total", uint64_t{0}), "packet", "packets"));
}

void print_explain(const Json& r) {
    bool first = true;
    for (const auto& line : r["explanation"]) {
        fmt::print("{}{}\n", first ? "" : "  ", cell(line));
        first = false;
    }
}

void print_reload(const Json& r) {
    fmt::print("{}\n", str(r, "message"));
}

void print_result(const std::string& command, const Json& r) {
    if (command == "status") print_status(r);
    if (command == "reload") print_reload(r);
    if (command == "ports") print_ports(r);
    if (command == "instances") print_instances(r);
    if (command == "routes") print_routes(r);
    if (command == "conntrack") print_conntrack(r);
    if (command == "nat") print_nat(r);
    if (command == "leases") print_leases(r);
    if (command == "drops") print_drops(r);
    if (command == "explain") print_explain(r);
}

// A process that has not exited (a zombie has: it waits only for its parent to reap it).
bool process_runs(int64_t pid) {
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(stat, line)) return false;
    const size_t close = line.rfind(')');
    return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z' && line[close + 2] != 'X';
}

// After `upgrade` started the successor: wait until it answers on the control socket (it took
// over) or exits (the running calyx resumes, or never stopped). The reply to print.
struct UpgradeOutcome {
    bool ok = false;
    std::string message;
    Json result;
};

UpgradeOutcome wait_for_upgrade(const std::string& socket, const Json& started, std::chrono::milliseconds timeout) {
    using namespace std::chrono_literals;
    const int64_t old_pid = started.value("pid", int64_t{0});
    const int64_t new_pid = started.value("successor", int64_t{0});
    const std::string binary = started.value("binary", std::string());
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    const auto serving = [&](int64_t pid) -> std::optional<Json> {
        const auto reply = calyx::cp::control_call(socket, "status", Json::object(), 2s);
        if (reply && reply->ok && reply->result.value("pid", int64_t{0}) == pid) return reply->result;
        return std::nullopt;
    };
    while (std::chrono::steady_clock::now() < deadline) {
        // Taken over: the new one answers, and the old one has exited (the new one owns the
        // socket and the state file from then on; another upgrade may follow at once).
        if (auto status = serving(new_pid); status && !process_runs(old_pid)) {
            Json result = {{"old_pid", old_pid}, {"pid", new_pid}, {"binary", binary},
                           {"version", status->value("version", std::string())}};
            return {true,
                    fmt::format("upgraded: calyx pid {} handed over to pid {} ({}, calyx {})", old_pid, new_pid,
                                binary, status->value("version", std::string("?"))),
                    result};
        }
        if (!process_runs(new_pid)) {
            // It died: the old one resumes (or never stopped); say so once it answers again.
            const auto resumed_by = std::chrono::steady_clock::now() + 15s;
            bool resumed = false;
            while (!(resumed = serving(old_pid).has_value()) && std::chrono::steady_clock::now() < resumed_by)
                std::this_thread::sleep_for(100ms);
            return {false,
                    fmt::format("upgrade failed: the new calyx (pid {}, {}) exited before it took over; {} (its "
                                "output is in the running calyx's log, e.g. journalctl -u calyx)",
                                new_pid, binary,
                                resumed ? fmt::format("calyx pid {} serves on", old_pid)
                                        : fmt::format("calyx pid {} does not answer either", old_pid)),
                    {}};
        }
        std::this_thread::sleep_for(100ms);
    }
    return {false,
            fmt::format("upgrade: pid {} did not take over within {} s (it still runs; the hand-over times out "
                        "after 60 s and the old calyx resumes)",
                        new_pid, std::chrono::duration_cast<std::chrono::seconds>(timeout).count()),
            {}};
}

int fail(bool json, int code, const std::string& message,
         const std::vector<std::string>& errors = {}, bool usage = false) {
    fmt::print(stderr, "calyxctl: {}\n", message);
    for (const auto& e : errors) fmt::print(stderr, "{}\n", e);
    if (json) {
        Json j;
        j["ok"] = false;
        j["error"] = message;
        if (!errors.empty()) j["errors"] = errors;
        if (usage) j["usage"] = true;
        fmt::print("{}\n", j.dump(2, ' ', false, Json::error_handler_t::replace));
    }
    return code;
}

}  // namespace

int main(int argc, char** argv) {
    po::options_description global("Options");
    global.add_options()("help,h", "show this help (or a command's, after the command)")(
        "version", "show the version and exit")(
        "socket,s", po::value<std::string>()->default_value(kDefaultSocket),
        "calyx's control socket (control.socket)")(
        "json,j", "print the daemon's reply as JSON ({\"ok\": ..., \"result\": ...}) for scripts")(
        "timeout", po::value<double>()->default_value(30.0), "seconds to wait for calyx's answer");
    po::options_description hidden;
    hidden.add_options()("command", po::value<std::string>())(
        "rest", po::value<std::vector<std::string>>());
    po::options_description all;
    all.add(global).add(hidden);
    po::positional_options_description positional;
    positional.add("command", 1).add("rest", -1);

    po::variables_map vm;
    std::vector<std::string> rest;
    try {
        // Global options may stand before or after the command; whatever they do not know is
        // the command's (parsed below with that command's own options).
        const po::parsed_options parsed = po::command_line_parser(argc, argv)
                                              .options(all)
                                              .positional(positional)
                                              .allow_unregistered()
                                              .run();
        po::store(parsed, vm);
        po::notify(vm);
        rest = po::collect_unrecognized(parsed.options, po::include_positional);
    } catch (const po::error& e) {
        fmt::print(stderr, "calyxctl: {}\nTry 'calyxctl --help'.\n", e.what());
        return kUsage;
    }
    const bool json = vm.count("json") > 0;
    if (vm.count("version")) {
        fmt::print("calyxctl {}\n", CALYX_VERSION);
        return kOk;
    }
    if (!vm.count("command")) {
        if (vm.count("help")) {
            std::cout << usage_text(global);
            return kOk;
        }
        fmt::print(stderr, "calyxctl: no command given\n\n{}", usage_text(global));
        return kUsage;
    }
    const std::string name = vm["command"].as<std::string>();
    const Command* command = find_command(name);
    if (!command) {
        std::string names;
        for (const auto& c : kCommands)
            names += fmt::format("{}{}", names.empty() ? "" : ", ", c.name);
        return fail(
            json, kUsage,
            fmt::format("unknown command '{}' (commands: {}); see 'calyxctl --help'", name, names),
            {}, true);
    }
    // `rest` starts with the command itself (collected as a positional token).
    if (!rest.empty() && rest.front() == name) rest.erase(rest.begin());

    const po::options_description options = command_options(name);
    if (vm.count("help")) {
        fmt::print("calyxctl {}: {}\n\n", command->name, command->summary);
        if (!options.options().empty())
            std::cout << options << "\n";
        else
            fmt::print("'{}' takes no options.\n", name);
        return kOk;
    }
    po::variables_map cvm;
    try {
        po::store(po::command_line_parser(rest).options(options).run(), cvm);
        po::notify(cvm);
    } catch (const po::error& e) {
        return fail(json, kUsage,
                    fmt::format("{}: {}; see 'calyxctl {} --help'", name, e.what(), name), {},
                    true);
    }
    const double seconds = vm["timeout"].as<double>();
    if (!(seconds > 0 && seconds <= 86400))
        return fail(json, kUsage, "--timeout must be more than 0 and at most 86400 seconds", {},
                    true);
    const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));

    const std::string socket = vm["socket"].as<std::string>();
    const auto reply = calyx::cp::control_call(socket, name, args_from(name, cvm), timeout);
    if (!reply) return fail(json, kUnreachable, reply.error().message);
    if (!reply->ok)
        return fail(json, reply->usage ? kUsage : kNo, reply->error, reply->errors, reply->usage);

    if (name == "upgrade") {
        const UpgradeOutcome outcome = wait_for_upgrade(socket, reply->result, std::max(timeout, std::chrono::milliseconds(60000)));
        if (!outcome.ok) return fail(json, kNo, outcome.message);
        if (json) {
            Json j;
            j["ok"] = true;
            j["result"] = outcome.result;
            fmt::print("{}\n", j.dump(2, ' ', false, Json::error_handler_t::replace));
        } else {
            fmt::print("{}\n", outcome.message);
        }
        return kOk;
    }
    const bool denied = name == "explain" && !reply->result.value("allowed", false);
    if (json) {
        Json j;
        j["ok"] = true;
        j["result"] = reply->result;
        fmt::print("{}\n", j.dump(2, ' ', false, Json::error_handler_t::replace));
    } else {
        print_result(name, reply->result);
    }
    return denied ? kNo : kOk;
}
