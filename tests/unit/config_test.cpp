// Configuration parsing and validation: a full valid file, then a table of invalid files, each
// with the exact `file:line:col: message` lines a user sees.
#include <cstdio>
#include <filesystem>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "calyx/config.hpp"

namespace calyx::config {
namespace {

// YAML literals below start with a newline so they read as a block; it is not part of the file.
std::string_view yaml(std::string_view text) {
    if (text.starts_with('\n')) text.remove_prefix(1);
    return text;
}

std::vector<std::string> error_lines(std::string_view text) {
    const auto result = parse_config(yaml(text), "bad.yaml");
    std::vector<std::string> lines;
    if (!result)
        for (const Error& e : result.error()) lines.push_back(e.to_string());
    return lines;
}

constexpr std::string_view kFullConfig = R"(
dataplane:
  workers: [1, 3]
  eal_args: ["--no-huge", "-m", "512"]
  gateway_mac: ee:ee:ee:00:00:01
  icmp_errors_per_second: 200
  icmp_errors_burst: 20
  mbufs: 8191
  conntrack:
    capacity: 65536
    tcp_established: 3600
    udp_unreplied: 15
    fragment: 5
control:
  socket: /run/calyx/ctl.sock
metrics:
  listen: 127.0.0.1:9469
networks:
  - name: public
    kind: public
    cidr: 203.0.113.0/24
    gateway: 203.0.113.1
    dns: [203.0.113.53, 198.51.100.53]
    domain: example.org
    mtu: 9000
    lease_seconds: 3600
    routes: [198.51.100.0/24, 192.0.2.128/25]
  - name: private
    kind: private
    cidr: 10.0.0.0/16
    gateway: 10.0.0.1
instances:
  - name: web-1
    network: public
    mac: 52:54:00:00:01:01
    ipv4: 203.0.113.10
    port: {type: vhost-user, socket: /run/calyx/web-1.sock, mode: client, queues: 4}
    security_groups: [web, frontends]
  - name: db-1
    network: private
    mac: 52:54:00:00:02:01
    ipv4: 10.0.3.7
    port:
      type: vhost-user
      socket: /run/calyx/db-1.sock
security_groups:
  - name: web
    rules:
      - {direction: ingress, protocol: tcp, ports: 443, remote: 0.0.0.0/0}
      - {direction: ingress, protocol: tcp, ports: "8000-8080", remote_group: frontends}
      - {direction: egress,  protocol: any, remote: 0.0.0.0/0}
      - {direction: ingress, protocol: icmp, icmp_type: 8, remote: 10.0.0.0/8}
  - name: frontends
    rules:
      - direction: egress
        protocol: 6
        ports: 8080
        remote_group: web
      - {direction: ingress, protocol: 17, ports: 5353-5354, remote_group: frontends}
      - {direction: ingress, protocol: 1, icmp_type: 3, icmp_code: 4, remote: 192.0.2.0/24}
      - {direction: egress, protocol: 47}
uplink:
  port: {type: tap, name: calyx-up, queues: 2}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
  nat_ports: "30000-39999"
)";

TEST(Config, FullConfigParsesWithExactValues) {
    const auto result = parse_config(yaml(kFullConfig), "full.yaml");
    ASSERT_TRUE(result.has_value()) << result.error().front().to_string();
    const Config& c = *result;

    EXPECT_EQ(c.dataplane.workers, (std::vector<unsigned>{1, 3}));
    EXPECT_EQ(c.dataplane.eal_args, (std::vector<std::string>{"--no-huge", "-m", "512"}));
    EXPECT_EQ(c.dataplane.gateway_mac.to_string(), "ee:ee:ee:00:00:01");
    EXPECT_EQ(c.dataplane.icmp_errors_per_second, 200u);
    EXPECT_EQ(c.dataplane.icmp_errors_burst, 20u);
    EXPECT_EQ(c.dataplane.mbufs, 8191u);
    const ConntrackConfig& ct = c.dataplane.conntrack;
    EXPECT_EQ(ct.capacity, 65536u);
    EXPECT_EQ(ct.tcp_established, 3600u);
    EXPECT_EQ(ct.udp_unreplied, 15u);
    EXPECT_EQ(ct.fragment, 5u);
    EXPECT_EQ(ct.tcp_syn_sent, 120u);  // default
    EXPECT_EQ(ct.udp_replied, 120u);   // default
    EXPECT_EQ(ct.generic, 600u);       // default
    EXPECT_EQ(c.control.socket, "/run/calyx/ctl.sock");
    EXPECT_EQ(c.metrics.listen, "127.0.0.1:9469");

    ASSERT_EQ(c.networks.size(), 2u);
    const NetworkConfig& pub = c.networks[0];
    EXPECT_EQ(pub.name, "public");
    EXPECT_EQ(pub.kind, NetworkKind::public_);
    EXPECT_EQ(pub.cidr.to_string(), "203.0.113.0/24");
    EXPECT_EQ(pub.gateway.to_string(), "203.0.113.1");
    ASSERT_EQ(pub.dns.size(), 2u);
    EXPECT_EQ(pub.dns[0].to_string(), "203.0.113.53");
    EXPECT_EQ(pub.dns[1].to_string(), "198.51.100.53");
    EXPECT_EQ(pub.domain, "example.org");
    EXPECT_EQ(pub.mtu, 9000);
    EXPECT_EQ(pub.lease_seconds, 3600u);
    ASSERT_EQ(pub.routes.size(), 2u);
    EXPECT_EQ(pub.routes[0].to_string(), "198.51.100.0/24");
    EXPECT_EQ(pub.routes[1].to_string(), "192.0.2.128/25");
    EXPECT_EQ(pub.where.file, "full.yaml");
    EXPECT_EQ(pub.where.line, 18);
    EXPECT_EQ(pub.where.column, 5);

    const NetworkConfig& priv = c.networks[1];
    EXPECT_EQ(priv.kind, NetworkKind::private_);
    EXPECT_EQ(priv.cidr.to_string(), "10.0.0.0/16");
    EXPECT_TRUE(priv.dns.empty());
    EXPECT_EQ(priv.domain, std::nullopt);
    EXPECT_EQ(priv.mtu, 1500);              // default
    EXPECT_EQ(priv.lease_seconds, 86400u);  // default
    EXPECT_TRUE(priv.routes.empty());

    ASSERT_EQ(c.instances.size(), 2u);
    const InstanceConfig& web = c.instances[0];
    EXPECT_EQ(web.name, "web-1");
    EXPECT_EQ(web.network, "public");
    EXPECT_EQ(web.mac.to_string(), "52:54:00:00:01:01");
    EXPECT_EQ(web.ipv4.to_string(), "203.0.113.10");
    EXPECT_EQ(web.port.type, PortType::vhost_user);
    EXPECT_EQ(web.port.socket, "/run/calyx/web-1.sock");
    EXPECT_EQ(web.port.mode, VhostMode::client);
    EXPECT_EQ(web.port.queues, 4);
    EXPECT_EQ(web.security_groups, (std::vector<std::string>{"web", "frontends"}));
    EXPECT_EQ(web.where.line, 32);

    const InstanceConfig& db = c.instances[1];
    EXPECT_EQ(db.port.mode, VhostMode::server);  // default
    EXPECT_EQ(db.port.queues, 1);                // default
    EXPECT_TRUE(db.security_groups.empty());
    EXPECT_EQ(db.port.where.line, 43);
}

TEST(Config, SecurityGroupRulesParseWithExactValues) {
    const auto result = parse_config(yaml(kFullConfig), "full.yaml");
    ASSERT_TRUE(result.has_value()) << result.error().front().to_string();
    ASSERT_EQ(result->security_groups.size(), 2u);

    const SecurityGroupConfig& web = result->security_groups[0];
    EXPECT_EQ(web.name, "web");
    EXPECT_EQ(web.where.file, "full.yaml");
    EXPECT_EQ(web.where.line, 46);
    EXPECT_EQ(web.where.column, 5);
    ASSERT_EQ(web.rules.size(), 4u);

    // tcp 443 from anywhere, written as a CIDR: stored, unlike an absent remote.
    const RuleConfig& https = web.rules[0];
    EXPECT_EQ(https.direction, RuleDirection::ingress);
    EXPECT_EQ(https.protocol, 6);
    EXPECT_EQ(https.port_min, 443);
    EXPECT_EQ(https.port_max, 443);
    EXPECT_EQ(https.icmp_type, std::nullopt);
    EXPECT_EQ(https.icmp_code, std::nullopt);
    ASSERT_TRUE(https.remote.has_value());
    EXPECT_EQ(https.remote->to_string(), "0.0.0.0/0");
    EXPECT_EQ(https.remote_group, std::nullopt);
    EXPECT_EQ(https.where.file, "full.yaml");
    EXPECT_EQ(https.where.line, 48);
    EXPECT_EQ(https.where.column, 9);

    // A port range is one rule; remote_group may name a group defined after this one.
    const RuleConfig& range = web.rules[1];
    EXPECT_EQ(range.protocol, 6);
    EXPECT_EQ(range.port_min, 8000);
    EXPECT_EQ(range.port_max, 8080);
    EXPECT_EQ(range.remote, std::nullopt);
    EXPECT_EQ(range.remote_group, "frontends");
    EXPECT_EQ(range.where.line, 49);

    const RuleConfig& out = web.rules[2];
    EXPECT_EQ(out.direction, RuleDirection::egress);
    EXPECT_EQ(out.protocol, std::nullopt);  // any
    EXPECT_EQ(out.port_min, 0);
    EXPECT_EQ(out.port_max, 65535);
    ASSERT_TRUE(out.remote.has_value());
    EXPECT_EQ(out.remote->to_string(), "0.0.0.0/0");

    const RuleConfig& ping = web.rules[3];
    EXPECT_EQ(ping.protocol, 1);
    EXPECT_EQ(ping.icmp_type, 8);
    EXPECT_EQ(ping.icmp_code, std::nullopt);
    EXPECT_EQ(ping.port_min, 0);
    EXPECT_EQ(ping.port_max, 65535);
    ASSERT_TRUE(ping.remote.has_value());
    EXPECT_EQ(ping.remote->to_string(), "10.0.0.0/8");
    EXPECT_EQ(ping.remote->length, 8);

    const SecurityGroupConfig& fe = result->security_groups[1];
    EXPECT_EQ(fe.name, "frontends");
    EXPECT_EQ(fe.where.line, 52);
    ASSERT_EQ(fe.rules.size(), 4u);

    // Protocol numbers that have a name mean exactly what the name means.
    const RuleConfig& by_number = fe.rules[0];
    EXPECT_EQ(by_number.direction, RuleDirection::egress);
    EXPECT_EQ(by_number.protocol, web.rules[0].protocol);
    EXPECT_EQ(by_number.port_min, 8080);
    EXPECT_EQ(by_number.port_max, 8080);
    EXPECT_EQ(by_number.remote_group, "web");
    EXPECT_EQ(by_number.where.line, 54);
    EXPECT_EQ(by_number.where.column, 9);

    const RuleConfig& own_group = fe.rules[1];
    EXPECT_EQ(own_group.protocol, 17);
    EXPECT_EQ(own_group.port_min, 5353);
    EXPECT_EQ(own_group.port_max, 5354);
    EXPECT_EQ(own_group.remote_group, "frontends");

    const RuleConfig& frag_needed = fe.rules[2];
    EXPECT_EQ(frag_needed.protocol, 1);
    EXPECT_EQ(frag_needed.icmp_type, 3);
    EXPECT_EQ(frag_needed.icmp_code, 4);
    ASSERT_TRUE(frag_needed.remote.has_value());
    EXPECT_EQ(frag_needed.remote->to_string(), "192.0.2.0/24");

    const RuleConfig& gre = fe.rules[3];
    EXPECT_EQ(gre.protocol, 47);
    EXPECT_EQ(gre.port_min, 0);
    EXPECT_EQ(gre.port_max, 65535);
    EXPECT_EQ(gre.remote, std::nullopt);  // neither remote nor remote_group: anywhere
    EXPECT_EQ(gre.remote_group, std::nullopt);
}

TEST(Config, TapUplinkParsesWithExactValues) {
    const auto result = parse_config(yaml(kFullConfig), "full.yaml");
    ASSERT_TRUE(result.has_value()) << result.error().front().to_string();
    ASSERT_TRUE(result->uplink.has_value());
    const UplinkConfig& up = *result->uplink;
    EXPECT_EQ(up.port, UplinkPort{TapPort{"calyx-up"}});
    EXPECT_EQ(up.queues, 2);
    EXPECT_EQ(up.address.to_string(), "198.51.100.10");  // the host's address, host bits kept
    EXPECT_EQ(up.prefix_length, 24);
    EXPECT_EQ(up.subnet().to_string(), "198.51.100.0/24");
    EXPECT_EQ(up.gateway.to_string(), "198.51.100.1");
    EXPECT_EQ(up.nat_port_min, 30000);
    EXPECT_EQ(up.nat_port_max, 39999);
    EXPECT_EQ(up.where.file, "full.yaml");
    EXPECT_EQ(up.where.line, 62);
    EXPECT_EQ(up.where.column, 3);
}

TEST(Config, AfPacketUplinkTakesTheDefaultQueuesAndNatPorts) {
    const auto result = parse_config(yaml(R"(
networks:
  - {name: lan, kind: nat, cidr: 10.0.0.0/16, gateway: 10.0.0.1}
uplink:
  port: {type: af_packet, iface: eth1}
  address: 192.0.2.77/28
  gateway: 192.0.2.65
)"),
                                     "af.yaml");
    ASSERT_TRUE(result.has_value()) << result.error().front().to_string();
    ASSERT_TRUE(result->uplink.has_value());
    const UplinkConfig& up = *result->uplink;
    EXPECT_EQ(up.port, UplinkPort{AfPacketPort{"eth1"}});
    EXPECT_EQ(up.queues, 0);
    EXPECT_EQ(up.queue_count(3), 3) << "unset: one queue pair per worker";
    EXPECT_EQ(up.address.to_string(), "192.0.2.77");
    EXPECT_EQ(up.prefix_length, 28);
    EXPECT_EQ(up.subnet().to_string(), "192.0.2.64/28");
    EXPECT_EQ(up.gateway.to_string(), "192.0.2.65");
    EXPECT_EQ(up.nat_port_min, 20000);
    EXPECT_EQ(up.nat_port_max, 59999);
}

TEST(Config, PciUplinkAddressIsNormalisedToTheLongLowercaseForm) {
    const auto result = parse_config(yaml(R"(
uplink:
  port: {type: pci, address: "3B:1f.7", queues: 8}
  address: 203.0.113.2/30
  gateway: 203.0.113.1
  nat_ports: 1024-65535
)"),
                                     "pci.yaml");
    ASSERT_TRUE(result.has_value()) << result.error().front().to_string();
    ASSERT_TRUE(result->uplink.has_value());
    const UplinkConfig& up = *result->uplink;
    EXPECT_EQ(up.port, UplinkPort{PciPort{"0000:3b:1f.7"}});
    EXPECT_EQ(up.queues, 8);
    EXPECT_EQ(up.address.to_string(), "203.0.113.2");
    EXPECT_EQ(up.prefix_length, 30);
    EXPECT_EQ(up.gateway.to_string(), "203.0.113.1");
    EXPECT_EQ(up.nat_port_min, 1024);
    EXPECT_EQ(up.nat_port_max, 65535);
}

TEST(Config, VhostUserUplinkServesItsSocket) {
    const auto result = parse_config(yaml(R"(
uplink:
  port: {type: vhost-user, socket: /run/calyx/uplink.sock, queues: 2}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)"),
                                     "vhost.yaml");
    ASSERT_TRUE(result.has_value()) << result.error().front().to_string();
    const UplinkConfig& up = *result->uplink;
    EXPECT_EQ(up.port, UplinkPort{VhostUserPort{"/run/calyx/uplink.sock"}});
    EXPECT_EQ(up.queues, 2);
    EXPECT_EQ(type_name(up.port), "vhost-user");
    EXPECT_EQ(device_name(up.port), "/run/calyx/uplink.sock");
}

// libvirt and Nova run QEMU as libvirt-qemu: the socket calyx creates can be given to it.
TEST(Config, ServerSocketTakesOwnerGroupAndOctalMode) {
    const auto result = parse_config(yaml(R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - {name: a, network: pub, mac: "52:54:00:00:00:01", ipv4: 203.0.113.10,
     port: {type: vhost-user, socket: /run/calyx/a.sock, owner: root, group: nogroup, mode: "0660"}}
  - {name: b, network: pub, mac: "52:54:00:00:00:02", ipv4: 203.0.113.11,
     port: {type: vhost-user, socket: /run/calyx/b.sock, owner: 64055, mode: 600}}
)"),
                                     "access.yaml");
    ASSERT_TRUE(result.has_value()) << result.error().front().to_string();
    const PortConfig& a = result->instances[0].port;
    EXPECT_EQ(a.mode, VhostMode::server);
    EXPECT_EQ(a.owner, (FileOwner{"root", 0}));
    ASSERT_TRUE(a.group);
    EXPECT_EQ(a.group->name, "nogroup");
    EXPECT_EQ(a.group->id, 65534u);
    EXPECT_EQ(a.socket_mode, 0660u);
    const PortConfig& b = result->instances[1].port;
    EXPECT_EQ(b.owner, (FileOwner{"64055", 64055}));
    EXPECT_FALSE(b.group);
    EXPECT_EQ(b.socket_mode, 0600u);
}

TEST(Config, SocketAccessErrorsNameTheirKey) {
    EXPECT_EQ(error_lines(R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - {name: a, network: pub, mac: "52:54:00:00:00:01", ipv4: 203.0.113.10,
     port: {type: vhost-user, socket: /run/calyx/a.sock, owner: no-such-user, group: no-such-group, mode: "0999"}}
  - {name: b, network: pub, mac: "52:54:00:00:00:02", ipv4: 203.0.113.11,
     port: {type: vhost-user, socket: /run/calyx/b.sock, mode: client, owner: root}}
)"),
              (std::vector<std::string>{
                  "bad.yaml:5:65: user 'no-such-user' does not exist on this host",
                  "bad.yaml:5:86: group 'no-such-group' does not exist on this host",
                  "bad.yaml:5:107: 'mode' must be server, client, or the socket file's mode in octal (e.g. \"0660\"), got '0999'",
                  "bad.yaml:7:12: owner, group and a file mode apply to a socket calyx creates (server mode); in "
                  "client mode QEMU creates the socket"}));
}

TEST(Config, PciUplinkAddressInTheLongFormIsKept) {
    const auto result = parse_config(yaml(R"(
uplink:
  port: {type: pci, address: 0001:01:00.0}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)"),
                                     "pci.yaml");
    ASSERT_TRUE(result.has_value()) << result.error().front().to_string();
    EXPECT_EQ(result->uplink->port, UplinkPort{PciPort{"0001:01:00.0"}});
}

TEST(Config, IdleSleepIsReadAndZeroMeansPurePolling) {
    for (const uint32_t us : {0u, 250u, 10000u}) {
        const auto result = parse_config(fmt::format("dataplane: {{idle_sleep_us: {}}}\n", us), "sleep.yaml");
        ASSERT_TRUE(result.has_value()) << result.error().front().to_string();
        EXPECT_EQ(result->dataplane.idle_sleep_us, us);
    }
}

TEST(Config, OmittedSectionsKeepTheirDefaults) {
    const auto result = parse_config("networks: []\ninstances: []\n", "min.yaml");
    ASSERT_TRUE(result.has_value());
    EXPECT_EQ(result->dataplane.workers, std::vector<unsigned>{1});
    EXPECT_EQ(result->dataplane.gateway_mac.to_string(), "ee:ee:ee:ee:ee:ee");
    EXPECT_EQ(result->dataplane.icmp_errors_per_second, 1000u);
    EXPECT_EQ(result->dataplane.icmp_errors_burst, 50u);
    EXPECT_EQ(result->dataplane.mbufs, 16383u);
    EXPECT_EQ(result->dataplane.idle_sleep_us, 100u);
    EXPECT_EQ(result->dataplane.conntrack.capacity, 1048576u);
    EXPECT_EQ(result->dataplane.conntrack.tcp_established, 432000u);
    EXPECT_EQ(result->dataplane.conntrack.udp_unreplied, 30u);
    EXPECT_EQ(result->control.socket, "/run/calyx/calyx.sock");
    EXPECT_EQ(result->state_path(), "/run/calyx/calyx.state") << "next to the control socket";
    const auto placed = parse_config("dataplane: {state_file: /dev/hugepages/calyx.state}\nnetworks: []\ninstances: []\n",
                                     "placed.yaml");
    ASSERT_TRUE(placed.has_value());
    EXPECT_EQ(placed->state_path(), "/dev/hugepages/calyx.state");
    EXPECT_EQ(result->metrics.listen, "127.0.0.1:9469");
    EXPECT_TRUE(result->security_groups.empty());
    EXPECT_FALSE(result->uplink.has_value());
}

TEST(Config, ConntrackAcceptsCapacityAndTimeoutsInOneFlowMapping) {
    const auto result = parse_config(
        "dataplane:\n  conntrack: {capacity: 65536, tcp_established: 3600}\n", "ct.yaml");
    ASSERT_TRUE(result.has_value()) << result.error().front().to_string();
    EXPECT_EQ(result->dataplane.conntrack.capacity, 65536u);
    EXPECT_EQ(result->dataplane.conntrack.tcp_established, 3600u);
    EXPECT_EQ(result->dataplane.conntrack.tcp_time_wait, 120u);  // default
}

TEST(Config, EveryConntrackTimeoutIsReadIntoItsField) {
    const auto result = parse_config(yaml(R"(
dataplane:
  conntrack:
    capacity: 134217728
    tcp_syn_sent: 1
    tcp_syn_recv: 2
    tcp_established: 3
    tcp_fin_wait: 4
    tcp_close_wait: 5
    tcp_last_ack: 6
    tcp_time_wait: 7
    tcp_close: 8
    tcp_unacknowledged: 9
    udp_unreplied: 10
    udp_replied: 11
    icmp: 12
    generic: 13
    fragment: 14
)"),
                                     "ct.yaml");
    ASSERT_TRUE(result.has_value()) << result.error().front().to_string();
    const ConntrackConfig& ct = result->dataplane.conntrack;
    EXPECT_EQ(ct.capacity, 134217728u);
    const uint32_t timeouts[] = {ct.tcp_syn_sent,  ct.tcp_syn_recv,   ct.tcp_established,
                                 ct.tcp_fin_wait,  ct.tcp_close_wait, ct.tcp_last_ack,
                                 ct.tcp_time_wait, ct.tcp_close,      ct.tcp_unacknowledged,
                                 ct.udp_unreplied, ct.udp_replied,    ct.icmp,
                                 ct.generic,       ct.fragment};
    for (uint32_t i = 0; i < std::size(timeouts); ++i) EXPECT_EQ(timeouts[i], i + 1);
}

TEST(Config, NetworksInstancesAndSecurityGroupsAreFoundByName) {
    const auto result = parse_config(yaml(kFullConfig), "full.yaml");
    ASSERT_TRUE(result.has_value());
    ASSERT_NE(result->find_network("private"), nullptr);
    EXPECT_EQ(result->find_network("private")->gateway.to_string(), "10.0.0.1");
    EXPECT_EQ(result->find_network("nat"), nullptr);
    ASSERT_NE(result->find_instance("db-1"), nullptr);
    EXPECT_EQ(result->find_instance("db-1")->ipv4.to_string(), "10.0.3.7");
    EXPECT_EQ(result->find_instance("web-2"), nullptr);
    ASSERT_NE(result->find_security_group("frontends"), nullptr);
    EXPECT_EQ(result->find_security_group("frontends")->rules.size(), 4u);
    EXPECT_EQ(result->find_security_group("ssh"), nullptr);
}

TEST(Config, EnumsPrintAsTheirConfigSpelling) {
    EXPECT_EQ(to_string(NetworkKind::public_), "public");
    EXPECT_EQ(to_string(NetworkKind::nat), "nat");
    EXPECT_EQ(to_string(NetworkKind::private_), "private");
    EXPECT_EQ(to_string(VhostMode::server), "server");
    EXPECT_EQ(to_string(VhostMode::client), "client");
    EXPECT_EQ(to_string(RuleDirection::ingress), "ingress");
    EXPECT_EQ(to_string(RuleDirection::egress), "egress");
    EXPECT_EQ(type_name(TapPort{}), "tap");
    EXPECT_EQ(type_name(AfPacketPort{}), "af_packet");
    EXPECT_EQ(type_name(PciPort{}), "pci");
    EXPECT_EQ(type_name(VhostUserPort{}), "vhost-user");
}

TEST(Config, ErrorPrintsAsFileLineColumnMessage) {
    const Error e{{"conf/x.yaml", 12, 7}, "unknown network 'pub'"};
    EXPECT_EQ(e.to_string(), "conf/x.yaml:12:7: unknown network 'pub'");
}

TEST(Config, LoadingAFileRecordsItsPath) {
    const std::string path =
        (std::filesystem::temp_directory_path() / "calyx_config_test.yaml").string();
    std::FILE* f = std::fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    const std::string_view text = yaml(kFullConfig);
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);

    const auto result = load_config_file(path);
    std::filesystem::remove(path);
    ASSERT_TRUE(result.has_value());
    EXPECT_EQ(result->source_file, path);
    EXPECT_EQ(result->instances.size(), 2u);
}

TEST(Config, UnreadableFileIsOneErrorAtLineZero) {
    const auto result = load_config_file("/nonexistent/calyx.yaml");
    ASSERT_FALSE(result.has_value());
    ASSERT_EQ(result.error().size(), 1u);
    EXPECT_EQ(result.error()[0].to_string(),
              "/nonexistent/calyx.yaml:0:0: cannot read: No such file or directory");
}

TEST(Config, ErrorsInAFileAreReportedWithThatFileName) {
    const auto result = parse_config("metrics: {listen: nowhere}\n", "conf/demo.yaml");
    ASSERT_FALSE(result.has_value());
    ASSERT_EQ(result.error().size(), 1u);
    EXPECT_EQ(result.error()[0].where.file, "conf/demo.yaml");
}

// ---------------------------------------------------------------------------------------------
// Invalid configurations. Each row is a whole file and every error it must produce, in order.

constexpr std::string_view kSecondPort =
    "has a second port: one instance, one interface — a second interface breaks communication "
    "(every interface has its own L2 link to the gateway, and the gateway is always the first "
    "hop)";

struct BadConfig {
    const char* behaviour;  // the test name
    std::string_view text;
    std::vector<std::string> errors;
};

std::string second_port(std::string_view where, std::string_view instance) {
    return std::string{where} + ": instance '" + std::string{instance} + "' " +
           std::string{kSecondPort};
}

constexpr std::string_view kUplinkOverlap =
    "the uplink subnet and the networks share one routing table, so their addresses must not "
    "overlap";

const BadConfig kBadConfigs[] = {
    {"yaml_syntax_error_is_one_error_at_its_position",
     R"(
networks:
  - name: a
    kind: [public
)",
     {"bad.yaml:4:1: invalid YAML: end of sequence flow not found"}},

    // yaml-cpp 0.7 alone would hang (LoadAll) or read an empty file (Load) on this.
    {"stray_comma_before_the_configuration_is_a_syntax_error",
     R"(
,networks: []
)",
     {"bad.yaml:1:1: invalid YAML: unexpected ','"}},

    {"empty_file_is_rejected",
     "",
     {"bad.yaml:1:1: the configuration is empty; it must be a mapping with 'networks' and "
      "'instances'"}},

    {"top_level_must_be_a_mapping",
     R"(
- networks
)",
     {"bad.yaml:1:1: the configuration must be a mapping, got a list"}},

    {"second_yaml_document_is_rejected",
     R"(
networks: []
---
instances: []
)",
     {"bad.yaml:2:1: a configuration is one YAML document; this is a second one"}},

    {"unknown_top_level_key_suggests_the_closest_one",
     R"(
dataplan:
  workers: [1]
)",
     {"bad.yaml:1:1: unknown key 'dataplan' at the top level; did you mean 'dataplane'?"}},

    {"unknown_keys_in_every_section_are_all_reported",
     R"(
dataplane:
  colour: blue
control: {sockets: /run/c.sock}
metrics: {listen: 127.0.0.1:9469, path: /metrics}
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1, mtus: 1500}
instances:
  - name: web-1
    netwrk: pub
    network: pub
    mac: 52:54:00:00:01:01
    ipv4: 203.0.113.10
    port: {type: vhost-user, socket: /run/calyx/web-1.sock, queue: 2}
)",
     {"bad.yaml:2:3: unknown key 'colour' in dataplane",
      "bad.yaml:3:11: unknown key 'sockets' in control; did you mean 'socket'?",
      "bad.yaml:4:35: unknown key 'path' in metrics",
      "bad.yaml:6:75: unknown key 'mtus' in network; did you mean 'mtu'?",
      "bad.yaml:9:5: unknown key 'netwrk' in instance; did you mean 'network'?",
      "bad.yaml:13:61: unknown key 'queue' in port; did you mean 'queues'?"}},

    {"repeated_key_is_an_error_pointing_at_the_repeat",
     R"(
networks:
  - name: pub
    kind: public
    cidr: 203.0.113.0/24
    gateway: 203.0.113.1
    mtu: 1500
    mtu: 9000
)",
     {"bad.yaml:7:5: duplicate key 'mtu' in network (first at line 6)"}},

    {"wrong_node_types_name_the_expected_type",
     R"(
dataplane: [1]
control: /run/c.sock
networks:
  name: pub
instances:
)",
     {"bad.yaml:1:12: 'dataplane' must be a mapping, got a list",
      "bad.yaml:2:10: 'control' must be a mapping, got '/run/c.sock'",
      "bad.yaml:4:3: 'networks' must be a list, got a mapping",
      "bad.yaml:5:1: 'instances' must be a list, got an empty value"}},

    {"workers_must_be_distinct_non_main_lcores_below_128",
     R"(
dataplane:
  workers: [0, 1, 1, 128, two]
)",
     {"bad.yaml:2:13: lcore 0 is the main lcore, which does control only; workers must be other "
      "lcores",
      "bad.yaml:2:19: lcore 1 is listed twice in 'workers'",
      "bad.yaml:2:22: lcore 128 is out of range: lcore ids are below 128",
      "bad.yaml:2:27: entry of 'workers' must be an integer, got 'two'"}},

    {"workers_must_not_be_empty",
     R"(
dataplane:
  workers: []
)",
     {"bad.yaml:2:12: 'workers' must list at least one lcore"}},

    {"eal_args_must_not_allow_pci_devices",
     R"(
dataplane:
  eal_args: ["--no-huge", "-a", "0000:01:00.0", "--allow=0000:02:00.0", "-w0000:03:00.0"]
)",
     {"bad.yaml:2:27: eal_args must not contain '-a': PCI devices are given to calyx as the "
      "uplink port, never via eal_args (calyx passes -a with the address of a pci uplink, and "
      "--no-pci otherwise)",
      "bad.yaml:2:49: eal_args must not contain '--allow=0000:02:00.0': PCI devices are given "
      "to calyx as the uplink port, never via eal_args (calyx passes -a with the address of a "
      "pci uplink, and --no-pci otherwise)",
      "bad.yaml:2:73: eal_args must not contain '-w0000:03:00.0': PCI devices are given to "
      "calyx as the uplink port, never via eal_args (calyx passes -a with the address of a pci "
      "uplink, and --no-pci otherwise)"}},

    {"gateway_mac_must_be_unicast",
     R"(
dataplane:
  gateway_mac: 01:00:5e:00:00:01
)",
     {"bad.yaml:2:16: 'gateway_mac' 01:00:5e:00:00:01 is a multicast address; it must be unicast "
      "(lowest bit of the first byte clear)"}},

    {"icmp_limits_and_mbufs_are_range_checked",
     R"(
dataplane:
  gateway_mac: 00:00:00:00:00:00
  icmp_errors_per_second: 5000000000
  icmp_errors_burst: 0
  mbufs: 512
  idle_sleep_us: 10001
)",
     {"bad.yaml:2:16: 'gateway_mac' must not be the zero MAC address",
      "bad.yaml:3:27: 'icmp_errors_per_second' must be between 0 and 4294967295, got 5000000000",
      "bad.yaml:4:22: 'icmp_errors_burst' must be between 1 and 4294967295, got 0",
      "bad.yaml:5:10: 'mbufs' must be between 1023 and 4294967295, got 512",
      "bad.yaml:6:18: 'idle_sleep_us' must be between 0 and 10000, got 10001"}},

    {"state_file_must_be_an_absolute_file_path",
     R"(
dataplane:
  state_file: calyx.state
)",
     {"bad.yaml:2:15: 'state_file' must be an absolute path of a file, e.g. /dev/hugepages/calyx.state"}},

    {"control_socket_must_be_an_absolute_path",
     R"(
control:
  socket: run/calyx.sock
)",
     {"bad.yaml:2:11: 'socket' must be an absolute path, got 'run/calyx.sock'"}},

    {"metrics_listen_must_be_host_and_port",
     R"(
metrics:
  listen: 127.0.0.1:99999
)",
     {"bad.yaml:2:11: 'listen' must be HOST:PORT with HOST an IPv4 address or 'localhost' and "
      "PORT between 1 and 65535, got '127.0.0.1:99999'"}},

    {"network_missing_required_keys_points_at_the_network",
     R"(
networks:
  - name: pub
    kind: public
  - kind: nat
    cidr: 10.0.0.0/24
    gateway: 10.0.0.1
)",
     {"bad.yaml:2:5: network 'pub' is missing required key 'cidr'",
      "bad.yaml:2:5: network 'pub' is missing required key 'gateway'",
      "bad.yaml:4:5: network is missing required key 'name'"}},

    {"network_names_use_a_safe_charset_and_are_unique",
     R"(
networks:
  - {name: "my net", kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
  - {name: pub, kind: public, cidr: 198.51.100.0/24, gateway: 198.51.100.1}
  - {name: pub, kind: nat, cidr: 10.0.0.0/24, gateway: 10.0.0.1}
  - {name: "", kind: private, cidr: 10.1.0.0/24, gateway: 10.1.0.1}
)",
     {"bad.yaml:2:12: network name 'my net' may contain only letters, digits, '_', '.' and '-'",
      "bad.yaml:4:12: duplicate network name 'pub' (first at line 3)",
      "bad.yaml:5:12: network name must not be empty"}},

    {"network_kind_is_public_nat_or_private",
     R"(
networks:
  - {name: pub, kind: internet, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
)",
     {"bad.yaml:2:23: 'kind' must be public, nat or private, got 'internet'"}},

    {"cidr_must_be_a_prefix_without_host_bits",
     R"(
networks:
  - {name: a, kind: public, cidr: 203.0.113.1/24, gateway: 203.0.113.1}
  - {name: b, kind: public, cidr: 198.51.100.0, gateway: 198.51.100.1}
)",
     {"bad.yaml:2:35: 'cidr' 203.0.113.1/24 has host bits set; did you mean 203.0.113.0/24?",
      "bad.yaml:3:35: 'cidr' must be an IPv4 prefix like 192.0.2.0/24, got '198.51.100.0'"}},

    {"cidr_length_is_between_8_and_30_with_the_reason",
     R"(
networks:
  - {name: a, kind: public, cidr: 203.0.113.0/31, gateway: 203.0.113.1}
  - {name: b, kind: public, cidr: 64.0.0.0/2, gateway: 64.0.0.1}
)",
     {"bad.yaml:2:35: cidr 203.0.113.0/31 is too small: a network needs a network address, a "
      "gateway, at least one instance address and a broadcast address, so its prefix is at most "
      "/30",
      "bad.yaml:3:35: cidr 64.0.0.0/2 is too large: the whole cidr is routed to this network's "
      "instances, so a prefix shorter than /8 would capture a large share of all IPv4 "
      "destinations"}},

    {"cidr_must_not_be_loopback_or_multicast",
     R"(
networks:
  - {name: a, kind: private, cidr: 127.0.0.0/24, gateway: 127.0.0.1}
  - {name: b, kind: private, cidr: 239.1.0.0/16, gateway: 239.1.0.1}
)",
     {"bad.yaml:2:36: cidr 127.0.0.0/24 is inside 127.0.0.0/8 (loopback), which is never "
      "assigned to hosts",
      "bad.yaml:3:36: cidr 239.1.0.0/16 is inside 224.0.0.0/4 (multicast), which is never "
      "assigned to hosts"}},

    {"gateway_must_be_a_host_address_inside_the_cidr",
     R"(
networks:
  - {name: a, kind: public, cidr: 203.0.113.0/24, gateway: 198.51.100.1}
  - {name: b, kind: nat, cidr: 10.0.0.0/24, gateway: 10.0.0.0}
  - {name: c, kind: nat, cidr: 10.0.1.0/24, gateway: 10.0.1.255}
  - {name: d, kind: nat, cidr: 10.0.2.0/24, gateway: 10.0.2.300}
)",
     {"bad.yaml:2:60: gateway 198.51.100.1 is outside cidr 203.0.113.0/24",
      "bad.yaml:3:54: gateway 10.0.0.0 is the network address of 10.0.0.0/24",
      "bad.yaml:4:54: gateway 10.0.1.255 is the broadcast address of 10.0.1.0/24",
      "bad.yaml:5:54: 'gateway' must be an IPv4 address like 192.0.2.1, got '10.0.2.300'"}},

    {"any_two_overlapping_networks_are_rejected",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
  - {name: lan-a, kind: private, cidr: 10.0.0.0/16, gateway: 10.0.0.1}
  - {name: lan-b, kind: private, cidr: 10.0.5.0/24, gateway: 10.0.5.1}
  - {name: nat, kind: nat, cidr: 203.0.0.0/16, gateway: 203.0.0.1}
)",
     {"bad.yaml:4:40: cidr 10.0.5.0/24 overlaps 10.0.0.0/16 of network 'lan-a' (line 3): "
      "networks share one routing table, so their addresses must not overlap",
      "bad.yaml:5:34: cidr 203.0.0.0/16 overlaps 203.0.113.0/24 of network 'pub' (line 2): "
      "networks share one routing table, so their addresses must not overlap"}},

    {"optional_network_fields_are_validated",
     R"(
networks:
  - name: pub
    kind: public
    cidr: 203.0.113.0/24
    gateway: 203.0.113.1
    dns: [203.0.113.53, dns.example.org]
    domain: my_domain.org
    mtu: 100
    lease_seconds: 10
    routes: [198.51.100.0/24, 192.0.2.1/24, default]
)",
     {"bad.yaml:6:25: entry of 'dns' must be an IPv4 address like 192.0.2.1, got "
      "'dns.example.org'",
      "bad.yaml:7:13: 'domain' must be a DNS name (dot-separated labels of 1 to 63 letters, "
      "digits and '-'), got 'my_domain.org'",
      "bad.yaml:8:10: 'mtu' must be between 576 and 9000, got 100",
      "bad.yaml:9:20: 'lease_seconds' must be between 60 and 2147483648, got 10",
      "bad.yaml:10:31: route 192.0.2.1/24 has host bits set; did you mean 192.0.2.0/24?",
      "bad.yaml:10:45: route must be an IPv4 prefix like 192.0.2.0/24, got 'default'"}},

    {"integer_fields_reject_words_and_empty_values",
     R"(
networks:
  - name: pub
    kind: public
    cidr: 203.0.113.0/24
    gateway: 203.0.113.1
    mtu: jumbo
    lease_seconds:
    dns: 203.0.113.53
)",
     {"bad.yaml:6:10: 'mtu' must be an integer, got 'jumbo'",
      "bad.yaml:7:5: 'lease_seconds' must be an integer, got an empty value",
      "bad.yaml:8:10: 'dns' must be a list, got '203.0.113.53'"}},

    {"instance_missing_required_keys_points_at_the_instance",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - name: web-1
    network: pub
)",
     {"bad.yaml:4:5: instance 'web-1' is missing required key 'mac'",
      "bad.yaml:4:5: instance 'web-1' is missing required key 'ipv4'",
      "bad.yaml:4:5: instance 'web-1' is missing required key 'port'"}},

    {"instance_on_an_unknown_network_is_rejected",
     R"(
networks:
  - {name: public, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - name: web-1
    network: publc
    mac: 52:54:00:00:01:01
    ipv4: 203.0.113.10
    port: {type: vhost-user, socket: /run/calyx/web-1.sock}
  - name: web-2
    network: dmz
    mac: 52:54:00:00:01:02
    ipv4: 203.0.113.11
    port: {type: vhost-user, socket: /run/calyx/web-2.sock}
)",
     {"bad.yaml:5:14: unknown network 'publc'; did you mean 'public'?",
      "bad.yaml:10:14: unknown network 'dmz'"}},

    {"instance_mac_must_be_unicast_and_not_the_gateway_mac",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - {name: a, network: pub, mac: 33:33:00:00:00:01, ipv4: 203.0.113.10,
     port: {type: vhost-user, socket: /run/a.sock}}
  - {name: b, network: pub, mac: ee:ee:ee:ee:ee:ee, ipv4: 203.0.113.11,
     port: {type: vhost-user, socket: /run/b.sock}}
  - {name: c, network: pub, mac: 52:54:00:00:01, ipv4: 203.0.113.12,
     port: {type: vhost-user, socket: /run/c.sock}}
)",
     {"bad.yaml:4:34: 'mac' 33:33:00:00:00:01 is a multicast address; it must be unicast (lowest "
      "bit of the first byte clear)",
      "bad.yaml:6:34: mac ee:ee:ee:ee:ee:ee is the gateway MAC (dataplane.gateway_mac); an "
      "instance needs its own",
      "bad.yaml:8:34: 'mac' must be a MAC address like 52:54:00:00:01:01, got '52:54:00:00:01'"}},

    {"instance_ipv4_must_be_a_host_address_of_its_network",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - {name: a, network: pub, mac: 52:54:00:00:00:01, ipv4: 198.51.100.10,
     port: {type: vhost-user, socket: /run/a.sock}}
  - {name: b, network: pub, mac: 52:54:00:00:00:02, ipv4: 203.0.113.1,
     port: {type: vhost-user, socket: /run/b.sock}}
  - {name: c, network: pub, mac: 52:54:00:00:00:03, ipv4: 203.0.113.0,
     port: {type: vhost-user, socket: /run/c.sock}}
  - {name: d, network: pub, mac: 52:54:00:00:00:04, ipv4: 203.0.113.255,
     port: {type: vhost-user, socket: /run/d.sock}}
)",
     {"bad.yaml:4:59: ipv4 198.51.100.10 is outside network 'pub' (203.0.113.0/24)",
      "bad.yaml:6:59: ipv4 203.0.113.1 is the gateway address of network 'pub'",
      "bad.yaml:8:59: ipv4 203.0.113.0 is the network address of 203.0.113.0/24",
      "bad.yaml:10:59: ipv4 203.0.113.255 is the broadcast address of 203.0.113.0/24"}},

    {"instance_mac_ipv4_and_socket_are_unique",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - {name: a, network: pub, mac: 52:54:00:00:00:01, ipv4: 203.0.113.10,
     port: {type: vhost-user, socket: /run/a.sock}}
  - {name: b, network: pub, mac: 52:54:00:00:00:01, ipv4: 203.0.113.10,
     port: {type: vhost-user, socket: /run/a.sock}}
)",
     {"bad.yaml:6:34: mac 52:54:00:00:00:01 is already used by instance 'a' (line 4)",
      "bad.yaml:6:59: ipv4 203.0.113.10 is already used by instance 'a' (line 4)",
      "bad.yaml:7:39: socket /run/a.sock is already used by instance 'a' (line 4)"}},

    {"instance_names_are_unique",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - {name: a, network: pub, mac: 52:54:00:00:00:01, ipv4: 203.0.113.10,
     port: {type: vhost-user, socket: /run/a.sock}}
  - {name: a, network: pub, mac: 52:54:00:00:00:01, ipv4: 203.0.113.10,
     port: {type: vhost-user, socket: /run/a.sock}}
  - {name: "a/b", network: pub, mac: 52:54:00:00:00:03, ipv4: 203.0.113.12,
     port: {type: vhost-user, socket: /run/c.sock}}
)",
     {"bad.yaml:6:12: duplicate instance name 'a' (first at line 4)",
      "bad.yaml:8:12: instance name 'a/b' may contain only letters, digits, '_', '.' and '-'"}},

    {"instance_port_fields_are_validated",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - name: a
    network: pub
    mac: 52:54:00:00:00:01
    ipv4: 203.0.113.10
    port: {type: vhost-user, socket: /run/calyx/calyx.sock, mode: listen, queues: 9}
  - name: b
    network: pub
    mac: 52:54:00:00:00:02
    ipv4: 203.0.113.11
    port: {type: vhost-user, socket: b.sock}
  - name: c
    network: pub
    mac: 52:54:00:00:00:03
    ipv4: 203.0.113.12
    port: {type: vhost-user}
)",
     {"bad.yaml:8:38: socket /run/calyx/calyx.sock is the control socket (control.socket)",
      "bad.yaml:8:67: 'mode' must be server, client, or the socket file's mode in octal (e.g. \"0660\"), got 'listen'",
      "bad.yaml:8:83: 'queues' must be between 1 and 8, got 9",
      "bad.yaml:13:38: 'socket' must be an absolute path, got 'b.sock'",
      "bad.yaml:18:11: port is missing required key 'socket'"}},

    {"uplink_port_types_are_refused_for_instances",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - {name: a, network: pub, mac: 52:54:00:00:00:01, ipv4: 203.0.113.10,
     port: {type: tap, socket: /run/a.sock}}
  - {name: b, network: pub, mac: 52:54:00:00:00:02, ipv4: 203.0.113.11,
     port: {type: virtio, socket: /run/b.sock}}
)",
     {"bad.yaml:5:19: port type 'tap' is for the uplink, not for instances: instances attach "
      "over vhost-user",
      "bad.yaml:7:19: port type 'virtio' is unknown; instances attach over 'vhost-user'"}},

    {"instance_with_a_ports_list_has_a_second_port",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - name: web-1
    network: pub
    mac: 52:54:00:00:01:01
    ipv4: 203.0.113.10
    ports:
      - {type: vhost-user, socket: /run/calyx/web-1.sock}
      - {type: vhost-user, socket: /run/calyx/web-1b.sock}
)",
     {second_port("bad.yaml:10:9", "web-1")}},

    {"instance_with_a_repeated_port_key_has_a_second_port",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - name: web-1
    network: pub
    mac: 52:54:00:00:01:01
    ipv4: 203.0.113.10
    port: {type: vhost-user, socket: /run/calyx/web-1.sock}
    port: {type: vhost-user, socket: /run/calyx/web-1b.sock}
)",
     {second_port("bad.yaml:9:5", "web-1")}},

    {"instance_with_a_list_of_ports_under_port_has_a_second_port",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - name: web-1
    network: pub
    mac: 52:54:00:00:01:01
    ipv4: 203.0.113.10
    port: [{type: vhost-user, socket: /a.sock}, {type: vhost-user, socket: /b.sock}]
)",
     {second_port("bad.yaml:8:49", "web-1")}},

    {"instance_listed_again_with_another_port_has_a_second_port",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - name: web-1
    network: pub
    mac: 52:54:00:00:01:01
    ipv4: 203.0.113.10
    port: {type: vhost-user, socket: /run/calyx/web-1.sock}
  - name: web-1
    network: pub
    mac: 52:54:00:00:01:02
    ipv4: 203.0.113.11
    port: {type: vhost-user, socket: /run/calyx/web-1-eth1.sock}
)",
     {second_port("bad.yaml:13:11", "web-1")}},

    {"a_single_entry_ports_list_is_an_unknown_key",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - name: web-1
    network: pub
    mac: 52:54:00:00:01:01
    ipv4: 203.0.113.10
    ports: [{type: vhost-user, socket: /run/calyx/web-1.sock}]
)",
     {"bad.yaml:8:5: unknown key 'ports' in instance; did you mean 'port'?"}},

    {"security_groups_must_be_a_list_of_names",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - name: web-1
    network: pub
    mac: 52:54:00:00:01:01
    ipv4: 203.0.113.10
    port: {type: vhost-user, socket: /run/calyx/web-1.sock}
    security_groups: web
)",
     {"bad.yaml:9:22: 'security_groups' must be a list, got 'web'"}},

    // Protocol numbers with a name count as that name; no protocol means any.
    {"ports_need_protocol_tcp_or_udp",
     R"(
security_groups:
  - name: web
    rules:
      - {direction: ingress, protocol: icmp, ports: 443}
      - {direction: ingress, protocol: any, ports: 443}
      - {direction: ingress, ports: 443}
      - {direction: ingress, protocol: 47, ports: 443}
      - {direction: ingress, protocol: 6, ports: 443}
      - {direction: ingress, protocol: udp, ports: 53}
)",
     {"bad.yaml:4:53: ports need protocol tcp or udp, not icmp",
      "bad.yaml:5:52: ports need protocol tcp or udp, not any",
      "bad.yaml:6:37: ports need protocol tcp or udp, not any",
      "bad.yaml:7:51: ports need protocol tcp or udp, not 47"}},

    {"port_ranges_are_ordered_and_within_1_to_65535",
     R"(
security_groups:
  - name: web
    rules:
      - {direction: ingress, protocol: tcp, ports: "8080-8000"}
      - {direction: ingress, protocol: tcp, ports: 0}
      - {direction: ingress, protocol: tcp, ports: 70000}
      - {direction: ingress, protocol: udp, ports: 0-80}
      - {direction: ingress, protocol: udp, ports: http}
      - {direction: ingress, protocol: udp, ports: [80, 443]}
      - {direction: ingress, protocol: udp, ports: 80-90-100}
)",
     {"bad.yaml:4:52: 'ports' range 8080-8000 is reversed; did you mean 8000-8080?",
      "bad.yaml:5:52: 'ports' must be between 1 and 65535, got 0",
      "bad.yaml:6:52: 'ports' must be between 1 and 65535, got 70000",
      "bad.yaml:7:52: 'ports' must be between 1 and 65535 at both ends, got 0-80",
      "bad.yaml:8:52: 'ports' must be a port like 443 or a range like 8000-8080, got 'http'",
      "bad.yaml:9:52: 'ports' must be a port like 443 or a range like 8000-8080, got a list",
      "bad.yaml:10:52: 'ports' must be a port like 443 or a range like 8000-8080, got "
      "'80-90-100'"}},

    {"icmp_type_and_code_need_protocol_icmp_and_code_needs_type",
     R"(
security_groups:
  - name: web
    rules:
      - {direction: ingress, protocol: tcp, icmp_type: 8}
      - {direction: ingress, protocol: icmp, icmp_code: 0}
      - {direction: ingress, protocol: icmp, icmp_type: 256}
      - {direction: ingress, protocol: udp, icmp_code: 1}
      - {direction: ingress, icmp_type: 3}
)",
     {"bad.yaml:4:56: icmp_type needs protocol icmp, not tcp",
      "bad.yaml:5:57: icmp_code needs icmp_type",
      "bad.yaml:6:57: 'icmp_type' must be between 0 and 255, got 256",
      "bad.yaml:7:56: icmp_code needs protocol icmp, not udp",
      "bad.yaml:8:41: icmp_type needs protocol icmp, not any"}},

    // A rule may name a group defined after it, and its own group.
    {"remote_group_must_name_a_defined_group",
     R"(
security_groups:
  - name: web
    rules:
      - {direction: ingress, protocol: tcp, ports: 443, remote_group: frontend}
      - {direction: ingress, protocol: tcp, ports: 22, remote_group: admins}
      - {direction: ingress, remote_group: web}
      - {direction: ingress, remote_group: frontends}
  - name: frontends
)",
     {"bad.yaml:4:71: unknown security group 'frontend'; did you mean 'frontends'?",
      "bad.yaml:5:70: unknown security group 'admins'"}},

    {"remote_and_remote_group_are_mutually_exclusive",
     R"(
security_groups:
  - name: web
    rules:
      - {direction: ingress, remote: 10.0.0.0/8, remote_group: web}
      - direction: egress
        remote_group: web
        remote: 10.0.0.0/8
)",
     {"bad.yaml:4:64: remote and remote_group are mutually exclusive",
      "bad.yaml:7:17: remote and remote_group are mutually exclusive"}},

    {"remote_must_be_a_cidr_without_host_bits",
     R"(
security_groups:
  - name: web
    rules:
      - {direction: ingress, remote: 10.0.0.1/8}
      - {direction: ingress, remote: 10.0.0.1}
      - {direction: ingress, remote: 10.0.0.0/33}
)",
     {"bad.yaml:4:38: 'remote' 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?",
      "bad.yaml:5:38: 'remote' must be an IPv4 prefix like 192.0.2.0/24, got '10.0.0.1'",
      "bad.yaml:6:38: 'remote' must be an IPv4 prefix like 192.0.2.0/24, got '10.0.0.0/33'"}},

    {"rule_direction_is_required_ingress_or_egress",
     R"(
security_groups:
  - name: web
    rules:
      - {direction: inbound}
      - {direction: ingres}
      - {protocol: tcp}
)",
     {"bad.yaml:4:21: 'direction' must be ingress or egress, got 'inbound'",
      "bad.yaml:5:21: 'direction' must be ingress or egress, got 'ingres'; did you mean 'ingress'?",
      "bad.yaml:6:9: rule of security group 'web' is missing required key 'direction'"}},

    {"rule_protocol_is_a_name_or_a_number_up_to_255",
     R"(
security_groups:
  - name: web
    rules:
      - {direction: ingress, protocol: tpc}
      - {direction: ingress, protocol: gre}
      - {direction: ingress, protocol: 300}
      - {direction: ingress, protocol: 300, ports: 80}
      - {direction: ingress, protocol:}
)",
     {"bad.yaml:4:40: 'protocol' must be tcp, udp, icmp, any or a number between 0 and 255, got "
      "'tpc'; did you mean 'tcp'?",
      "bad.yaml:5:40: 'protocol' must be tcp, udp, icmp, any or a number between 0 and 255, got "
      "'gre'",
      "bad.yaml:6:40: 'protocol' must be between 0 and 255, got 300",
      "bad.yaml:7:40: 'protocol' must be between 0 and 255, got 300",
      "bad.yaml:8:30: 'protocol' must be tcp, udp, icmp, any or a number between 0 and 255, got an "
      "empty value"}},

    {"unknown_and_repeated_keys_in_a_rule_are_rejected",
     R"(
security_groups:
  - name: web
    rules:
      - {direction: ingress, protocol: tcp, port: 443}
      - {direction: ingress, remote_groups: web}
      - direction: ingress
        direction: egress
    rule: []
)",
     {"bad.yaml:4:45: unknown key 'port' in rule; did you mean 'ports'?",
      "bad.yaml:5:30: unknown key 'remote_groups' in rule; did you mean 'remote_group'?",
      "bad.yaml:7:9: duplicate key 'direction' in rule (first at line 6)",
      "bad.yaml:8:5: unknown key 'rule' in security group; did you mean 'rules'?"}},

    {"security_group_names_are_unique_and_use_a_safe_charset",
     R"(
security_groups:
  - name: web
  - name: web
  - name: "web servers"
  - rules: []
)",
     {"bad.yaml:3:11: duplicate security group name 'web' (first at line 2)",
      "bad.yaml:4:11: security group name 'web servers' may contain only letters, digits, '_', '.' "
      "and '-'",
      "bad.yaml:5:5: security group is missing required key 'name'"}},

    {"security_groups_wrong_types",
     R"(
security_groups:
  - web
  - name: db
    rules: {direction: ingress}
  - name: app
    rules: [ingress]
)",
     {"bad.yaml:2:5: entry of 'security_groups' must be a mapping, got 'web'",
      "bad.yaml:4:12: 'rules' must be a list, got a mapping",
      "bad.yaml:6:13: entry of 'rules' must be a mapping, got 'ingress'"}},

    {"instance_security_groups_must_name_defined_groups_once",
     R"(
networks:
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
instances:
  - name: web-1
    network: pub
    mac: 52:54:00:00:01:01
    ipv4: 203.0.113.10
    port: {type: vhost-user, socket: /run/calyx/web-1.sock}
    security_groups: [web, ssh, webb, web]
security_groups:
  - name: web
)",
     {"bad.yaml:9:28: unknown security group 'ssh'",
      "bad.yaml:9:33: unknown security group 'webb'; did you mean 'web'?",
      "bad.yaml:9:39: security group 'web' is listed twice in 'security_groups'"}},

    {"conntrack_capacity_is_between_1024_and_2_to_the_27",
     R"(
dataplane:
  conntrack: {capacity: 1000}
)",
     {"bad.yaml:2:25: 'capacity' must be between 1024 and 134217728, got 1000"}},

    {"conntrack_capacity_too_large",
     R"(
dataplane:
  conntrack: {capacity: 134217729}
)",
     {"bad.yaml:2:25: 'capacity' must be between 1024 and 134217728, got 134217729"}},

    {"conntrack_timeouts_are_known_keys_of_positive_seconds",
     R"(
dataplane:
  conntrack:
    tcp_establshed: 3600
    tcp_syn_sent: 0
    udp_replied: -1
    timeouts: {icmp: 30}
    icmp: 30
    icmp: 60
)",
     {"bad.yaml:3:5: unknown key 'tcp_establshed' in conntrack; did you mean 'tcp_established'?",
      "bad.yaml:4:19: 'tcp_syn_sent' must be between 1 and 4294967295, got 0",
      "bad.yaml:5:18: 'udp_replied' must be an integer, got '-1'",
      "bad.yaml:6:5: unknown key 'timeouts' in conntrack",
      "bad.yaml:8:5: duplicate key 'icmp' in conntrack (first at line 7)"}},

    {"conntrack_must_be_a_mapping",
     R"(
dataplane:
  conntrack: 65536
)",
     {"bad.yaml:2:14: 'conntrack' must be a mapping, got '65536'"}},

    {"every_error_in_a_file_is_reported_at_once_in_file_order",
     R"(
dataplane:
  workers: [0]
instances:
  - name: web-1
    network: pub
    mac: 52:54:00:00:01:01
    ipv4: 10.0.0.1
    port: {type: pci, socket: /run/calyx/web-1.sock}
networks:
  - {name: pub, kind: public, cidr: 10.0.0.0/24, gateway: 10.0.0.1, mtu: 10000}
  - {name: lan, kind: privat, cidr: 10.0.0.128/25, gateway: 10.0.0.129}
)",
     {"bad.yaml:2:13: lcore 0 is the main lcore, which does control only; workers must be other "
      "lcores",
      "bad.yaml:7:11: ipv4 10.0.0.1 is the gateway address of network 'pub'",
      "bad.yaml:8:18: port type 'pci' is for the uplink, not for instances: instances attach "
      "over vhost-user",
      "bad.yaml:10:74: 'mtu' must be between 576 and 9000, got 10000",
      "bad.yaml:11:23: 'kind' must be public, nat or private, got 'privat'; did you mean 'private'?",
      "bad.yaml:11:37: cidr 10.0.0.128/25 overlaps 10.0.0.0/24 of network 'pub' (line 10): "
      "networks share one routing table, so their addresses must not overlap"}},

    // --- uplink ---
    {"uplink_must_be_a_mapping",
     R"(
uplink:
)",
     {"bad.yaml:1:1: 'uplink' must be a mapping, got an empty value"}},

    {"uplink_port_type_is_required",
     R"(
uplink:
  port: {name: calyx-up}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:2:9: uplink port is missing required key 'type'"}},

    {"uplink_port_type_unknown_suggests_the_closest_one",
     R"(
uplink:
  port: {type: af-packet, iface: eth1}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:2:16: 'type' must be tap, af_packet, pci or vhost-user, got 'af-packet'; did you "
      "mean 'af_packet'?"}},

    {"uplink_queues_are_at_least_one_per_worker",
     R"(
dataplane: {workers: [1, 2, 3]}
uplink:
  port: {type: tap, name: calyx-up, queues: 2}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:3:45: 'queues' is 2 but dataplane.workers lists 3 workers, each of which transmits on "
      "an uplink queue of its own: at least 3"}},

    {"vhost_user_uplink_takes_a_socket_not_a_name",
     R"(
uplink:
  port: {type: vhost-user, name: calyx-up}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:2:9: vhost-user port is missing required key 'socket'",
      "bad.yaml:2:28: unknown key 'name' in vhost-user port; did you mean 'socket'?"}},

    {"vhost_user_uplink_socket_is_not_an_instance_socket",
     R"(
uplink:
  port: {type: vhost-user, socket: /run/calyx/a.sock}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
networks:
  - {name: n, kind: public, cidr: 10.0.0.0/24, gateway: 10.0.0.1}
instances:
  - name: a
    network: n
    mac: 52:54:00:00:00:01
    ipv4: 10.0.0.2
    port: {type: vhost-user, socket: /run/calyx/a.sock}
)",
     {"bad.yaml:12:38: socket /run/calyx/a.sock is already used by the uplink (line 2)"}},

    {"tap_uplink_needs_a_name",
     R"(
uplink:
  port:
    type: tap
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:3:5: tap port is missing required key 'name'"}},

    {"tap_name_is_at_most_15_bytes",
     R"(
uplink:
  port: {type: tap, name: calyx-uplink-0001}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:2:27: 'name' is 17 bytes long; a Linux interface name holds at most 15"}},

    {"af_packet_iface_is_a_linux_interface_name",
     R"(
uplink:
  port: {type: af_packet, iface: "eth0/1"}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:2:34: 'iface' must be a Linux interface name without '/', ':', ',' or "
      "whitespace, got 'eth0/1'"}},

    {"iface_with_a_tap_port_is_an_unknown_key",
     R"(
uplink:
  port:
    type: tap
    iface: calyx-up
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:3:5: tap port is missing required key 'name'",
      "bad.yaml:4:5: unknown key 'iface' in tap port; did you mean 'name'?"}},

    {"other_types_device_keys_and_typos_are_unknown_keys_of_the_type",
     R"(
uplink:
  port:
    type: pci
    adress: "0000:01:00.0"
    name: eth1
    queues: 9
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:3:5: pci port is missing required key 'address'",
      "bad.yaml:4:5: unknown key 'adress' in pci port; did you mean 'address'?",
      "bad.yaml:5:5: unknown key 'name' in pci port; did you mean 'address'?",
      "bad.yaml:6:13: 'queues' must be between 1 and 8, got 9"}},

    {"pci_address_is_dddd_bb_dd_f",
     R"(
uplink:
  port: {type: pci, address: "0000:01:00"}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:2:30: 'address' must be a PCI address like 0000:01:00.0, got '0000:01:00'"}},

    {"pci_device_is_at_most_1f_and_function_at_most_7",
     R"(
uplink:
  port: {type: pci, address: "0000:01:20.0"}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:2:30: 'address' 0000:01:20.0 is not a PCI address: the device is at most 1f and "
      "the function at most 7"}},

    {"uplink_address_needs_its_prefix_length",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.10
  gateway: 198.51.100.1
)",
     {"bad.yaml:3:12: 'address' 198.51.100.10 has no prefix length; write it with its subnet's, "
      "like 198.51.100.10/24"}},

    {"uplink_address_is_not_the_network_address",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.0/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:3:12: address 198.51.100.0 is the network address of 198.51.100.0/24"}},

    {"uplink_address_is_not_the_broadcast_address",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.255/24
  gateway: 198.51.100.1
)",
     {"bad.yaml:3:12: address 198.51.100.255 is the broadcast address of 198.51.100.0/24"}},

    {"uplink_prefix_length_is_between_8_and_30",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.10/31
  gateway: 198.51.100.11
)",
     {"bad.yaml:3:12: uplink subnet 198.51.100.10/31 is too small: it needs a network address, "
      "the host's address, the gateway and a broadcast address, so its prefix is at most /30"}},

    {"uplink_address_is_not_loopback",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 127.0.0.2/8
  gateway: 127.0.0.1
)",
     {"bad.yaml:3:12: address 127.0.0.2 is inside 127.0.0.0/8 (loopback), which is never "
      "assigned to hosts"}},

    {"uplink_address_is_not_inside_an_instance_network",
     R"(
networks:
  - {name: lan, kind: nat, cidr: 10.0.0.0/16, gateway: 10.0.0.1}
uplink:
  port: {type: tap, name: calyx-up}
  address: 10.0.3.5/24
  gateway: 10.0.3.1
)",
     {"bad.yaml:5:12: address 10.0.3.5 is inside network 'lan' (10.0.0.0/16, line 2): " +
      std::string{kUplinkOverlap}}},

    {"uplink_address_is_not_a_network_gateway",
     R"(
networks:
  - {name: lan, kind: nat, cidr: 10.0.0.0/24, gateway: 10.0.0.1}
uplink:
  port: {type: tap, name: calyx-up}
  address: 10.0.0.1/24
  gateway: 10.0.0.254
)",
     {"bad.yaml:5:12: address 10.0.0.1 is the gateway address of network 'lan'"}},

    // The uplink is checked against every network, also those after it in the file.
    {"uplink_subnet_and_instance_networks_do_not_overlap",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 10.200.0.10/8
  gateway: 10.200.0.1
networks:
  - {name: lan, kind: private, cidr: 10.1.0.0/16, gateway: 10.1.0.1}
  - {name: pub, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
)",
     {"bad.yaml:3:12: uplink subnet 10.0.0.0/8 overlaps 10.1.0.0/16 of network 'lan' (line 6): " +
      std::string{kUplinkOverlap}}},

    {"uplink_gateway_is_inside_the_uplink_subnet",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.10/24
  gateway: 192.0.2.1
)",
     {"bad.yaml:4:12: gateway 192.0.2.1 is outside the uplink subnet 198.51.100.0/24"}},

    {"uplink_gateway_is_not_the_uplink_address",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.10/24
  gateway: 198.51.100.10
)",
     {"bad.yaml:4:12: gateway 198.51.100.10 is the uplink address itself; it must be the "
      "upstream router's"}},

    {"nat_ports_range_is_not_reversed",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
  nat_ports: "59999-20000"
)",
     {"bad.yaml:5:14: 'nat_ports' range 59999-20000 is reversed; did you mean 20000-59999?"}},

    {"nat_ports_are_at_least_1024",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
  nat_ports: 1000-2000
)",
     {"bad.yaml:5:14: 'nat_ports' must be between 1024 and 65535 at both ends, got 1000-2000"}},

    {"nat_ports_range_has_at_least_64_ports",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
  nat_ports: "20000-20062"
)",
     {"bad.yaml:5:14: 'nat_ports' range 20000-20062 has only 63 ports; masquerade needs at least "
      "64"}},

    {"nat_ports_is_a_range",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.10/24
  gateway: 198.51.100.1
  nat_ports: 30000
)",
     {"bad.yaml:5:14: 'nat_ports' must be a port range like 20000-59999, got '30000'"}},

    {"unknown_key_in_uplink_suggests_the_closest_one",
     R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.10/24
  gatway: 198.51.100.1
)",
     {"bad.yaml:2:3: uplink is missing required key 'gateway'",
      "bad.yaml:4:3: unknown key 'gatway' in uplink; did you mean 'gateway'?"}},
};

void PrintTo(const BadConfig& row, std::ostream* os) {
    *os << row.behaviour;
}

class BadConfigTest : public testing::TestWithParam<BadConfig> {};

TEST_P(BadConfigTest, IsRejectedWithExactErrors) {
    EXPECT_EQ(error_lines(GetParam().text), GetParam().errors);
}

INSTANTIATE_TEST_SUITE_P(Config, BadConfigTest, testing::ValuesIn(kBadConfigs),
                         [](const testing::TestParamInfo<BadConfig>& info) {
                             return std::string{info.param.behaviour};
                         });

}  // namespace
}  // namespace calyx::config
