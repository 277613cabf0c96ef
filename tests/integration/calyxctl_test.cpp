// calyxctl against the real calyx: every command in table and JSON form, reload of good and
// bad files, explain for the seed's frames (checked against what the data plane then does),
// the socket's mode and the errors a user sees. The three instances of calyx_fixture.hpp:
// web-1 public, app-1 nat, db-1 private.
//
// Usage: calyxctl_test [gtest flags] [--calyx-bin=PATH | PATH]; $CALYX_BIN and $CALYXCTL_BIN
// (set by meson) win.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "calyx/drop_reason.hpp"
#include "calyx_fixture.hpp"
#include "support/frame_builder.hpp"
#include "test_frames.hpp"

namespace calyx::test {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;

std::string calyxctl_binary() {
    if (const char* p = std::getenv("CALYXCTL_BIN")) return p;
    return "build/calyxctl";
}

struct CtlRun {
    int exit_code = -1;  // -1: did not exit normally
    std::string out;
    std::string err;
    std::string what;  // the command line, for failure messages
};

std::ostream& operator<<(std::ostream& o, const CtlRun& r) {
    return o << "\n$ " << r.what << "\nexit " << r.exit_code << "\n--- stdout:\n"
             << r.out << "--- stderr:\n"
             << r.err;
}

// The seed's rules as YAML flow mappings (as in security_groups_test.cpp).
const std::string kEgressAny = "{direction: egress, protocol: any, remote: 0.0.0.0/0}";
const std::string kHttpsFromAnywhere =
    "{direction: ingress, protocol: tcp, ports: 443, remote: 0.0.0.0/0}";
const std::string kHttpFromWeb =
    "{direction: ingress, protocol: tcp, ports: 80, remote: 203.0.113.10/32}";
const std::string k3333FromApp =
    "{direction: ingress, protocol: tcp, ports: 3333, remote: 10.10.0.5/32}";
const std::string k3333ToWeb =
    "{direction: egress, protocol: tcp, ports: 3333, remote: 203.0.113.10/32}";
const std::string kPingFromWeb = "{direction: ingress, protocol: icmp, remote: 203.0.113.10/32}";

// Frame 4: web-1 out anywhere and in on 443; app-1 in on 80 from web-1; db-1 in no group.
SecurityPolicy frame4() {
    SecurityPolicy p;
    p.group("web", {kEgressAny, kHttpsFromAnywhere}).group("app", {kHttpFromWeb});
    p.member(kWeb, {"web"}).member(kApp, {"app"});
    return p;
}

// Frame 5: app-1 reaches web-1 on 3333, with the ingress rule on web-1 and its own egress.
SecurityPolicy frame5() {
    SecurityPolicy p;
    p.group("web", {kEgressAny, kHttpsFromAnywhere, k3333FromApp})
        .group("app", {kHttpFromWeb, k3333ToWeb});
    p.member(kWeb, {"web"}).member(kApp, {"app"});
    return p;
}

bool has_line(const std::string& text, std::string_view line) {
    size_t at = 0;
    while ((at = text.find(line, at)) != std::string::npos) {
        const bool starts = at == 0 || text[at - 1] == '\n' || text[at - 1] == ' ';
        const size_t end = at + line.size();
        if (starts && (end == text.size() || text[end] == '\n')) return true;
        at = end;
    }
    return false;
}

class CalyxctlTest : public CalyxFixture {
  protected:
    // calyxctl --socket <calyx's socket> ARGS..., bounded by 30 s.
    CtlRun ctl(std::vector<std::string> args, const std::vector<std::string>& prefix = {}) {
        std::vector<std::string> argv = prefix;
        argv.push_back(calyxctl_binary());
        if (std::find(args.begin(), args.end(), "--socket") == args.end()) {
            argv.push_back("--socket");
            argv.push_back(control_socket().string());
        }
        argv.insert(argv.end(), args.begin(), args.end());
        CtlRun r;
        for (const auto& a : argv) r.what += (r.what.empty() ? "" : " ") + a;
        const unsigned seq = ++runs_;
        const fs::path out = dir_ / fmt::format("calyxctl-{}.out", seq);
        const fs::path err = dir_ / fmt::format("calyxctl-{}.err", seq);
        auto child = ChildProcess::spawn(argv, out, err);
        if (!child) {
            r.err = child.error();
            return r;
        }
        const auto st = (*child)->wait(30s);
        if (!st)
            (*child)->kill();
        else if (WIFEXITED(*st))
            r.exit_code = WEXITSTATUS(*st);
        r.out = read_file(out);
        r.err = read_file(err);
        return r;
    }

    // The same with --json; the reply's "result" (a test failure if calyxctl failed).
    Json ctl_json(std::vector<std::string> args, int expect_exit = 0) {
        args.insert(args.begin(), "--json");
        const CtlRun r = ctl(args);
        EXPECT_EQ(r.exit_code, expect_exit) << r;
        const Json j = Json::parse(r.out, nullptr, false);
        EXPECT_TRUE(j.is_object() && j.contains("ok")) << "not a reply:" << r;
        if (!j.is_object() || !j.value("ok", false)) return j;
        return j["result"];
    }

    void start_with(const SecurityPolicy& p) {
        ASSERT_NO_FATAL_FAILURE(start_all({.security = p}));
        // The control socket listens before calyx says it is ready.
        ASSERT_TRUE(calyx_->process().wait_for_log("calyx: ready", kControl)) << calyx_->report();
    }

    // Replace the config file atomically, as an operator's editor or config management would.
    void rewrite_config(const std::string& yaml) {
        dir_.write("calyx.yaml.next", yaml);
        fs::rename(dir_ / "calyx.yaml.next", config_);
    }

    // `calyxctl reload` of the config for `policy`; true when calyx accepted it.
    bool reload_policy(const SecurityPolicy& policy, uint64_t expect_generation) {
        rewrite_config(config_text({.security = policy}));
        options_.security = policy;
        const CtlRun r = ctl({"reload"});
        EXPECT_EQ(r.exit_code, 0) << r;
        EXPECT_EQ(r.out, fmt::format("reloaded: generation {}\n", expect_generation)) << r;
        return r.exit_code == 0;
    }

    // A TCP SYN from one VM to another: true if calyx forwarded it. A SYN expected to be
    // dropped is watched for kSilence only (after a warm path, forwarding takes microseconds).
    bool syn_passes(const Vm& from, const Vm& to, uint16_t sport, uint16_t dport,
                    bool expected = true) {
        const Bytes syn = FrameBuilder()
                              .eth(from.mac, kGatewayMac)
                              .ipv4(from.ip, to.ip, ipproto::kTcp)
                              .tcp(sport, dport, TcpHdr::kSyn, 0x1000, 0)
                              .build();
        EXPECT_TRUE(vm(from).send(syn));
        const auto got = vm(to).receive(expected ? kReply : kSilence, [&](const Bytes& f) {
            return is_tcp(f) && tcp_of(f).src_port.host() == sport &&
                   tcp_of(f).dst_port.host() == dport;
        });
        return got.has_value();
    }

    unsigned runs_ = 0;
};

// --- every command ------------------------------------------------------------------------

TEST_F(CalyxctlTest, EveryCommandAnswersInTablesAndJson) {
    // web-1 may send anything; app-1 takes pings and tcp/80 from web-1; db-1 is in no group.
    SecurityPolicy p;
    p.group("web", {kEgressAny}).group("app", {kPingFromWeb, kHttpFromWeb});
    p.member(kWeb, {"web"}).member(kApp, {"app"});
    ASSERT_NO_FATAL_FAILURE(start_with(p));
    ASSERT_NO_FATAL_FAILURE(expect_ping_between(kWeb, kApp, 7, 1));
    ASSERT_TRUE(vm(kDb).send(ping_frame(kDb, kWeb.ip, 9, 1)));
    const auto c = wait_for_drops(kDb.name, "sg_no_egress_rule", 1);
    ASSERT_TRUE(c);
    ASSERT_EQ(c->drops(kDb.name, "sg_no_egress_rule"), 1u) << c->text;

    // Every command succeeds in both forms.
    for (const char* c :
         {"status", "ports", "instances", "routes", "conntrack", "nat", "leases", "drops"}) {
        SCOPED_TRACE(c);
        const CtlRun human = ctl({c});
        EXPECT_EQ(human.exit_code, 0) << human;
        EXPECT_FALSE(human.out.empty()) << human;
        EXPECT_TRUE(human.err.empty()) << human;
        const Json j = ctl_json({c});
        EXPECT_TRUE(j.is_object()) << j.dump();
    }

    const Json status = ctl_json({"status"});
    EXPECT_EQ(status["generation"], 1);
    EXPECT_EQ(status["instances"], 3);
    EXPECT_EQ(status["ports"], (Json{{"total", 3}, {"up", 3}}));
    EXPECT_EQ(status["control_socket"], control_socket().string());
    EXPECT_EQ(status["conntrack"]["capacity"], 65536 - 65536 / 32) << "a 32nd kept free for evictions";
    EXPECT_GE(status["conntrack"]["entries"].get<uint64_t>(), 1u);
    const CtlRun status_text = ctl({"status"});
    EXPECT_TRUE(status_text.out.starts_with("calyx " CALYX_VERSION " (pid ")) << status_text;
    EXPECT_NE(status_text.out.find(
                  fmt::format("{}, generation 1 (reloads: 0 ok, 0 failed)", config_.string())),
              std::string::npos)
        << status_text;
    EXPECT_NE(status_text.out.find("ports up: 3 of 3"), std::string::npos) << status_text;

    // ports: the ping and the ARP warm-up came in on web-1.
    const Json ports = ctl_json({"ports"});
    ASSERT_EQ(ports["ports"].size(), 3u);
    for (const auto& port : ports["ports"]) {
        EXPECT_EQ(port["up"], true) << port.dump();
        EXPECT_EQ(port["socket"], (dir_ / (port["name"].get<std::string>() + ".sock")).string());
        if (port["name"] == kWeb.name) {
            EXPECT_GE(port["rx_packets"].get<uint64_t>(), 2u) << port.dump();
            EXPECT_GE(port["tx_packets"].get<uint64_t>(), 2u) << port.dump();
        }
        if (port["name"] == kDb.name) {
            EXPECT_EQ(port["drops"], 1) << port.dump();
        }
    }
    const CtlRun ports_text = ctl({"ports"});
    EXPECT_TRUE(ports_text.out.starts_with("PORT   STATE  MODE    RX PKTS")) << ports_text;
    EXPECT_NE(ports_text.out.find("\nweb-1  up     server"), std::string::npos) << ports_text;

    const Json inst = ctl_json({"instances"});
    ASSERT_EQ(inst["instances"].size(), 3u);
    EXPECT_EQ(inst["instances"][1], (Json{{"name", "app-1"},
                                          {"network", "nat"},
                                          {"kind", "nat"},
                                          {"address", "10.10.0.5"},
                                          {"mac", "52:54:00:00:02:01"},
                                          {"port_slot", 1},
                                          {"up", true},
                                          {"security_groups", {"app"}},
                                          {"rules", {{"ingress", 2}, {"egress", 0}}},
                                          {"connections", 0},
                                          {"nat_ports", 0},
                                          {"limits", {{"connections", 65536},
                                                      {"new_connections_per_second", 50000},
                                                      {"nat_ports", 4096}}}}));
    EXPECT_NE(
        ctl({"instances"})
            .out.find("db-1      private  private  10.20.0.7     52:54:00:00:03:01  up    0/0"),
        std::string::npos)
        << ctl({"instances"});
    // What each instance holds, of its limit: connections, and masquerade ports.
    const std::string instances_text = ctl({"instances"}).out;
    EXPECT_NE(instances_text.find("CONNECTIONS  NAT PORTS"), std::string::npos) << instances_text;
    EXPECT_NE(instances_text.find("/65536"), std::string::npos) << instances_text;
    EXPECT_NE(instances_text.find("0/4096"), std::string::npos) << instances_text;

    const Json routes = ctl_json({"routes"});
    bool app_route = false;
    for (const auto& r : routes["routes"])
        if (r["prefix"] == "10.10.0.5/32") app_route = r["next_hop"]["instance"] == "app-1";
    EXPECT_TRUE(app_route) << routes.dump(2);
    EXPECT_TRUE(
        has_line(ctl({"routes"}).out, fmt::format("0.0.0.0/0         -        {:<{}}  calyx", "no route: ICMP net unreachable",
                                                  std::string_view("no instance has the address: ICMP host unreachable").size())))
        << ctl({"routes"});

    // conntrack: the ping is one connection, replied; db-1 has none.
    const Json ct = ctl_json({"conntrack"});
    ASSERT_EQ(ct["total"], 1) << ct.dump(2);
    const Json& ping = ct["entries"][0];
    EXPECT_EQ(ping["protocol"], "icmp");
    EXPECT_EQ(ping["state"], "REPLIED");
    EXPECT_EQ(ping["icmp_id"], 7);
    EXPECT_EQ(ping["from"],
              (Json{{"instance", "web-1"}, {"network", "public"}, {"address", "203.0.113.10"}}));
    EXPECT_EQ(ping["to"],
              (Json{{"instance", "app-1"}, {"network", "nat"}, {"address", "10.10.0.5"}}));
    EXPECT_EQ(ctl_json({"conntrack", "--instance", "db-1"})["total"], 0);
    EXPECT_EQ(ctl_json({"conntrack", "--instance", "app-1", "--limit", "0"})["total"], 1);
    const CtlRun ct_text = ctl({"conntrack"});
    EXPECT_TRUE(ct_text.out.starts_with(
        "PROTO      STATE    FROM                TO               NAT  EXPIRES\n"
        "icmp id 7  REPLIED  web-1 203.0.113.10  app-1 10.10.0.5  -    "))
        << ct_text;
    EXPECT_TRUE(ct_text.out.ends_with("\n1 connection\n")) << ct_text;

    const Json nat = ctl_json({"nat"});
    EXPECT_TRUE(nat["uplink"].is_null());
    EXPECT_EQ(nat["nat_networks"], (Json::array({{{"name", "nat"}, {"cidr", "10.10.0.0/24"}}})));
    EXPECT_EQ(nat["connections"]["total"], 0);
    EXPECT_NE(ctl({"nat"}).out.find("nat networks  nat (10.10.0.0/24)\n"), std::string::npos)
        << ctl({"nat"});

    const Json leases = ctl_json({"leases"});
    ASSERT_EQ(leases["leases"].size(), 3u);
    EXPECT_EQ(leases["leases"][0]["instance"], "web-1");
    EXPECT_EQ(leases["leases"][0]["mtu"], kPublicMtu);
    EXPECT_EQ(leases["leases"][0]["dns"], Json::array({text(kPublicDns)}));
    EXPECT_TRUE(
        has_line(ctl({"leases"}).out,
                 "web-1     52:54:00:00:01:01  203.0.113.10/24  public   203.0.113.1  86400s  up"))
        << ctl({"leases"});

    // drops: db-1's refused ping, under its one reason.
    const Json drops = ctl_json({"drops"});
    EXPECT_EQ(drops["total"], 1);
    ASSERT_EQ(drops["drops"].size(), 1u);
    EXPECT_EQ(drops["drops"][0]["port"], "db-1");
    EXPECT_EQ(drops["drops"][0]["reason"], "sg_no_egress_rule");
    EXPECT_EQ(drops["drops"][0]["packets"], 1);
    const CtlRun drops_text = ctl({"drops"});
    EXPECT_TRUE(
        has_line(drops_text.out, fmt::format("db-1  sg_no_egress_rule        1  {}",
                                             drop_reason_info(DropReason::sg_no_egress_rule).text)))
        << drops_text;
    EXPECT_EQ(ctl_json({"drops", "--all"})["drops"].size(), 3 * kDropReasonCount);

    // explain: allowed exits 0, denied 1, both in the seed's words.
    const CtlRun ok =
        ctl({"explain", "--from", "web-1", "--to", "app-1", "--proto", "tcp", "--port", "80"});
    EXPECT_EQ(ok.exit_code, 0) << ok;
    EXPECT_TRUE(
        ok.out.starts_with("allowed: web-1 (203.0.113.10 in public, a public network) -> app-1 "
                           "(10.10.0.5 in nat, a nat network) tcp/80\n"))
        << ok;
    const CtlRun no = ctl({"explain", "--from", "db-1", "--to", "web-1", "--proto", "icmp"});
    EXPECT_EQ(no.exit_code, 1) << no;
    EXPECT_TRUE(
        has_line(no.out, "db-1 has no egress rule that allows icmp type 8 code 0 to 203.0.113.10"))
        << no;
    const Json no_json =
        ctl_json({"explain", "--from", "db-1", "--to", "web-1", "--proto", "icmp"}, 1);
    EXPECT_EQ(no_json["allowed"], false);
    EXPECT_EQ(no_json["reason"], "sg_no_egress_rule");
}

// --- explain follows the seed's frames, and the data plane agrees -------------------------

TEST_F(CalyxctlTest, ExplainFollowsTheSeedsFrames) {
    // Frame 1: no groups, nobody talks to anyone.
    ASSERT_NO_FATAL_FAILURE(start_with(SecurityPolicy::none()));
    const CtlRun f1 =
        ctl({"explain", "--from", "web-1", "--to", "app-1", "--proto", "tcp", "--port", "80"});
    EXPECT_EQ(f1.exit_code, 1) << f1;
    EXPECT_EQ(f1.out,
              "denied: web-1 (203.0.113.10 in public, a public network) -> app-1 (10.10.0.5 in "
              "nat, a nat network) tcp/80\n"
              "  web-1 has no egress rule that allows tcp/80 to 10.10.0.5\n" +
                  fmt::format("  dropped as sg_no_egress_rule: {}\n",
                              drop_reason_info(DropReason::sg_no_egress_rule).text))
        << f1;
    EXPECT_FALSE(syn_passes(kWeb, kApp, 40000, 80, false)) << "explain said denied";

    // Frame 4: web-1's egress rule (frame 2) and app-1's ingress rule for 80 from web-1.
    ASSERT_TRUE(reload_policy(frame4(), 2));
    const CtlRun f4 =
        ctl({"explain", "--from", "web-1", "--to", "10.10.0.5", "--proto", "tcp", "--port", "80"});
    EXPECT_EQ(f4.exit_code, 0) << f4;
    const int web_rule = line_of(read_file(config_), kEgressAny);
    const int app_rule = line_of(read_file(config_), kHttpFromWeb);
    EXPECT_TRUE(has_line(
        f4.out, fmt::format("web-1 may send it: egress any protocol to 0.0.0.0/0 (group web, "
                            "rule 1 at {}:{}:9)",
                            config_.string(), web_rule)))
        << f4;
    EXPECT_TRUE(has_line(
        f4.out, fmt::format("app-1 accepts it: ingress tcp/80 from 203.0.113.10/32 (group app, "
                            "rule 1 at {}:{}:9)",
                            config_.string(), app_rule)))
        << f4;
    EXPECT_TRUE(syn_passes(kWeb, kApp, 40001, 80)) << "explain said allowed";
    // Frame 3: anyone may reach web-1 on 443, app-1 included; but not on 22.
    EXPECT_EQ(
        ctl({"explain", "--from", "app-1", "--to", "web-1", "--proto", "tcp", "--port", "443"})
            .exit_code,
        1)
        << "app-1 has no egress rule yet";
    const CtlRun ssh =
        ctl({"explain", "--from", "web-1", "--to", "app-1", "--proto", "tcp", "--port", "22"});
    EXPECT_EQ(ssh.exit_code, 1) << ssh;
    EXPECT_TRUE(has_line(ssh.out, "app-1 has no ingress rule that allows tcp/22 from 203.0.113.10"))
        << ssh;
    EXPECT_FALSE(syn_passes(kWeb, kApp, 40002, 22, false)) << "explain said denied";

    // Frame 5 before app-1 has its egress rule: web-1 would accept, app-1 may not send.
    SecurityPolicy half = frame5();
    half.groups[1].rules = {kHttpFromWeb};
    ASSERT_TRUE(reload_policy(half, 3));
    const CtlRun f5a =
        ctl({"explain", "--from", "app-1", "--to", "web-1", "--proto", "tcp", "--port", "3333"});
    EXPECT_EQ(f5a.exit_code, 1) << f5a;
    EXPECT_TRUE(has_line(f5a.out, "app-1 has no egress rule that allows tcp/3333 to 203.0.113.10"))
        << f5a;
    EXPECT_FALSE(syn_passes(kApp, kWeb, 50000, 3333, false)) << "explain said denied";
    const auto c = wait_for_drops(kApp.name, "sg_no_egress_rule", 1);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->drops(kApp.name, "sg_no_egress_rule"), 1u);
    Json app_drops = Json::array();
    const Json drops = ctl_json({"drops"});
    for (const auto& d : drops["drops"])
        if (d["port"] == kApp.name) app_drops.push_back(d["reason"]);
    EXPECT_EQ(app_drops, Json::array({"sg_no_egress_rule"}));

    // Frame 5 complete.
    ASSERT_TRUE(reload_policy(frame5(), 4));
    const Json f5 = ctl_json(
        {"explain", "--from", "app-1", "--to", "web-1", "--proto", "tcp", "--port", "3333"});
    EXPECT_EQ(f5["allowed"], true) << f5.dump(2);
    EXPECT_EQ(f5["egress_rule"]["group"], "app");
    EXPECT_EQ(f5["egress_rule"]["rule"], 2);
    EXPECT_EQ(f5["ingress_rule"]["group"], "web");
    EXPECT_EQ(f5["ingress_rule"]["rule"], 3);
    EXPECT_TRUE(syn_passes(kApp, kWeb, 50001, 3333));

    // db-1, private and in no group, reaches no one, inside or out.
    const CtlRun db =
        ctl({"explain", "--from", "db-1", "--to", "app-1", "--proto", "tcp", "--port", "4545"});
    EXPECT_EQ(db.exit_code, 1) << db;
    EXPECT_TRUE(has_line(db.out, "db-1 has no egress rule that allows tcp/4545 to 10.10.0.5"))
        << db;
    const CtlRun out =
        ctl({"explain", "--from", "db-1", "--to", "192.0.2.80", "--proto", "tcp", "--port", "443"});
    EXPECT_EQ(out.exit_code, 1) << out;
    EXPECT_TRUE(
        out.out.starts_with("denied: db-1 (10.20.0.7 in private, a private network) -> 192.0.2.80 "
                            "(outside) tcp/443\n"))
        << out;
    // Nothing from outside opens a connection where no rule allows it.
    const CtlRun in =
        ctl({"explain", "--from", "192.0.2.80", "--to", "web-1", "--proto", "tcp", "--port", "22"});
    EXPECT_EQ(in.exit_code, 1) << in;
}

// --- reload -------------------------------------------------------------------------------

TEST_F(CalyxctlTest, ReloadReportsEveryErrorAndKeepsTheRunningConfig) {
    ASSERT_NO_FATAL_FAILURE(start_with(SecurityPolicy::open_to_all()));
    const std::string good = config_text({.security = SecurityPolicy::open_to_all()});

    // Two errors in one file: both come back, each with its file:line:col.
    std::string bad = good;
    const std::string cidr = "    cidr: 10.10.0.0/24\n", gw = "    gateway: 10.20.0.1\n";
    ASSERT_NE(bad.find(cidr), std::string::npos);
    ASSERT_NE(bad.find(gw), std::string::npos);
    bad.replace(bad.find(cidr), cidr.size(), "    cidr: 10.10.0.0/33\n");
    bad.replace(bad.find(gw), gw.size(), gw + "    colour: blue\n");
    rewrite_config(bad);
    const CtlRun rejected = ctl({"reload"});
    EXPECT_EQ(rejected.exit_code, 1) << rejected;
    EXPECT_TRUE(rejected.out.empty()) << rejected;
    EXPECT_NE(rejected.err.find(fmt::format(
                  "calyxctl: reload rejected, running configuration kept: {} has 2 error(s)\n",
                  config_.string())),
              std::string::npos)
        << rejected;
    const auto errors = located_errors(rejected.err);
    ASSERT_EQ(errors.size(), 2u) << rejected;
    std::set<int> lines;
    for (const auto& e : errors) {
        EXPECT_EQ(e.file, config_.string());
        EXPECT_GT(e.column, 0);
        lines.insert(e.line);
        // calyx logged the same error.
        EXPECT_NE(
            calyx_->log().find(fmt::format("{}:{}:{}: {}", e.file, e.line, e.column, e.message)),
            std::string::npos);
    }
    EXPECT_EQ(lines, (std::set<int>{line_of(bad, "10.10.0.0/33"), line_of(bad, "colour: blue")}));
    const Json rejected_json = [&] {
        const CtlRun r = ctl({"--json", "reload"});
        EXPECT_EQ(r.exit_code, 1) << r;
        return Json::parse(r.out, nullptr, false);
    }();
    EXPECT_EQ(rejected_json["ok"], false);
    EXPECT_EQ(rejected_json["errors"].size(), 2u) << rejected_json.dump(2);

    // What needs a restart is refused as a whole.
    std::string moved = good;
    const std::string listen = fmt::format("listen: 127.0.0.1:{}", identity_.metrics_port);
    ASSERT_NE(moved.find(listen), std::string::npos);
    moved.replace(moved.find(listen), listen.size(),
                  fmt::format("listen: 127.0.0.1:{}", identity_.metrics_port + 1));
    rewrite_config(moved);
    const CtlRun restart = ctl({"reload"});
    EXPECT_EQ(restart.exit_code, 1) << restart;
    EXPECT_NE(
        restart.err.find("metrics.listen cannot change while calyx runs: restart calyx to apply"),
        std::string::npos)
        << restart;

    Json status = ctl_json({"status"});
    EXPECT_EQ(status["generation"], 1);
    EXPECT_EQ(status["reloads"], (Json{{"ok", 0}, {"failed", 3}}));
    ASSERT_NO_FATAL_FAILURE(expect_ping_between(kWeb, kApp, 21, 1))
        << "the running config still works";

    rewrite_config(good);
    const CtlRun accepted = ctl({"reload"});
    EXPECT_EQ(accepted.exit_code, 0) << accepted;
    EXPECT_EQ(accepted.out, "reloaded: generation 2\n");
    // SIGHUP runs the same code: the next generation, counted with the others.
    const ReloadOutcome hup = reload({.security = SecurityPolicy::open_to_all()});
    EXPECT_TRUE(hup.accepted) << hup.output;
    EXPECT_EQ(hup.generation, 3u);
    status = ctl_json({"status"});
    EXPECT_EQ(status["generation"], 3);
    EXPECT_EQ(status["reloads"], (Json{{"ok", 2}, {"failed", 3}}));
}

// --- the socket and the user's errors -----------------------------------------------------

TEST_F(CalyxctlTest, SocketIsForRootOnlyAndErrorsAreClear) {
    ASSERT_NO_FATAL_FAILURE(start_with(SecurityPolicy::open_to_all()));
    struct stat st {};
    ASSERT_EQ(::stat(control_socket().c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_EQ(st.st_uid, ::geteuid());

    const CtlRun help = ctl({"--help"});
    EXPECT_EQ(help.exit_code, 0) << help;
    for (const char* c : {"status", "reload", "ports", "instances", "routes", "conntrack", "nat",
                          "leases", "drops", "explain"})
        EXPECT_NE(help.out.find(fmt::format("\n  {} ", c)), std::string::npos) << c << help;
    const CtlRun explain_help = ctl({"explain", "--help"});
    EXPECT_EQ(explain_help.exit_code, 0) << explain_help;
    EXPECT_NE(explain_help.out.find("--proto"), std::string::npos) << explain_help;

    const CtlRun none = ctl({"--socket", (dir_ / "nobody-here.sock").string(), "status"});
    EXPECT_EQ(none.exit_code, 3) << none;
    EXPECT_EQ(none.err,
              fmt::format("calyxctl: no control socket at {}: calyx is not running, or its "
                          "control.socket is elsewhere (use --socket PATH)\n",
                          (dir_ / "nobody-here.sock").string()));

    const CtlRun unknown = ctl({"reboot"});
    EXPECT_EQ(unknown.exit_code, 2) << unknown;
    EXPECT_TRUE(
        unknown.err.starts_with("calyxctl: unknown command 'reboot' (commands: status, reload,"))
        << unknown;
    const CtlRun bad_option = ctl({"conntrack", "--colour", "red"});
    EXPECT_EQ(bad_option.exit_code, 2) << bad_option;
    const CtlRun nobody = ctl({"conntrack", "--instance", "nobody"});
    EXPECT_EQ(nobody.exit_code, 2) << nobody;
    EXPECT_EQ(nobody.err, "calyxctl: no instance 'nobody' (instances: web-1, app-1, db-1)\n");
    const CtlRun no_port =
        ctl({"--json", "explain", "--from", "web-1", "--to", "app-1", "--proto", "udp"});
    EXPECT_EQ(no_port.exit_code, 2) << no_port;
    EXPECT_EQ(
        Json::parse(no_port.out, nullptr, false),
        (Json{{"ok", false}, {"error", "--proto udp needs --port (1-65535)"}, {"usage", true}}));

    // Another user gets a clear "permission denied": the directory is opened up for this
    // check, so only the socket's own mode stands in the way.
    ASSERT_EQ(::access("/usr/bin/setpriv", X_OK), 0)
        << "setpriv (util-linux, installed by scripts/setup.sh) is needed to run calyxctl as another user";
    fs::permissions(dir_.path(), fs::perms::others_read | fs::perms::others_exec,
                    fs::perm_options::add);
    const fs::path ctl_copy = dir_ / "calyxctl";
    fs::copy_file(calyxctl_binary(), ctl_copy);
    fs::permissions(ctl_copy, fs::perms::others_read | fs::perms::others_exec,
                    fs::perm_options::add);
    CtlRun denied;
    {
        std::vector<std::string> argv = {
            "/usr/bin/setpriv", "--reuid=65534", "--regid=65534",           "--clear-groups",
            ctl_copy.string(),  "--socket",      control_socket().string(), "status"};
        const fs::path out = dir_ / "denied.out", err = dir_ / "denied.err";
        auto child = ChildProcess::spawn(argv, out, err);
        ASSERT_TRUE(child) << child.error();
        const auto rc = (*child)->wait(30s);
        ASSERT_TRUE(rc && WIFEXITED(*rc));
        denied.exit_code = WEXITSTATUS(*rc);
        denied.err = read_file(err);
    }
    EXPECT_EQ(denied.exit_code, 3) << denied;
    EXPECT_EQ(denied.err,
              fmt::format("calyxctl: permission denied on {}: the control socket is only for "
                          "the user calyx runs as (root); run calyxctl as that user\n",
                          control_socket().string()))
        << denied;
}

}  // namespace
}  // namespace calyx::test

int main(int argc, char** argv) {
    std::cerr << "[calyx-it] calyxctl binary: " << calyx::test::calyxctl_binary() << "\n";
    return calyx::test::run_integration_tests(argc, argv);
}
