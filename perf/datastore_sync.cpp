// calyx in Felix's place at scale, end to end: Debian's etcd on loopback holding a site of
// --endpoints WorkloadEndpoints and --groups NetworkPolicies as networking-calico writes them
// (perf/calico_site.hpp: 100 endpoints per host, every port in three groups, five rules a group),
// and the real calyx serving host compute-000 (its 100 vhost-user ports) from it. Measures
//   first sync:  calyx started -> "calyx: ready" (EAL, ports, then the first list and reload:
//                main.cpp waits for it), with the list, translation and reload as calyx logs them;
//   one change:  a security group's rule rewritten in etcd -> calyx reports that revision
//                applied (calyxctl status: the reload published the new snapshot), --changes
//                times; then a port of this host created and deleted (a vhost-user socket made
//                and removed).
// The translation alone, without etcd and calyx: perf/datastore_bench.
//
// Run under the shared lock (it starts etcd and calyx):
//   flock /tmp/calyx-heavy.lock build/perf/datastore_sync [--endpoints 10000] [--groups 1000]
//       [--changes 10]
// Exit status 1 when a step fails or a change takes longer than --bound-ms (default 1000, the
// issue's bound for a security-group change).
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <unistd.h>

#include "calico_site.hpp"
#include "cp/control_server.hpp"
#include "integration/calyx_process.hpp"
#include "integration/etcd_server.hpp"

namespace calyx::perf {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::EtcdServer;
using test::TempDir;

struct Options {
    SiteSize size;
    int changes = 10;
    int64_t bound_ms = 1000;
};

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string config_text(const TempDir& dir, const std::string& etcd, uint16_t metrics_port) {
    return fmt::format(R"(# written by perf/datastore_sync: host compute-000's own part; the site is etcd's
host: compute-000
dataplane:
  workers: [1]
  eal_args: ["--no-huge", "-m", "1024", "--file-prefix", "calyx-dsync-{pid}"]
control: {{socket: {dir}/calyx.sock}}
metrics: {{listen: 127.0.0.1:{metrics}}}
datastore:
  type: etcd
  endpoints: [{etcd}]
  port_socket: {dir}/{{interface}}.sock
  networks:
{networks})",
                       fmt::arg("pid", ::getpid()), fmt::arg("dir", dir.path().string()), fmt::arg("metrics", metrics_port),
                       fmt::arg("etcd", etcd), fmt::arg("networks", network_kinds_yaml()));
}

// The datastore part of `calyxctl status`, or null.
nlohmann::json datastore_status(const std::string& socket) {
    auto reply = cp::control_call(socket, "status", nlohmann::json::object(), 3s);
    if (!reply || !reply->ok) return nullptr;
    return reply->result.value("datastore", nlohmann::json());
}

// Waits until calyx applied `revision`; how long since `since`, or nothing after 30 s.
std::optional<Clock::duration> wait_applied(const std::string& socket, int64_t revision, Clock::time_point since) {
    const auto deadline = Clock::now() + 30s;
    while (Clock::now() < deadline) {
        const auto d = datastore_status(socket);
        if (d.is_object() && d.value("revision", int64_t{0}) >= revision) return Clock::now() - since;
        std::this_thread::sleep_for(2ms);
    }
    return std::nullopt;
}

struct Stats {
    double median = 0, max = 0;
};
Stats stats(std::vector<double> v) {
    std::ranges::sort(v);
    return {v[v.size() / 2], v.back()};
}

// The figures calyx logs for its lists and applies ("listed N keys ... in X ms", "translated in
// X ms, reloaded in Y ms").
void print_calyx_lines(const std::string& log) {
    static const std::regex kLine(R"(calyx: datastore: (listed|applied)[^\n]*)");
    for (auto it = std::sregex_iterator(log.begin(), log.end(), kLine); it != std::sregex_iterator(); ++it)
        fmt::print("  calyx: {}\n", it->str().substr(std::string_view{"calyx: "}.size()));
}

int run(const Options& o) {
    TempDir dir("calyx-dsync");
    const auto site = big_site(o.size);
    fmt::print("site: {} endpoints ({} on compute-000), {} security groups, {} subnets: {} keys\n", o.size.endpoints,
               std::min(o.size.per_host, o.size.endpoints), o.size.groups, kSubnets, site.size());

    auto etcd = EtcdServer::start(dir.path());
    if (!etcd) return fmt::print(stderr, "etcd: {}\n", etcd.error()), 1;
    const auto writing = Clock::now();
    const auto loaded = (*etcd)->put_all(site);
    if (!loaded) return fmt::print(stderr, "writing the site: {}\n", loaded.error()), 1;
    fmt::print("etcd: written in {:.0f} ms, revision {}\n", ms(Clock::now() - writing), *loaded);

    const std::string socket = (dir / "calyx.sock").string();
    const auto config = dir.write("calyx.yaml", config_text(dir, (*etcd)->url(), test::free_loopback_port()));
    const auto starting = Clock::now();
    auto calyx = test::CalyxProcess::start(config, {.timeout = 120s});
    if (!calyx) return fmt::print(stderr, "calyx: {}\n", calyx.error()), 1;
    const auto ready = Clock::now() - starting;
    const auto first = wait_applied(socket, *loaded, starting);
    if (!first) return fmt::print(stderr, "calyx never applied revision {}:\n{}\n", *loaded, (*calyx)->log()), 1;
    const auto d = datastore_status(socket);
    fmt::print("first sync: ready after {:.0f} ms, revision {} applied at {:.0f} ms ({} keys held, {} local "
               "endpoints, {} refused)\n",
               ms(ready), *loaded, ms(*first), d.value("keys", 0), d.value("local_endpoints", 0), d.value("problems", 0));
    if (d.value("problems", 0) != 0 || d.value("keys", size_t{0}) != site.size() ||
        d.value("endpoints", 0) != o.size.endpoints || d.value("policies", 0) != o.size.groups) {
        fmt::print(stderr, "calyx should hold and translate the whole site: {}\n", d.dump());
        return 1;
    }
    print_calyx_lines((*calyx)->log());

    bool ok = true;
    const auto measure = [&](const std::string& what, const auto& write) {
        std::vector<double> took;
        for (int i = 0; i < o.changes; ++i) {
            const auto since = Clock::now();
            const auto revision = write(i);
            if (!revision) return fmt::print(stderr, "{}: {}\n", what, revision.error()), ok = false, void();
            const auto t = wait_applied(socket, *revision, since);
            if (!t) return fmt::print(stderr, "{}: revision {} never applied\n", what, *revision), ok = false, void();
            took.push_back(ms(*t));
            std::this_thread::sleep_for(150ms);  // past the coalescing window: each change on its own
        }
        const Stats s = stats(took);
        fmt::print("{}: {} changes, median {:.0f} ms, max {:.0f} ms\n", what, took.size(), s.median, s.max);
        if (s.max > static_cast<double>(o.bound_ms)) {
            fmt::print(stderr, "{}: {:.0f} ms is over the bound of {} ms\n", what, s.max, o.bound_ms);
            ok = false;
        }
    };
    const size_t log_before = (*calyx)->log().size();
    measure("security group rule changed", [&](int i) {
        return (*etcd)->put(test::calico::network_policy(group_id(0), group_rules(0, o.size.groups, (i % 2) + 1)));
    });
    // A port of this host's, the 101st: created (a new vhost-user socket) then deleted, in turn.
    test::calico::Endpoint added = endpoint(o.size.endpoints, o.size);
    added.host = "compute-000";
    const auto [added_key, added_value] = test::calico::workload_endpoint(added);
    measure("port of this host created or deleted", [&](int i) {
        return i % 2 == 0 ? (*etcd)->put(added_key, added_value) : (*etcd)->remove(added_key);
    });
    print_calyx_lines((*calyx)->log().substr(log_before, 4000));
    if (!(*calyx)->running()) return fmt::print(stderr, "calyx exited:\n{}\n", (*calyx)->report()), 1;
    (*calyx)->stop();
    return ok ? 0 : 1;
}

int int_arg(const char* text) {
    int v = 0;
    const auto end = text + std::char_traits<char>::length(text);
    if (std::from_chars(text, end, v).ptr != end || v <= 0) {
        fmt::print(stderr, "not a positive number: {}\n", text);
        std::exit(2);
    }
    return v;
}

}  // namespace
}  // namespace calyx::perf

int main(int argc, char** argv) {
    calyx::perf::Options o;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string_view flag = argv[i];
        const int v = calyx::perf::int_arg(argv[i + 1]);
        if (flag == "--endpoints")
            o.size.endpoints = v;
        else if (flag == "--groups")
            o.size.groups = v;
        else if (flag == "--changes")
            o.changes = v;
        else if (flag == "--bound-ms")
            o.bound_ms = v;
        else
            return fmt::print(stderr, "usage: {} [--endpoints N] [--groups N] [--changes N] [--bound-ms N]\n", argv[0]), 2;
    }
    if (argc % 2 == 0)
        return fmt::print(stderr, "usage: {} [--endpoints N] [--groups N] [--changes N] [--bound-ms N]\n", argv[0]), 2;
    return calyx::perf::run(o);
}
