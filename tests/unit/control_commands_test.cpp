// calyxctl's commands on a snapshot built from a parsed configuration (the seed's three
// instances: public web-1, nat app-1, private db-1), and the control socket itself.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <tuple>

#include <fmt/format.h>

#include "cp/control_commands.hpp"
#include "cp/control_server.hpp"
#include "gateway_fixture.hpp"

namespace calyx::test {
namespace {

using cp::Json;
using namespace std::chrono_literals;

constexpr uint8_t kSyn = TcpHdr::kSyn, kAck = TcpHdr::kAck;

// The site with `groups` (YAML list items, indented by two) as its security groups. The first
// group starts on line 4, so its first rule is at line 6, column 9.
std::string site(const std::string& groups, const std::string& web, const std::string& app,
                 const std::string& db, const std::string& extra = "") {
    return fmt::format(R"(dataplane:
  conntrack: {{capacity: 4096}}
security_groups:
{}
networks:
  - {{name: public, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1, lease_seconds: 3600}}
  - {{name: nat, kind: nat, cidr: 10.10.0.0/24, gateway: 10.10.0.1, mtu: 1400}}
  - {{name: private, kind: private, cidr: 10.20.0.0/24, gateway: 10.20.0.1}}
instances:
  - {{name: web-1, network: public, mac: "52:54:00:00:01:01", ipv4: 203.0.113.10, security_groups: [{}],
     port: {{type: vhost-user, socket: /tmp/calyx-unit/web-1.sock}}}}
  - {{name: app-1, network: nat, mac: "52:54:00:00:02:01", ipv4: 10.10.0.5, security_groups: [{}],
     port: {{type: vhost-user, socket: /tmp/calyx-unit/app-1.sock, mode: client}}}}
  - {{name: db-1, network: private, mac: "52:54:00:00:03:01", ipv4: 10.20.0.7, security_groups: [{}],
     port: {{type: vhost-user, socket: /tmp/calyx-unit/db-1.sock}}}}
{})",
                       groups.empty() ? "  []" : groups, web, app, db, extra);
}

// Frame 4 of the seed: web-1 may go anywhere and takes 443 from anywhere; app-1 takes 80 from
// web-1. db-1 is in no group. Rules at lines 6, 7 and 10 of the site.
const std::string kFrame4 = R"(  - name: web
    rules:
      - {direction: egress, protocol: any, remote: 0.0.0.0/0}
      - {direction: ingress, protocol: tcp, ports: 443, remote: 0.0.0.0/0}
  - name: app
    rules:
      - {direction: ingress, protocol: tcp, ports: 80, remote: 203.0.113.10/32})";

// Frame 5 without app-1's egress half: web-1 also takes 3333 from app-1.
const std::string kFrame5IngressOnly = R"(  - name: web
    rules:
      - {direction: egress, protocol: any, remote: 0.0.0.0/0}
      - {direction: ingress, protocol: tcp, ports: 443, remote: 0.0.0.0/0}
      - {direction: ingress, protocol: tcp, ports: 3333, remote: 10.10.0.5/32}
  - name: app
    rules:
      - {direction: ingress, protocol: tcp, ports: 80, remote: 203.0.113.10/32})";

// Frame 6: app-1 takes 4545 from the members of group db (line 11); db-1 may go anywhere;
// app-1 may reach the Internet on 443 (frame 7, line 12).
const std::string kFrame6 = R"(  - name: web
    rules:
      - {direction: egress, protocol: any, remote: 0.0.0.0/0}
      - {direction: ingress, protocol: tcp, ports: 443, remote: 0.0.0.0/0}
  - name: app
    rules:
      - {direction: ingress, protocol: tcp, ports: 80, remote: 203.0.113.10/32}
      - {direction: ingress, protocol: tcp, ports: 4545, remote_group: db}
      - {direction: egress, protocol: tcp, ports: 443, remote: 0.0.0.0/0}
  - name: db
    rules:
      - {direction: egress, protocol: any, remote: 0.0.0.0/0})";

const std::string kUplink = R"(uplink:
  port: {type: tap, name: calyx-unit}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
  nat_ports: "30000-30999"
)";

// The last line of every denial: the drop reason `calyxctl drops` counts it under.
std::string dropped(DropReason r) {
    return fmt::format("dropped as {}: {}", drop_reason_info(r).name, drop_reason_info(r).text);
}

std::vector<std::string> lines(const Json& result) {
    return result.at("explanation").get<std::vector<std::string>>();
}

// Stands in for cp::Router in make_command_table: the same inspect() and sample().
struct FakeRouter {
    const config::Config* cfg;
    const dp::Snapshot* snap;
    const dp::ConnTable* table;
    cp::RouterSample s;

    template <typename F>
    auto inspect(F&& f) const {
        return f(*cfg, *snap, *table);
    }
    cp::RouterSample sample() const { return s; }
};

class ControlCommands : public GatewayTest {
  protected:
    void SetUp() override { load(site(kFrame4, "web", "app", "")); }

    cp::ExplainQuery query(std::string from, std::string to, std::string proto, uint32_t port = 0) {
        Json args{{"from", from}, {"to", to}, {"proto", proto}};
        if (port) args["port"] = port;
        auto q = cp::explain_query(args);
        EXPECT_TRUE(q.has_value()) << q.error().message;
        return q.value_or(cp::ExplainQuery{});
    }
    Json explain(std::string from, std::string to, std::string proto, uint32_t port = 0) {
        auto r = cp::explain_result(config_, *snap_, query(from, to, proto, port));
        EXPECT_TRUE(r.has_value()) << r.error().message;
        return r.value_or(Json());
    }
    std::string explain_error(std::string from, std::string to, std::string proto,
                              uint32_t port = 0) {
        auto r = cp::explain_result(config_, *snap_, query(from, to, proto, port));
        if (r) return "(no error)";
        EXPECT_TRUE(r.error().usage);
        return r.error().message;
    }

    dp::PacketMeta tcp(const MacAddr& mac, Ipv4Addr src, Ipv4Addr dst, uint16_t port,
                       uint16_t sport, uint16_t dport, uint8_t flags, uint32_t seq, uint32_t ack) {
        TestFrame f(FrameBuilder()
                        .eth(mac, kGatewayMac)
                        .ipv4(src, dst, ipproto::kTcp)
                        .tcp(sport, dport, flags, seq, ack)
                        .build());
        return run(f, port);
    }

    cp::RouterSample sample() const {
        cp::RouterSample s;
        s.ports.push_back({"web-1", true, {}});
        s.ports.push_back({"app-1", false, {}});
        s.ports.push_back({"db-1", true, {}});
        s.ports[0].counters.rx_packets = 7;
        s.ports[0].counters.rx_bytes = 700;
        s.ports[0].counters.drops[static_cast<size_t>(DropReason::sg_no_egress_rule)] = 3;
        s.ports[2].counters.drops[static_cast<size_t>(DropReason::ttl_exceeded)] = 1;
        s.config_generation = generation_;
        s.reloads_ok = 2;
        s.reloads_failed = 1;
        s.conntrack_capacity = 4096;
        s.dhcp_replies = {1, 2, 0};
        s.lcores.push_back({1, 25, 100});
        return s;
    }
};

// --- explain: the seed's frames -----------------------------------------------------------

TEST_F(ControlCommands, ExplainFrame1NothingPassesWithoutGroups) {
    load(site("", "", "", ""));
    const Json r = explain("web-1", "app-1", "tcp", 80);
    EXPECT_FALSE(r["allowed"].get<bool>());
    EXPECT_EQ(r["reason"], "sg_no_egress_rule");
    EXPECT_TRUE(r["egress_rule"].is_null());
    EXPECT_EQ(lines(r), (std::vector<std::string>{
                            "denied: web-1 (203.0.113.10 in public, a public network) -> app-1 "
                            "(10.10.0.5 in nat, a nat network) tcp/80",
                            "web-1 has no egress rule that allows tcp/80 to 10.10.0.5",
                            dropped(DropReason::sg_no_egress_rule)}));
}

TEST_F(ControlCommands, ExplainFrame4NamesTheEgressAndTheIngressRule) {
    const Json r = explain("web-1", "app-1", "tcp", 80);
    EXPECT_TRUE(r["allowed"].get<bool>());
    EXPECT_TRUE(r["reason"].is_null());
    EXPECT_EQ(r["egress_rule"]["group"], "web");
    EXPECT_EQ(r["egress_rule"]["rule"], 1);
    EXPECT_EQ(r["ingress_rule"]["group"], "app");
    EXPECT_EQ(r["ingress_rule"]["rule"], 1);
    EXPECT_EQ(lines(r),
              (std::vector<std::string>{
                  "allowed: web-1 (203.0.113.10 in public, a public network) -> app-1 (10.10.0.5 "
                  "in nat, a nat network) tcp/80",
                  "web-1 may send it: egress any protocol to 0.0.0.0/0 (group web, rule 1 at "
                  "site.yaml:6:9)",
                  "app-1 accepts it: ingress tcp/80 from 203.0.113.10/32 (group app, rule 1 at "
                  "site.yaml:10:9)",
                  "replies pass by connection tracking, without rules"}));
}

TEST_F(ControlCommands, ExplainFrame4OtherPortNamesTheMissingIngressRule) {
    const Json r = explain("web-1", "app-1", "tcp", 81);
    EXPECT_FALSE(r["allowed"].get<bool>());
    EXPECT_EQ(r["reason"], "sg_no_ingress_rule");
    EXPECT_EQ(r["egress_rule"]["rule"], 1);
    EXPECT_TRUE(r["ingress_rule"].is_null());
    const auto l = lines(r);
    ASSERT_EQ(l.size(), 4u);
    EXPECT_EQ(l[1],
              "web-1 may send it: egress any protocol to 0.0.0.0/0 (group web, rule 1 at "
              "site.yaml:6:9)");
    EXPECT_EQ(l[2], "app-1 has no ingress rule that allows tcp/81 from 203.0.113.10");
    EXPECT_EQ(l[3], dropped(DropReason::sg_no_ingress_rule));
    // And the other way round app-1 has no egress rule at all.
    const Json back = explain("app-1", "web-1", "tcp", 443);
    EXPECT_EQ(lines(back).at(1), "app-1 has no egress rule that allows tcp/443 to 203.0.113.10");
}

TEST_F(ControlCommands, ExplainFrame5NeedsTheEgressRuleOfTheDefaultInstanceToo) {
    load(site(kFrame5IngressOnly, "web", "app", ""));
    const Json r = explain("app-1", "web-1", "tcp", 3333);
    EXPECT_FALSE(r["allowed"].get<bool>());
    EXPECT_EQ(lines(r).at(1), "app-1 has no egress rule that allows tcp/3333 to 203.0.113.10");
    // The same question by address gives the same answer.
    EXPECT_EQ(lines(explain("10.10.0.5", "203.0.113.10", "tcp", 3333)), lines(r));
}

TEST_F(ControlCommands, ExplainFrame6FollowsRemoteGroupMembership) {
    load(site(kFrame6, "web", "app", "db"));
    const Json r = explain("db-1", "app-1", "tcp", 4545);
    EXPECT_TRUE(r["allowed"].get<bool>());
    EXPECT_EQ(lines(r).at(2),
              "app-1 accepts it: ingress tcp/4545 from members of group db (group app, rule 2 at "
              "site.yaml:11:9)");
    // Port 80 of app-1 is for web-1 only.
    EXPECT_FALSE(explain("db-1", "app-1", "tcp", 80)["allowed"].get<bool>());
}

TEST_F(ControlCommands, ExplainIcmpDefaultsToEchoRequest) {
    const Json r = explain("app-1", "web-1", "icmp");
    EXPECT_EQ(r["icmp_type"], 8);
    EXPECT_EQ(r["icmp_code"], 0);
    EXPECT_EQ(lines(r).at(1),
              "app-1 has no egress rule that allows icmp type 8 code 0 to 203.0.113.10");
}

TEST_F(ControlCommands, ExplainWithoutUplinkSaysNothingLeavesOrEnters) {
    const Json out = explain("web-1", "192.0.2.7", "tcp", 443);
    EXPECT_FALSE(out["allowed"].get<bool>());
    EXPECT_EQ(out["reason"], "no_route");
    EXPECT_TRUE(out["to"]["instance"].is_null());
    EXPECT_EQ(lines(out).at(1),
              "calyx has no route to 192.0.2.7: it has no uplink, so its instances reach only "
              "each other");
    const Json in = explain("192.0.2.7", "web-1", "tcp", 443);
    EXPECT_FALSE(in["allowed"].get<bool>());
    EXPECT_EQ(in["reason"], "no_uplink");
    EXPECT_EQ(lines(in).at(0),
              "denied: 192.0.2.7 (outside) -> web-1 (203.0.113.10 in public, a public network) "
              "tcp/443");
}

TEST_F(ControlCommands, ExplainSameInstanceIsAHairpin) {
    const Json r = explain("web-1", "203.0.113.10", "tcp", 443);
    EXPECT_FALSE(r["allowed"].get<bool>());
    EXPECT_EQ(r["reason"], "hairpin");
}

TEST_F(ControlCommands, ExplainRefusesWhatIsNoEndpointOfAConnection) {
    EXPECT_EQ(
        explain_error("web-9", "app-1", "tcp", 80),
        "--from web-9: neither an instance nor an IPv4 address (instances: web-1, app-1, db-1)");
    EXPECT_EQ(explain_error("web-1", "10.10.0.99", "tcp", 80),
              "--to 10.10.0.99: in network nat (10.10.0.0/24), but no instance has it");
    EXPECT_EQ(explain_error("web-1", "10.10.0.1", "tcp", 80),
              "--to 10.10.0.1: an address of network nat that calyx keeps for itself (gateway, "
              "network or broadcast address)");
    EXPECT_EQ(explain_error("web-1", "224.0.0.1", "udp", 5353),
              "--to 224.0.0.1: not a unicast address");
    EXPECT_EQ(explain_error("192.0.2.1", "192.0.2.2", "tcp", 80),
              "neither 192.0.2.1 nor 192.0.2.2 is an instance of this calyx: explain covers "
              "connections from or to its instances");
}

TEST(ControlArgs, ExplainQueryChecksEveryArgument) {
    const auto err = [](const Json& args) {
        auto q = cp::explain_query(args);
        if (q) return std::string("(accepted)");
        EXPECT_TRUE(q.error().usage);
        return q.error().message;
    };
    const Json base{{"from", "web-1"}, {"to", "app-1"}};
    EXPECT_EQ(err(base), "--proto is needed: tcp, udp or icmp");
    EXPECT_EQ(err(Json{{"to", "app-1"}, {"proto", "tcp"}, {"port", 80}}),
              "--from is needed: an instance or an address");
    Json a = base;
    a["proto"] = "tcp";
    EXPECT_EQ(err(a), "--proto tcp needs --port (1-65535)");
    a["port"] = 70000;
    EXPECT_EQ(err(a), "'port' must be a whole number from 0 to 65535");
    a["port"] = "80";
    EXPECT_EQ(err(a), "'port' must be a whole number from 0 to 65535");
    a["port"] = -1;
    EXPECT_EQ(err(a), "'port' must be a whole number from 0 to 65535");
    a["port"] = 80;
    a["type"] = 3;
    EXPECT_EQ(err(a), "--type and --code are for icmp");
    a.erase("type");
    a["colour"] = "red";
    EXPECT_EQ(err(a), "unexpected argument 'colour' (expected: from, to, proto, port, type, code)");
    Json i = base;
    i["proto"] = "icmp";
    i["port"] = 1;
    EXPECT_EQ(err(i), "--port is for tcp and udp; icmp takes --type and --code");
    i.erase("port");
    i["code"] = 1;
    EXPECT_EQ(err(i), "--code needs --type");
    i["type"] = 3;
    auto q = cp::explain_query(i);
    ASSERT_TRUE(q.has_value());
    EXPECT_EQ(q->icmp_type, 3);
    EXPECT_EQ(q->icmp_code, 1);
    i["proto"] = "sctp";
    EXPECT_EQ(err(i), "--proto sctp: expected tcp, udp or icmp");
}

// --- explain with an uplink ---------------------------------------------------------------

class ControlCommandsUplink : public ControlCommands {
  protected:
    void SetUp() override { load(site(kFrame6, "web", "app", "db", kUplink)); }
};

TEST_F(ControlCommandsUplink, NatInstanceIsMasqueradedToTheUplinkAddress) {
    const Json r = explain("app-1", "192.0.2.7", "tcp", 443);
    ASSERT_TRUE(r["allowed"].get<bool>()) << r.dump(2);
    EXPECT_EQ(r["masquerade"]["address"], "198.51.100.10");
    EXPECT_EQ(r["masquerade"]["ports"], "30000-30999");
    const auto l = lines(r);
    EXPECT_EQ(l.at(1), "192.0.2.7 is outside the site: only app-1's rules apply");
    EXPECT_EQ(
        l.at(2),
        "app-1 may send it: egress tcp/443 to 0.0.0.0/0 (group app, rule 3 at site.yaml:12:9)");
    ASSERT_EQ(l.size(), 5u);
    EXPECT_EQ(l.at(3),
              "app-1's source 10.10.0.5 is masqueraded to the uplink address 198.51.100.10, with a "
              "port of 30000-30999");
    EXPECT_EQ(l.at(4), "replies pass by connection tracking, without rules");
    // The public instance keeps its own address.
    const Json web = explain("web-1", "192.0.2.7", "tcp", 443);
    EXPECT_TRUE(web["allowed"].get<bool>());
    EXPECT_TRUE(web["masquerade"].is_null());
}

TEST_F(ControlCommandsUplink, NetworkKindsRefuseWhatTheRulesWouldAllow) {
    // db-1 may send anything anywhere, but a private network has no Internet; nothing from
    // outside opens a connection to a nat instance. Whatever reason the data plane gives is
    // what explain prints.
    for (const auto& [from, to, port] :
         {std::tuple{"db-1", "192.0.2.7", 443}, std::tuple{"192.0.2.7", "app-1", 80}}) {
        SCOPED_TRACE(fmt::format("{} -> {}", from, to));
        const Json r = explain(from, to, "tcp", port);
        EXPECT_FALSE(r["allowed"].get<bool>());
        ASSERT_TRUE(r["reason"].is_string());
        const std::string reason = r["reason"].get<std::string>();
        EXPECT_NE(reason, "sg_no_egress_rule");
        EXPECT_NE(reason, "sg_no_ingress_rule");
        EXPECT_TRUE(lines(r).back().starts_with("dropped as " + reason + ": ")) << lines(r).back();
    }
    EXPECT_EQ(explain_error("web-1", "198.51.100.10", "tcp", 80),
              "--to 198.51.100.10: the uplink address is calyx's own; give the instance or "
              "outside address a connection runs between");
}

TEST_F(ControlCommandsUplink, StatusAndNatShowTheUplink) {
    const Json s = cp::status_result(config_, *snap_, sample(), {"9.9", 42, {}}, {});
    EXPECT_EQ(s["uplink"]["address"], "198.51.100.10");
    EXPECT_EQ(s["uplink"]["subnet"], "198.51.100.0/24");
    EXPECT_EQ(s["uplink"]["gateway"], "198.51.100.1");
    EXPECT_EQ(s["nat"]["range"], "30000-30999");
    EXPECT_EQ(s["nat"]["in_use"]["tcp"], 0);
    ASSERT_NE(snap_->nat, nullptr);
    ASSERT_TRUE(
        snap_->nat->allocate(ipproto::kTcp, Ipv4Addr::from_octets(192, 0, 2, 7), 443, 30005, 1));
    const Json n = cp::nat_result(*snap_, *conntrack_, 1000, ctx_.now_ns);
    EXPECT_EQ(n["ports"]["in_use"]["tcp"], 1);
    EXPECT_EQ(n["nat_networks"][0]["name"], "nat");
    EXPECT_EQ(n["connections"]["total"], 0);
    cp::RouterSample with_uplink = sample();
    with_uplink.ports.push_back({"uplink", true, {}});
    const Json ports = cp::ports_result(config_, with_uplink);
    EXPECT_EQ(ports["ports"][3]["type"], "uplink");
    EXPECT_EQ(ports["ports"][3]["device"], "tap calyx-unit");
    EXPECT_TRUE(ports["ports"][3]["socket"].is_null());
    EXPECT_EQ(ports["ports"][0]["type"], "vhost-user");
    const Json routes = cp::routes_result(*snap_);
    EXPECT_EQ(routes["routes"].back()["prefix"], "0.0.0.0/0");
    EXPECT_EQ(routes["routes"].back()["next_hop"]["kind"], "uplink");
    EXPECT_EQ(routes["routes"].back()["next_hop"]["text"], "uplink via 198.51.100.1");
}

// --- conntrack ----------------------------------------------------------------------------

TEST_F(ControlCommands, ConntrackListsEachConnectionOnceWithItsState) {
    const Ipv4Addr web = kWebIp, app = kAppIp;
    ASSERT_EQ(tcp(kWebMac, web, app, kWebPort, 40000, 80, kSyn, 1000, 0).verdict,
              dp::Verdict::forward);
    ASSERT_EQ(tcp(kAppMac, app, web, kAppPort, 80, 40000, kSyn | kAck, 5000, 1001).verdict,
              dp::Verdict::forward);
    ASSERT_EQ(tcp(kWebMac, web, app, kWebPort, 40000, 80, kAck, 1001, 5001).verdict,
              dp::Verdict::forward);
    ASSERT_EQ(tcp(kWebMac, web, app, kWebPort, 40001, 80, kSyn, 9000, 0).verdict,
              dp::Verdict::forward);

    const auto all = cp::conntrack_result(*snap_, *conntrack_, {}, ctx_.now_ns);
    ASSERT_TRUE(all.has_value());
    EXPECT_EQ((*all)["total"], 2);
    EXPECT_EQ((*all)["shown"], 2);
    EXPECT_FALSE((*all)["truncated"].get<bool>());
    std::map<uint16_t, Json> by_port;
    for (const auto& e : (*all)["entries"]) by_port[e["from"]["port"].get<uint16_t>()] = e;
    ASSERT_EQ(by_port.size(), 2u);
    const Json& est = by_port[40000];
    EXPECT_EQ(est["protocol"], "tcp");
    EXPECT_EQ(est["state"], "ESTABLISHED");
    EXPECT_TRUE(est["replied"].get<bool>());
    EXPECT_EQ(est["from"], (Json{{"instance", "web-1"},
                                 {"network", "public"},
                                 {"address", "203.0.113.10"},
                                 {"port", 40000}}));
    EXPECT_EQ(
        est["to"],
        (Json{{"instance", "app-1"}, {"network", "nat"}, {"address", "10.10.0.5"}, {"port", 80}}));
    EXPECT_TRUE(est["nat"].is_null());
    EXPECT_EQ(est["expires_in_s"], config_.dataplane.conntrack.tcp_established);
    EXPECT_EQ(by_port[40001]["state"], "SYN_SENT");
    EXPECT_FALSE(by_port[40001]["replied"].get<bool>());

    cp::ConntrackQuery q;
    q.instance = "db-1";
    EXPECT_EQ((*cp::conntrack_result(*snap_, *conntrack_, q, ctx_.now_ns))["total"], 0);
    q.instance = "app-1";
    q.limit = 1;
    const auto one = cp::conntrack_result(*snap_, *conntrack_, q, ctx_.now_ns);
    EXPECT_EQ((*one)["total"], 2);
    EXPECT_EQ((*one)["shown"], 1);
    EXPECT_TRUE((*one)["truncated"].get<bool>());
    // Expired connections are gone for the data plane, and so for the listing.
    const uint64_t later =
        ctx_.now_ns + uint64_t{config_.dataplane.conntrack.tcp_syn_sent + 1} * 1'000'000'000;
    EXPECT_EQ((*cp::conntrack_result(*snap_, *conntrack_, {}, later))["total"], 1);
    q.instance = "nobody";
    const auto bad = cp::conntrack_result(*snap_, *conntrack_, q, ctx_.now_ns);
    ASSERT_FALSE(bad.has_value());
    EXPECT_EQ(bad.error().message, "no instance 'nobody' (instances: web-1, app-1, db-1)");
}

TEST_F(ControlCommands, ConntrackShowsAMasqueradedConnectionWithItsExternalEndpoint) {
    // A masqueraded connection as the policy stage stores it (dp/nat.hpp): the inside key with
    // the state and the external endpoint.
    const uint16_t nat_zone = snap_->networks[1].zone;
    const Ipv4Addr remote = Ipv4Addr::from_octets(192, 0, 2, 7),
                   external = Ipv4Addr::from_octets(198, 51, 100, 10);
    const dp::CtPacketKey primary =
        dp::make_ct_key(ipproto::kTcp, {nat_zone, kAppIp, 41000}, {0, remote, 443});
    const int32_t p = conntrack_->insert(primary.key);
    ASSERT_GE(p, 0);
    dp::CtEntry& pe = conntrack_->entry(p);
    conntrack_->record_key(pe, p, primary.key);
    pe.state = dp::ConnState{};
    pe.state.proto = ipproto::kTcp;
    pe.state.tcp_state = dp::TcpCtState::syn_sent;
    pe.state.expires_s = static_cast<uint32_t>(ctx_.now_ns / 1'000'000'000) + 120;
    pe.orig_side = primary.src_side;
    dp::store_nat_binding(pe, {external, 30007, dp::NatRole::primary});

    const auto r = cp::conntrack_result(*snap_, *conntrack_, {}, ctx_.now_ns);
    ASSERT_TRUE(r.has_value());
    ASSERT_EQ((*r)["total"], 1) << r->dump(2);
    const Json& e = (*r)["entries"][0];
    EXPECT_EQ(e["from"]["instance"], "app-1");
    EXPECT_EQ(
        e["to"],
        (Json{
            {"instance", nullptr}, {"network", nullptr}, {"address", "192.0.2.7"}, {"port", 443}}));
    EXPECT_EQ(e["nat"], (Json{{"address", "198.51.100.10"}, {"port", 30007}}));
    EXPECT_EQ(e["expires_in_s"], 120);
    const Json n = cp::nat_result(*snap_, *conntrack_, 1000, ctx_.now_ns);
    EXPECT_EQ(n["connections"]["total"], 1);
    EXPECT_TRUE(n["uplink"].is_null());
}

// --- the other listings -------------------------------------------------------------------

TEST_F(ControlCommands, DropsListsNonZeroReasonsUnlessAll) {
    const Json some = cp::drops_result(sample(), false);
    EXPECT_EQ(some["total"], 4);
    ASSERT_EQ(some["drops"].size(), 2u);
    EXPECT_EQ(some["drops"][0],
              (Json{{"port", "web-1"},
                    {"reason", "sg_no_egress_rule"},
                    {"packets", 3},
                    {"text", std::string(drop_reason_info(DropReason::sg_no_egress_rule).text)}}));
    EXPECT_EQ(some["drops"][1]["port"], "db-1");
    EXPECT_EQ(some["drops"][1]["reason"], "ttl_exceeded");
    EXPECT_EQ(cp::drops_result(sample(), true)["drops"].size(), 3 * kDropReasonCount);
    EXPECT_EQ(cp::drops_query(Json{{"all", true}}).value(), true);
    EXPECT_FALSE(cp::drops_query(Json{{"all", "yes"}}).has_value());
}

TEST_F(ControlCommands, PortsInstancesLeasesAndRoutes) {
    const Json ports = cp::ports_result(config_, sample());
    ASSERT_EQ(ports["ports"].size(), 3u);
    EXPECT_EQ(ports["ports"][0]["name"], "web-1");
    EXPECT_EQ(ports["ports"][0]["up"], true);
    EXPECT_EQ(ports["ports"][0]["socket"], "/tmp/calyx-unit/web-1.sock");
    EXPECT_EQ(ports["ports"][0]["rx_packets"], 7);
    EXPECT_EQ(ports["ports"][0]["drops"], 3);
    EXPECT_EQ(ports["ports"][1]["mode"], "client");

    const Json inst = cp::instances_result(config_, *snap_, sample());
    ASSERT_EQ(inst["instances"].size(), 3u);
    EXPECT_EQ(inst["instances"][1]["name"], "app-1");
    EXPECT_EQ(inst["instances"][1]["kind"], "nat");
    EXPECT_EQ(inst["instances"][1]["address"], "10.10.0.5");
    EXPECT_EQ(inst["instances"][1]["mac"], "52:54:00:00:02:01");
    EXPECT_EQ(inst["instances"][1]["up"], false);
    EXPECT_EQ(inst["instances"][1]["security_groups"], Json::array({"app"}));
    EXPECT_EQ(inst["instances"][0]["rules"], (Json{{"ingress", 1}, {"egress", 1}}));

    const Json leases = cp::leases_result(config_, *snap_, sample());
    const Json& web = leases["leases"][0];
    EXPECT_EQ(web["instance"], "web-1");
    EXPECT_EQ(web["mac"], "52:54:00:00:01:01");
    EXPECT_EQ(web["address"], "203.0.113.10");
    EXPECT_EQ(web["prefix_length"], 24);
    EXPECT_EQ(web["gateway"], "203.0.113.1");
    EXPECT_EQ(web["lease_seconds"], 3600);
    EXPECT_EQ(leases["leases"][1]["mtu"], 1400);
    EXPECT_EQ(leases["dhcp_replies"], (Json{{"offer", 1}, {"ack", 2}, {"nak", 0}}));

    const Json routes = cp::routes_result(*snap_);
    std::map<std::string, Json> by_prefix;
    for (const auto& r : routes["routes"])
        by_prefix[r["prefix"].get<std::string>()] = r["next_hop"];
    EXPECT_EQ(by_prefix["203.0.113.10/32"]["kind"], "instance");
    EXPECT_EQ(by_prefix["203.0.113.10/32"]["instance"], "web-1");
    EXPECT_EQ(by_prefix["10.10.0.0/24"]["kind"], "unassigned");
    EXPECT_EQ(by_prefix["10.10.0.1/32"]["text"], "calyx: gateway of nat");
    EXPECT_EQ(by_prefix["10.20.0.255/32"]["text"], "calyx: broadcast of private");
    EXPECT_EQ(by_prefix["0.0.0.0/0"]["kind"], "unreachable");
    EXPECT_EQ(routes["routes"].size(), 3 * 3 + 3 + 1u);
}

TEST_F(ControlCommands, StatusSumsTheSample) {
    config_.source_file = "/etc/calyx/site.yaml";  // as load_config_file sets it
    const auto started = std::chrono::steady_clock::now();
    const Json s =
        cp::status_result(config_, *snap_, sample(), {"1.2.3", 4242, started}, started + 90s);
    EXPECT_EQ(s["version"], "1.2.3");
    EXPECT_EQ(s["pid"], 4242);
    EXPECT_EQ(s["uptime_s"], 90);
    EXPECT_EQ(s["config"], "/etc/calyx/site.yaml");
    EXPECT_EQ(s["generation"], 1);
    EXPECT_EQ(s["reloads"], (Json{{"ok", 2}, {"failed", 1}}));
    EXPECT_EQ(s["ports"], (Json{{"total", 3}, {"up", 2}}));
    EXPECT_EQ(s["workers"][0]["busy_percent"], 25.0);
    EXPECT_TRUE(s["uplink"].is_null());
    EXPECT_TRUE(s["nat"].is_null());
}

// --- the command table --------------------------------------------------------------------

TEST_F(ControlCommands, CommandTableAnswersRequestLines) {
    int reloads = 0;
    cp::CommandEnv env;
    env.info = {"0.0", 1, std::chrono::steady_clock::now()};
    env.now_ns = [this] { return ctx_.now_ns; };
    env.reload = [&reloads]() -> cp::ReloadResult {
        if (++reloads == 1) return {true, 2, "reloaded: generation 2", {}};
        return {false,
                2,
                "reload rejected, running configuration kept: x.yaml has 1 error(s)",
                {"x.yaml:3:5: unknown key 'colour'"}};
    };
    const FakeRouter router{&config_, snap_.get(), conntrack_.get(), sample()};
    const cp::CommandTable table = cp::make_command_table(router, env);
    for (const char* name : {"status", "reload", "ports", "instances", "routes", "conntrack", "nat",
                             "leases", "drops", "explain"})
        EXPECT_TRUE(table.contains(name)) << name;

    const auto ask = [&](std::string_view line) {
        return Json::parse(cp::handle_request(table, line));
    };
    EXPECT_EQ(ask(R"({"command": "status"})")["result"]["instances"], 3);
    EXPECT_EQ(ask(R"({"command": "reload"})"),
              (Json{{"ok", true},
                    {"result", {{"generation", 2}, {"message", "reloaded: generation 2"}}}}));
    EXPECT_EQ(ask(R"({"command": "reload", "args": {}})"),
              (Json{{"ok", false},
                    {"error", "reload rejected, running configuration kept: x.yaml has 1 error(s)"},
                    {"errors", {"x.yaml:3:5: unknown key 'colour'"}}}));
    const Json denied = ask(
        R"({"command": "explain", "args": {"from": "db-1", "to": "web-1", "proto": "tcp", "port": 443}})");
    EXPECT_EQ(denied["ok"], true);
    EXPECT_EQ(denied["result"]["allowed"], false);
    EXPECT_EQ(denied["result"]["reason"], "sg_no_egress_rule");

    EXPECT_EQ(
        ask(R"({"command": "fly"})"),
        (Json{{"ok", false},
              {"error",
               "unknown command 'fly' (known: conntrack, drops, explain, instances, leases, nat, "
               "ports, reload, routes, status)"},
              {"usage", true}}));
    EXPECT_EQ(ask("status")["error"], "the request is not valid JSON");
    EXPECT_EQ(ask("[1]")["error"], "the request is not a JSON object");
    EXPECT_EQ(ask(R"({"args": {}})")["error"], "the request has no \"command\" string");
    EXPECT_EQ(ask(R"({"command": "drops", "args": [1]})")["error"],
              "\"args\" must be a JSON object");
    EXPECT_EQ(ask(R"({"command": "ports", "args": {"all": true}})")["error"],
              "unexpected argument 'all' (this command takes none)");
    EXPECT_EQ(ask(R"({"command": "conntrack", "args": {"limit": 100001}})")["error"],
              "'limit' must be a whole number from 0 to 100000");
}

TEST(ControlRequest, AThrowingHandlerBecomesAnErrorReply) {
    cp::CommandTable t;
    t["boom"] = [](const Json&) -> cp::CommandResult { throw std::runtime_error("kaput"); };
    EXPECT_EQ(Json::parse(cp::handle_request(t, R"({"command": "boom"})")),
              (Json{{"ok", false}, {"error", "boom: internal error: kaput"}}));
}

// --- the socket ---------------------------------------------------------------------------

class ControlSocket : public ::testing::Test {
  protected:
    void SetUp() override {
        char tmpl[] = "/tmp/calyx-ctl-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        path_ = (dir_ / "run" / "calyx.sock").string();  // the parent does not exist yet
        table_["echo"] = [](const Json& args) -> cp::CommandResult { return args; };
        table_["fail"] = [](const Json&) -> cp::CommandResult {
            return std::unexpected(
                cp::CommandError{"no", false, {"a:1:2: first", "a:3:4: second"}});
        };
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }

    // A raw connection, for clients that misbehave.
    int connect_raw() const {
        const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path_.c_str());
        EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0)
            << std::strerror(errno);
        return fd;
    }
    static std::string read_all(int fd) {
        std::string out;
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
        return out;
    }

    std::filesystem::path dir_;
    std::string path_;
    cp::CommandTable table_;
};

TEST_F(ControlSocket, ServesRequestsOnAnOwnerOnlySocket) {
    auto server = cp::ControlServer::start(path_, table_);
    ASSERT_TRUE(server.has_value()) << server.error();
    struct stat st {};
    ASSERT_EQ(::stat(path_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0600u);

    auto r = cp::control_call(path_, "echo", Json{{"x", 1}}, 5s);
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_TRUE(r->ok);
    EXPECT_EQ(r->result, (Json{{"x", 1}}));
    auto f = cp::control_call(path_, "fail", {}, 5s);
    ASSERT_TRUE(f.has_value());
    EXPECT_FALSE(f->ok);
    EXPECT_FALSE(f->usage);
    EXPECT_EQ(f->error, "no");
    EXPECT_EQ(f->errors, (std::vector<std::string>{"a:1:2: first", "a:3:4: second"}));
    auto u = cp::control_call(path_, "nope", {}, 5s);
    ASSERT_TRUE(u.has_value());
    EXPECT_TRUE(u->usage);

    // A second server never takes over a live socket.
    auto second = cp::ControlServer::start(path_, table_);
    ASSERT_FALSE(second.has_value());
    EXPECT_EQ(second.error(),
              fmt::format("control socket {}: another process is listening on it (is "
                          "calyx already running?)",
                          path_));
    server->reset();
    EXPECT_FALSE(std::filesystem::exists(path_)) << "the socket is removed at stop";
    const auto gone = cp::control_call(path_, "echo", {}, 5s);
    ASSERT_FALSE(gone.has_value());
    EXPECT_EQ(gone.error().kind, cp::CallFailure::not_running);
}

TEST_F(ControlSocket, ReplacesAStaleSocketButNeverAFile) {
    std::filesystem::create_directories(std::filesystem::path(path_).parent_path());
    std::ofstream(path_) << "not a socket";
    auto refused = cp::ControlServer::start(path_, table_);
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().find("exists and is not a socket"), std::string::npos)
        << refused.error();
    std::filesystem::remove(path_);

    // What a crashed calyx leaves: a socket file no one listens on.
    {
        const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path_.c_str());
        ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
        ::close(fd);
    }
    const auto stale = cp::control_call(path_, "echo", {}, 5s);
    ASSERT_FALSE(stale.has_value());
    EXPECT_EQ(stale.error().kind, cp::CallFailure::not_running);
    EXPECT_NE(stale.error().message.find("nothing listens on"), std::string::npos);

    auto server = cp::ControlServer::start(path_, table_);
    ASSERT_TRUE(server.has_value()) << server.error();
    EXPECT_TRUE(cp::control_call(path_, "echo", {}, 5s).has_value());
}

TEST_F(ControlSocket, OversizedRequestsAndSilentClientsAreCutOff) {
    auto server = cp::ControlServer::start(path_, table_);
    ASSERT_TRUE(server.has_value()) << server.error();

    const int big = connect_raw();
    const std::string junk(cp::kMaxRequestBytes + 100, 'x');
    ASSERT_EQ(::send(big, junk.data(), junk.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(junk.size()));
    const Json reply = Json::parse(read_all(big));
    ::close(big);
    EXPECT_EQ(reply["error"], fmt::format("request longer than {} bytes", cp::kMaxRequestBytes));
    EXPECT_EQ(reply["usage"], true);

    // A client that connects and says nothing holds the server for kRequestTimeout at most.
    const int silent = connect_raw();
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = cp::control_call(path_, "echo", Json{{"after", "silent"}}, 10s);
    const auto waited = std::chrono::steady_clock::now() - t0;
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->result["after"], "silent");
    EXPECT_LT(waited, cp::kRequestTimeout + 2s);
    const Json told = Json::parse(read_all(silent));
    EXPECT_EQ(told["error"],
              fmt::format("no complete request within {} ms", cp::kRequestTimeout.count()));
    ::close(silent);

    // Stopping does not wait for a client in the middle of its request.
    const int stuck = connect_raw();
    ASSERT_EQ(::send(stuck, "{", 1, MSG_NOSIGNAL), 1);
    std::this_thread::sleep_for(50ms);
    const auto t1 = std::chrono::steady_clock::now();
    server->reset();
    EXPECT_LT(std::chrono::steady_clock::now() - t1, 500ms);
    ::close(stuck);
}

TEST(ControlClient, SaysWhenCalyxIsNotRunning) {
    const auto r = cp::control_call("/nonexistent/calyx.sock", "status", {}, 1s);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().kind, cp::CallFailure::not_running);
    EXPECT_EQ(r.error().message,
              "no control socket at /nonexistent/calyx.sock: calyx is not running, or its "
              "control.socket is elsewhere (use --socket PATH)");
    const auto long_path = cp::control_call(std::string(200, 'a'), "status", {}, 1s);
    ASSERT_FALSE(long_path.has_value());
    EXPECT_EQ(long_path.error().kind, cp::CallFailure::io);
}

}  // namespace
}  // namespace calyx::test
