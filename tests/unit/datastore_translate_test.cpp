// networking-calico's keys -> the site model: the fixtures of tests/etcd (the exact bytes
// networking-calico writes) become networks, security groups and instances, and every key calyx
// cannot apply is reported by its path while the rest applies.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "calyx/headers.hpp"
#include "cp/datastore/keys.hpp"
#include "cp/policy_compiler.hpp"
#include "cp/datastore/selector.hpp"
#include "cp/datastore/translate.hpp"
#include "support/calico_shapes.hpp"

namespace calyx::cp::datastore {
namespace {

namespace calico = test::calico;

const std::string kFixtures = std::string(CALYX_SOURCE_ROOT) + "/tests/etcd/fixtures/";
const std::string kEndpoints = "/calico/resources/v3/projectcalico.org/workloadendpoints/openstack/";
const std::string kPolicies = "/calico/resources/v3/projectcalico.org/networkpolicies/openstack/";

// The seed's site (tests/etcd/networking_calico_shapes.py).
const std::string kNetPublic = "3b1f5a4e-7c2d-4e8f-9a6b-1c2d3e4f5a01";
const std::string kNetNat = "3b1f5a4e-7c2d-4e8f-9a6b-1c2d3e4f5a02";
const std::string kNetPrivate = "3b1f5a4e-7c2d-4e8f-9a6b-1c2d3e4f5a03";
const std::string kSubnetPublic = "9d8c7b6a-5f4e-4d3c-8b2a-0f1e2d3c4b01";
const std::string kSubnetNat = "9d8c7b6a-5f4e-4d3c-8b2a-0f1e2d3c4b02";
const std::string kSubnetPrivate = "9d8c7b6a-5f4e-4d3c-8b2a-0f1e2d3c4b03";
const std::string kSgWeb = "a1b2c3d4-0001-4a5b-8c6d-7e8f90a1b2c3";
const std::string kSgApp = "a1b2c3d4-0002-4a5b-8c6d-7e8f90a1b2c3";
const std::string kSgDb = "a1b2c3d4-0003-4a5b-8c6d-7e8f90a1b2c3";
const std::string kPortWeb = "c0ffee01-0001-4b2c-9d3e-4f5a6b7c8d01";
const std::string kPortApp = "c0ffee02-0002-4b2c-9d3e-4f5a6b7c8d02";
const std::string kPortDb = "c0ffee03-0003-4b2c-9d3e-4f5a6b7c8d03";
const std::string kPortRemote = "c0ffee04-0004-4b2c-9d3e-4f5a6b7c8d04";

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// site.keys: "key<TAB>value" lines; each key is created one revision after the previous.
Store load_site() {
    Store store;
    std::istringstream lines(read_file(kFixtures + "site.keys"));
    std::string line;
    int64_t revision = 10;
    while (std::getline(lines, line)) {
        const size_t tab = line.find('\t');
        store[line.substr(0, tab)] = KeyValue{line.substr(tab + 1), revision, revision};
        ++revision;
    }
    return store;
}

config::Config compute1() {
    config::Config local;
    local.host = "compute-1";
    local.datastore.type = config::DatastoreType::etcd;
    local.datastore.networks = {{kNetPublic, NetworkKind::public_, 1450, {}}, {kNetNat, NetworkKind::nat, 1500, {}}};
    return local;
}

const config::InstanceConfig* find(const Site& site, const std::string& name) {
    for (const auto& i : site.instances)
        if (i.name == name) return &i;
    return nullptr;
}
const config::SecurityGroupConfig* group(const Site& site, const std::string& name) {
    for (const auto& g : site.security_groups)
        if (g.name == name) return &g;
    return nullptr;
}

std::vector<std::string> problem_lines(const Site& site) {
    std::vector<std::string> out;
    for (const auto& p : site.problems) out.push_back(p.to_string());
    return out;
}

std::string endpoint_key(const std::string& host, const std::string& device, const std::string& port) {
    return kEndpoints + calico::endpoint_name({host, device, port, "", "", "", "", {}});
}

// ---------------------------------------------------------------------------------------------

TEST(DatastoreTranslate, TheSeedSiteBecomesNetworksGroupsAndInstances) {
    const Site site = translate(load_site(), compute1());
    EXPECT_EQ(problem_lines(site), std::vector<std::string>{});
    EXPECT_EQ(site.counts, (Site::Counts{.endpoints = 4, .policies = 3, .subnets = 3, .ipv6_skipped = 1}));

    ASSERT_EQ(site.networks.size(), 3u);
    const config::NetworkConfig& pub = site.networks[0];
    EXPECT_EQ(pub.name, kSubnetPublic);
    EXPECT_EQ(pub.kind, NetworkKind::public_);
    EXPECT_EQ(pub.cidr.to_string(), "203.0.113.0/24");
    EXPECT_EQ(pub.gateway.to_string(), "203.0.113.1");
    ASSERT_EQ(pub.dns.size(), 1u);
    EXPECT_EQ(pub.dns[0].to_string(), "203.0.113.53");
    ASSERT_EQ(pub.routes.size(), 1u);
    EXPECT_EQ(pub.routes[0].to_string(), "198.51.100.0/24");
    EXPECT_EQ(pub.mtu, 1450);
    EXPECT_EQ(pub.where.file, "/calico/dhcp/v2/no-region/subnet/" + kSubnetPublic);
    EXPECT_EQ(site.networks[1].name, kSubnetNat);
    EXPECT_EQ(site.networks[1].kind, NetworkKind::nat);
    // From the v1 tree, of a network datastore.networks does not list: private.
    EXPECT_EQ(site.networks[2].name, kSubnetPrivate);
    EXPECT_EQ(site.networks[2].kind, NetworkKind::private_);
    EXPECT_EQ(site.networks[2].where.file, "/calico/dhcp/v1/subnet/" + kSubnetPrivate);

    ASSERT_EQ(site.security_groups.size(), 3u);
    const config::SecurityGroupConfig* web = group(site, kSgWeb);
    ASSERT_TRUE(web);
    EXPECT_EQ(web->where.file, kPolicies + "ossg.default." + kSgWeb);
    ASSERT_EQ(web->rules.size(), 3u);  // the IPv6 egress rule is skipped
    const config::RuleConfig& https = web->rules[0];
    EXPECT_EQ(https.direction, config::RuleDirection::ingress);
    EXPECT_EQ(https.protocol, ipproto::kTcp);
    EXPECT_EQ(https.port_min, 443);
    EXPECT_EQ(https.port_max, 443);
    EXPECT_EQ(https.remote, Ipv4Prefix{});
    EXPECT_FALSE(https.remote_group);
    EXPECT_EQ(https.where.file, kPolicies + "ossg.default." + kSgWeb + " spec.ingress[0]");
    EXPECT_EQ(https.where.line, 0);
    const config::RuleConfig& out = web->rules[2];
    EXPECT_EQ(out.direction, config::RuleDirection::egress);
    EXPECT_FALSE(out.protocol);
    EXPECT_EQ(out.remote, Ipv4Prefix{});
    EXPECT_EQ(out.where.file, kPolicies + "ossg.default." + kSgWeb + " spec.egress[0]");

    const config::SecurityGroupConfig* app = group(site, kSgApp);
    ASSERT_TRUE(app);
    ASSERT_EQ(app->rules.size(), 5u);
    EXPECT_EQ(app->rules[1].remote_group, kSgDb);
    EXPECT_EQ(app->rules[1].port_min, 4545);
    EXPECT_EQ(app->rules[2].protocol, ipproto::kIcmp);
    EXPECT_EQ(app->rules[2].icmp_type, 8);
    EXPECT_EQ(app->rules[2].icmp_code, 0);
    EXPECT_EQ(app->rules[2].remote_group, kSgApp);
    EXPECT_EQ(app->rules[4].direction, config::RuleDirection::egress);
    EXPECT_EQ(app->rules[4].protocol, ipproto::kUdp);
    EXPECT_EQ(app->rules[4].port_min, 5000);
    EXPECT_EQ(app->rules[4].port_max, 5010);
    EXPECT_EQ(app->rules[4].remote_group, kSgWeb);

    ASSERT_EQ(site.instances.size(), 4u);
    const config::InstanceConfig* w = find(site, kPortWeb);
    ASSERT_TRUE(w);
    EXPECT_EQ(w->host, "compute-1");
    EXPECT_EQ(w->network, kSubnetPublic);
    EXPECT_EQ(w->mac.to_string(), "52:54:00:00:01:01");
    EXPECT_EQ(w->ipv4.to_string(), "203.0.113.10");
    EXPECT_EQ(w->port.socket, "/run/calyx/tapc0ffee01-00.sock");
    EXPECT_EQ(w->port.mode, config::VhostMode::server);
    EXPECT_EQ(w->security_groups, std::vector<std::string>{kSgWeb});
    EXPECT_EQ(w->where.file, endpoint_key("compute-1", "d0000001-1111-4222-8333-944455556661", kPortWeb));
    const config::InstanceConfig* db = find(site, kPortDb);
    ASSERT_TRUE(db);
    EXPECT_EQ(db->network, kSubnetPrivate);
    // Another host's endpoint: known for routing checks and remote_group, no port here.
    const config::InstanceConfig* remote = find(site, kPortRemote);
    ASSERT_TRUE(remote);
    EXPECT_EQ(remote->host, "compute-2");
    EXPECT_EQ(remote->port.socket, "");
    EXPECT_EQ(remote->security_groups, std::vector<std::string>{kSgDb});

    ASSERT_EQ(site.local_endpoints.size(), 3u);
    EXPECT_EQ(site.local_endpoints[0].instance, kPortWeb);
    EXPECT_EQ(site.local_endpoints[0].status_key,
              "/calico/felix/v2/no-region/host/compute-1/workload/openstack/"
              "openstack%2fd0000001-1111-4222-8333-944455556661/endpoint/" +
                  kPortWeb);

    const config::Config cfg = with_site(compute1(), site);
    EXPECT_EQ(cfg.instances.size(), 4u);
    EXPECT_EQ(cfg.local_instances().size(), 3u);
    EXPECT_EQ(cfg.networks.size(), 3u);
    EXPECT_EQ(cfg.security_groups.size(), 3u);
}

TEST(DatastoreTranslate, OnAnotherHostTheSameKeysGiveItsOwnPorts) {
    config::Config local = compute1();
    local.host = "compute-2";
    const Site site = translate(load_site(), local);
    ASSERT_EQ(site.local_endpoints.size(), 1u);
    EXPECT_EQ(site.local_endpoints[0].instance, kPortRemote);
    EXPECT_EQ(find(site, kPortRemote)->port.socket, "/run/calyx/tapc0ffee04-00.sock");
    EXPECT_EQ(find(site, kPortWeb)->port.socket, "");
}

TEST(DatastoreTranslate, ProtocolNamesOfOlderReleasesAndNumbersInStringsAreRead) {
    Store store = load_site();
    store[kPolicies + "ossg.default.b7e2c9a0-0000-4e5a-9b8c-7d6e5f4a3b2c"] = {
        read_file(kFixtures + "policy_protocol_names.json"), 100, 100};
    const Site site = translate(store, compute1());
    EXPECT_EQ(problem_lines(site), std::vector<std::string>{});
    const config::SecurityGroupConfig* g = group(site, "b7e2c9a0-0000-4e5a-9b8c-7d6e5f4a3b2c");
    ASSERT_TRUE(g);
    ASSERT_EQ(g->rules.size(), 4u);
    EXPECT_EQ(g->rules[0].protocol, ipproto::kTcp);
    EXPECT_EQ(g->rules[0].port_min, 8000);
    EXPECT_EQ(g->rules[0].port_max, 8080);
    EXPECT_EQ(g->rules[0].remote->to_string(), "192.0.2.0/24");
    EXPECT_EQ(g->rules[1].protocol, ipproto::kUdp);
    EXPECT_EQ(g->rules[1].port_min, 53);
    EXPECT_FALSE(g->rules[1].remote);  // no source: anywhere
    EXPECT_EQ(g->rules[2].protocol, 132);
    EXPECT_EQ(g->rules[3].protocol, ipproto::kIcmp);
    EXPECT_EQ(g->rules[3].icmp_type, 3);
    EXPECT_FALSE(g->rules[3].icmp_code);
}

TEST(DatastoreTranslate, NeutronsDefaultGroupAllowsItsOwnMembersInAndEverythingOut) {
    Store store = load_site();
    const std::string id = "b7e2c9a0-1d3f-4e5a-9b8c-7d6e5f4a3b2c";
    store[kPolicies + "ossg.default." + id] = {read_file(kFixtures + "policy_default_group.json"), 100, 100};
    const Site site = translate(store, compute1());
    const config::SecurityGroupConfig* g = group(site, id);
    ASSERT_TRUE(g);
    ASSERT_EQ(g->rules.size(), 2u);
    EXPECT_EQ(g->rules[0].direction, config::RuleDirection::ingress);
    EXPECT_EQ(g->rules[0].remote_group, id);
    EXPECT_FALSE(g->rules[0].protocol);
    EXPECT_EQ(g->rules[1].direction, config::RuleDirection::egress);
    EXPECT_FALSE(g->rules[1].remote);
    EXPECT_FALSE(g->rules[1].remote_group);
    EXPECT_EQ(site.counts.ipv6_skipped, 3u);  // two IPv6 rules here, one in the seed's web group
}

TEST(DatastoreTranslate, AllowedAddressPairsAndFloatingIpsAreReportedWhileThePortApplies) {
    Store store = load_site();
    const std::string key =
        endpoint_key("compute-1", "d0000005-1111-4222-8333-944455556665", "c0ffee05-0005-4b2c-9d3e-4f5a6b7c8d05");
    store[key] = {read_file(kFixtures + "endpoint_with_allowed_ips_and_nats.json"), 100, 100};
    const Site site = translate(store, compute1());
    const config::InstanceConfig* inst = find(site, "c0ffee05-0005-4b2c-9d3e-4f5a6b7c8d05");
    ASSERT_TRUE(inst);
    EXPECT_EQ(inst->ipv4.to_string(), "10.10.0.9");  // its own address, not the allowed pair's
    EXPECT_EQ(inst->security_groups, std::vector<std::string>{kSgApp});
    EXPECT_EQ(problem_lines(site),
              (std::vector<std::string>{
                  key + ": spec.allowedIps [\"10.10.0.200/32\"] are not forwarded: calyx lets a port send from its "
                        "own address only; the rest of the key applies",
                  key + ": spec.ipNATs [{\"externalIP\":\"198.51.100.77\",\"internalIP\":\"10.10.0.9\",\"source\":"
                        "\"openstack\"}] are not applied: calyx has no floating IPs (the seed's networks are public, "
                        "nat or private); the rest of the key applies"}));
}

TEST(DatastoreTranslate, AnIpv6SubnetIsSkippedWithoutAProblem) {
    Store store = load_site();
    store["/calico/dhcp/v2/no-region/subnet/v6"] = {read_file(kFixtures + "subnet_ipv6.json"), 100, 100};
    const Site site = translate(store, compute1());
    EXPECT_EQ(site.networks.size(), 3u);
    EXPECT_TRUE(site.problems.empty());
    EXPECT_EQ(site.counts.subnets, 4u);
    EXPECT_EQ(site.counts.ipv6_skipped, 2u);
}

TEST(DatastoreTranslate, AnInvalidKeyIsReportedByItsPathAndTheRestApplies) {
    Store store = load_site();
    const std::string key = kPolicies + "ossg.default." + kSgApp;
    store[key].value = calico::network_policy(kSgApp, {}).second;
    // A selector outside networking-calico's subset.
    std::string value = store[key].value;
    value.replace(value.find("\"selector\": \"has("), 17, "\"selector\": \"all() || has(");
    store[key].value = value;
    const Site site = translate(store, compute1());
    EXPECT_EQ(problem_lines(site),
              std::vector<std::string>{
                  key + ": spec.selector 'all() || has(sg.projectcalico.org/openstack-" + kSgApp +
                  ")' is not one calyx evaluates: networking-calico writes has(sg.projectcalico.org/openstack-<security "
                  "group id>); its group allows nothing until it is fixed; the key is left out"});
    // The group is there without rules (its members still count for remote_group); all else applies.
    const config::SecurityGroupConfig* app = group(site, kSgApp);
    ASSERT_TRUE(app);
    EXPECT_TRUE(app->rules.empty());
    EXPECT_EQ(app->where.file, key);
    EXPECT_EQ(site.instances.size(), 4u);
    EXPECT_EQ(find(site, kPortApp)->security_groups, std::vector<std::string>{kSgApp});
    EXPECT_EQ(group(site, kSgWeb)->rules.size(), 3u);
}

TEST(DatastoreTranslate, AGroupNamedByEndpointsWithoutAPolicyAllowsNothing) {
    Store store = load_site();
    store.erase(kPolicies + "ossg.default." + kSgDb);
    const Site site = translate(store, compute1());
    const config::SecurityGroupConfig* db = group(site, kSgDb);
    ASSERT_TRUE(db);
    EXPECT_TRUE(db->rules.empty());
    EXPECT_EQ(db->where.file, kPolicies + "ossg.default." + kSgDb + " (not written)");
    EXPECT_TRUE(site.problems.empty());
}

TEST(DatastoreTranslate, TheOlderKeyKeepsAnAddressANewerOneClaims) {
    Store store = load_site();
    calico::Endpoint thief{"compute-1", "d0000000-1111-4222-8333-944455556669", "c0ffee09-0009-4b2c-9d3e-4f5a6b7c8d09",
                           "52:54:00:00:09:01", "10.10.0.5", "10.10.0.1", kNetNat, {}};
    const auto [key, value] = calico::workload_endpoint(thief);
    // Sorted before app-1's key, created after it.
    ASSERT_LT(key, endpoint_key("compute-1", "d0000002-1111-4222-8333-944455556662", kPortApp));
    store[key] = {value, 1000, 1000};
    const Site site = translate(store, compute1());
    ASSERT_TRUE(find(site, kPortApp));
    EXPECT_FALSE(find(site, thief.port));
    EXPECT_EQ(problem_lines(site),
              std::vector<std::string>{key + ": 10.10.0.5 is already used by " +
                                       endpoint_key("compute-1", "d0000002-1111-4222-8333-944455556662", kPortApp) +
                                       "; the key is left out"});
}

// One bad key each, in a site that is otherwise the seed's: the message calyx reports for it.
struct BadKey {
    const char* behaviour;
    std::string key;    // relative to /calico
    std::string value;  // written over the seed's site
    std::string message;
    bool left_out = true;
};

std::string endpoint_value(const calico::Endpoint& e) { return calico::workload_endpoint(e).second; }
calico::Endpoint a_port(std::string ip = "10.10.0.20", std::string mac = "52:54:00:00:0a:01") {
    return {"compute-1", "d000000a-1111-4222-8333-94445555666a", "c0ffee0a-000a-4b2c-9d3e-4f5a6b7c8d0a",
            mac, ip, "10.10.0.1", kNetNat, {{kSgApp, "app"}}};
}
const std::string kNewPort = kEndpoints + calico::endpoint_name(a_port());
std::string policy_with(const std::string& rule_json) {
    return "{\"spec\": {\"ingress\": [" + rule_json + "], \"selector\": \"has(sg.projectcalico.org/openstack-x1)\"}}";
}
const std::string kX1 = kPolicies + "ossg.default.x1";

std::vector<BadKey> bad_keys() {
    calico::Endpoint two = a_port();
    two.allowed.clear();
    std::string two_addresses = endpoint_value(two);
    two_addresses.replace(two_addresses.find("[\"10.10.0.20/32\"]"), 17, "[\"10.10.0.20/32\", \"10.10.0.21/32\"]");
    calico::Endpoint unknown_net = a_port();
    unknown_net.network = "no-such-network";
    calico::Endpoint same_tap = a_port();
    same_tap.port = "c0ffee01-00ff-4b2c-9d3e-4f5a6b7c8dff";  // web-1's first 11 characters
    calico::Endpoint gw_mac = a_port("10.10.0.20", "ee:ee:ee:ee:ee:ee");
    return {
        {"NotJson", kNewPort, "{not json", "the value is not a JSON object"},
        {"EndpointWithTwoAddresses", kNewPort, two_addresses,
         "the port has 2 IPv4 addresses (10.10.0.20, 10.10.0.21); calyx gives a port one, as every instance has one "
         "interface and one address"},
        {"EndpointOfANetworkWithoutASubnet", kNewPort, endpoint_value(unknown_net),
         "no subnet of network no-such-network that calyx serves holds 10.10.0.20 (networking-calico writes a subnet "
         "only when DHCP is enabled on it)"},
        {"EndpointOnTheGatewayAddress", kNewPort, endpoint_value(a_port("10.10.0.1")),
         "10.10.0.1 is the gateway, network or broadcast address of subnet " + kSubnetNat},
        {"EndpointWithTheGatewayMac", kNewPort, endpoint_value(gw_mac),
         "spec.mac ee:ee:ee:ee:ee:ee is the gateway MAC (dataplane.gateway_mac)"},
        {"EndpointWhoseTapNameIsTaken", kEndpoints + calico::endpoint_name(same_tap), endpoint_value(same_tap),
         "socket /run/calyx/tapc0ffee01-00.sock (interfaceName tapc0ffee01-00) is already used by " +
             endpoint_key("compute-1", "d0000001-1111-4222-8333-944455556661", kPortWeb)},
        {"EndpointNameWithoutFourParts", kEndpoints + "compute--1-openstack-vm", endpoint_value(a_port()),
         "'compute--1-openstack-vm' is not an endpoint name <host>-<orchestrator>-<workload>-<port>"},
        {"EndpointWithoutNode", kNewPort, R"j({"spec": {"mac": "52:54:00:00:0a:01"}})j", "spec.node is missing"},
        {"PolicyOfSomethingElse", kPolicies + "allow-ssh", policy_with("{\"action\": \"Allow\"}"),
         "policy 'allow-ssh' is not a security group of networking-calico (ossg.default.<id>); calyx applies only "
         "those"},
        {"PolicyThatSelectsAnotherGroup", kPolicies + "ossg.default.x2", policy_with("{\"action\": \"Allow\"}"),
         "spec.selector selects security group x1, not x2 whose policy this is; its group allows nothing until it is "
         "fixed"},
        {"PolicyWithTypes", kX1,
         R"j({"spec": {"types": ["Ingress"], "selector": "has(sg.projectcalico.org/openstack-x1)"}})j",
         "spec.types is not one calyx applies (networking-calico writes ingress, egress and selector); its group "
         "allows nothing until it is fixed"},
        {"RuleThatDenies", kX1, policy_with(R"j({"action": "Deny"})j"),
         "spec.ingress[0].action is \"Deny\": security groups only allow (networking-calico writes \"Allow\"); its "
         "group allows nothing until it is fixed"},
        {"RuleWithNotNets", kX1, policy_with(R"j({"action": "Allow", "source": {"notNets": ["10.0.0.0/8"]}})j"),
         "spec.ingress[0].source.notNets is not one calyx applies (networking-calico writes only nets, selector and "
         "ports); its group allows nothing until it is fixed"},
        {"RuleWithSourcePorts", kX1,
         policy_with(R"j({"action": "Allow", "protocol": 6, "source": {"ports": [53]}})j"),
         "spec.ingress[0].source.ports: calyx matches destination ports only; its group allows nothing until it is "
         "fixed"},
        {"RuleWithPortsButNoProtocol", kX1, policy_with(R"j({"action": "Allow", "destination": {"ports": [22]}})j"),
         "spec.ingress[0].destination.ports need protocol TCP or UDP; its group allows nothing until it is fixed"},
        {"RuleWithNetsAndSelector", kX1,
         policy_with(R"j({"action": "Allow", "source": {"nets": ["10.0.0.0/8"], "selector": )j"
                     R"j("has(sg.projectcalico.org/openstack-x1)"}})j"),
         "spec.ingress[0].source has both nets and a selector (Calico would need both to match); networking-calico "
         "writes one; its group allows nothing until it is fixed"},
        {"RuleWithAnIcmpCodeAlone", kX1, policy_with(R"j({"action": "Allow", "protocol": "ICMP", "icmp": {"code": 1}})j"),
         "spec.ingress[0].icmp.code needs icmp.type; its group allows nothing until it is fixed"},
        {"RuleWithANamedPort", kX1,
         policy_with(R"j({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http"]}})j"),
         "spec.ingress[0].destination.ports entry \"http\" is not a port or a range like \"8000:8080\"; its group "
         "allows nothing until it is fixed"},
        {"RuleWithAnUnknownProtocol", kX1, policy_with(R"j({"action": "Allow", "protocol": "QUIC"})j"),
         "spec.ingress[0].protocol \"QUIC\" is not a protocol (a number, or TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite); "
         "its group allows nothing until it is fixed"},
        {"RuleThatNarrowsTheEndpointsOwnSide", kX1,
         policy_with(R"j({"action": "Allow", "destination": {"nets": ["10.0.0.0/8"]}})j"),
         "spec.ingress[0].destination narrows the endpoint's own side; networking-calico never writes that; its group "
         "allows nothing until it is fixed"},
        {"SubnetWithoutGateway", "/calico/dhcp/v2/no-region/subnet/s9",
         R"j({"network_id": "n9", "cidr": "10.99.0.0/24", "host_routes": [], "gateway_ip": null})j",
         "it has no gateway_ip: calyx answers as the gateway of every network, so the subnet needs one"},
        {"SubnetOverlappingAnother", "/calico/dhcp/v2/no-region/subnet/s9",
         R"j({"network_id": "n9", "cidr": "10.10.0.128/25", "host_routes": [], "gateway_ip": "10.10.0.129"})j",
         "cidr 10.10.0.128/25 overlaps 10.10.0.0/24 of subnet " + kSubnetNat + " (/calico/dhcp/v2/no-region/subnet/" +
             kSubnetNat + ")"},
        {"SubnetInALoopbackRange", "/calico/dhcp/v2/no-region/subnet/s9",
         R"j({"network_id": "n9", "cidr": "127.1.0.0/24", "host_routes": [], "gateway_ip": "127.1.0.1"})j",
         "cidr 127.1.0.0/24 is inside 127.0.0.0/8 (loopback)"},
        {"SubnetRouteViaAnotherHop", "/calico/dhcp/v2/no-region/subnet/s9",
         R"j({"network_id": "n9", "cidr": "10.99.0.0/24", "host_routes": [{"destination": "10.200.0.0/16", )j"
         R"j("nexthop": "10.99.0.5"}], "gateway_ip": "10.99.0.1"})j",
         "host_routes[0] (10.200.0.0/16 via 10.99.0.5) is left out: every instance reaches only its gateway "
         "10.99.0.1, so calyx announces routes via the gateway only",
         false},
    };
}

class BadKeyTest : public testing::TestWithParam<BadKey> {};

TEST_P(BadKeyTest, IsReportedByItsPathWhileTheSeedSiteApplies) {
    const BadKey& bad = GetParam();
    Store store = load_site();
    store[bad.key] = {bad.value, 1000, 1000};
    const Site site = translate(store, compute1());
    ASSERT_EQ(site.problems.size(), 1u) << testing::PrintToString(problem_lines(site));
    EXPECT_EQ(site.problems[0].key, bad.key);
    EXPECT_EQ(site.problems[0].message, bad.message);
    EXPECT_EQ(site.problems[0].left_out, bad.left_out);
    for (const std::string& port : {kPortWeb, kPortApp, kPortDb, kPortRemote}) EXPECT_TRUE(find(site, port)) << port;
    EXPECT_EQ(group(site, kSgWeb)->rules.size(), 3u);
}

INSTANTIATE_TEST_SUITE_P(DatastoreTranslate, BadKeyTest, testing::ValuesIn(bad_keys()),
                         [](const testing::TestParamInfo<BadKey>& info) { return info.param.behaviour; });

TEST(DatastoreTranslate, RulesExpandOverTheirNetsAndPortsAndReadCalicosForms) {
    Store store = load_site();
    store[kX1] = {policy_with(R"j({"action": "Allow", "protocol": "tcp", "source": {"nets": ["10.1.2.3", )j"
                              R"j("10.9.0.5/16"]}, "destination": {"ports": [22, "80:81"]}})j"),
                  100, 100};
    const Site site = translate(store, compute1());
    const config::SecurityGroupConfig* x1 = group(site, "x1");
    ASSERT_TRUE(x1);
    ASSERT_EQ(x1->rules.size(), 4u);
    EXPECT_EQ(x1->rules[0].remote->to_string(), "10.1.2.3/32");  // a bare address is its /32
    EXPECT_EQ(x1->rules[0].port_min, 22);
    EXPECT_EQ(x1->rules[1].port_min, 80);
    EXPECT_EQ(x1->rules[1].port_max, 81);
    EXPECT_EQ(x1->rules[2].remote->to_string(), "10.9.0.0/16");  // host bits cleared, as Calico does
    for (const auto& r : x1->rules) EXPECT_EQ(r.where.file, kX1 + " spec.ingress[0]");
}

TEST(DatastoreTranslate, ARegionTakesItsOwnTrees) {
    config::Config local = compute1();
    local.datastore.region = "north";
    EXPECT_TRUE(translate(load_site(), local).instances.empty());
    const SiteTrees trees = site_trees(local.datastore);
    EXPECT_EQ(trees.endpoints, "/calico/resources/v3/projectcalico.org/workloadendpoints/openstack-region-north/");
    EXPECT_EQ(trees.subnets_v2, "/calico/dhcp/v2/region-north/subnet/");
    EXPECT_EQ(trees.subnets_v1, "/calico/dhcp/v1/subnet/");
}

TEST(DatastoreTranslate, ASubnetOverlappingTheUplinkIsLeftOut) {
    config::Config local = compute1();
    local.uplink = config::UplinkConfig{};
    local.uplink->address = Ipv4Addr::from_octets(10, 10, 0, 200);
    local.uplink->prefix_length = 24;
    const Site site = translate(load_site(), local);
    ASSERT_EQ(site.problems.size(), 2u);
    EXPECT_EQ(site.problems[0].message, "cidr 10.10.0.0/24 overlaps the uplink subnet 10.10.0.0/24");
    // The nat subnet's endpoint has no network left.
    EXPECT_EQ(site.problems[1].key, endpoint_key("compute-1", "d0000002-1111-4222-8333-944455556662", kPortApp));
    EXPECT_FALSE(find(site, kPortApp));
}

// ---------------------------------------------------------------------------------------------

TEST(DatastoreSelector, EvaluatesNetworkingCalicosHasOfASecurityGroupLabel) {
    EXPECT_EQ(security_group_of_selector("has(sg.projectcalico.org/openstack-abc-1)"), "abc-1");
    EXPECT_EQ(security_group_of_selector("  has ( sg.projectcalico.org/openstack-abc )  "), "abc");
    for (const char* other : {"has(projectcalico.org/namespace)", "all()", "has(sg.projectcalico.org/openstack-a) && "
                                                                            "has(x)",
                              "!has(sg.projectcalico.org/openstack-a)", "sg.projectcalico.org/openstack-a == 'x'",
                              "has(sg.projectcalico.org/openstack-)", "has(sg.projectcalico.org/openstack-a/b)", ""})
        EXPECT_FALSE(security_group_of_selector(other)) << other;
    EXPECT_EQ(security_group_of_label("sg.projectcalico.org/openstack-abc"), "abc");
    EXPECT_EQ(security_group_of_label("sg-name.projectcalico.org/openstack-web"), "");
}

TEST(DatastoreKeys, EndpointNamesSplitOnSingleDashes) {
    const auto n = split_endpoint_name("compute--1-openstack-d0--1-c0ffee--01");
    ASSERT_TRUE(n);
    EXPECT_EQ(n->host, "compute-1");
    EXPECT_EQ(n->orchestrator, "openstack");
    EXPECT_EQ(n->workload, "d0-1");
    EXPECT_EQ(n->endpoint, "c0ffee-01");
    EXPECT_FALSE(split_endpoint_name("a-b-c"));
    EXPECT_FALSE(split_endpoint_name("a-b-c-d-e"));
    EXPECT_FALSE(split_endpoint_name("a--b-c-d-"));
}

TEST(DatastoreKeys, StatusKeysAreFelixs) {
    config::DatastoreConfig ds;
    EXPECT_EQ(host_status_key(ds, "compute-1"), "/calico/felix/v2/no-region/host/compute-1/status");
    EXPECT_EQ(host_last_status_key(ds, "compute-1"), "/calico/felix/v2/no-region/host/compute-1/last_reported_status");
    EXPECT_EQ(endpoint_status_key(ds, "compute-1", {"compute-1", "openstack", "vm%1", "port"}),
              "/calico/felix/v2/no-region/host/compute-1/workload/openstack/openstack%2fvm%251/endpoint/port");
    EXPECT_EQ(endpoint_status_prefix(ds, "compute-1"), "/calico/felix/v2/no-region/host/compute-1/workload/");
    EXPECT_EQ(prefix_end("/calico/a/"), "/calico/a0");
    EXPECT_EQ(prefix_end(std::string("a\xff", 2)), "b");
}

// The C++ writer of the integration test and the benchmark writes the fixtures' exact bytes.
TEST(CalicoShapes, TheTestWriterWritesNetworkingCalicosBytes) {
    const Store site = load_site();
    const auto expect_same = [&](const std::pair<std::string, std::string>& kv) {
        const auto it = site.find(kv.first);
        ASSERT_NE(it, site.end()) << kv.first;
        EXPECT_EQ(kv.second, it->second.value);
    };
    expect_same(calico::workload_endpoint({"compute-1", "d0000001-1111-4222-8333-944455556661", kPortWeb,
                                           "52:54:00:00:01:01", "203.0.113.10", "203.0.113.1", kNetPublic,
                                           {{kSgWeb, "web"}}}));
    using calico::Rule;
    expect_same(calico::network_policy(
        kSgApp, {Rule{"ingress", 6, calico::Ordered::array({80}), {}, "203.0.113.10/32"},
                 Rule{"ingress", 6, calico::Ordered::array({4545}), {}, {}, kSgDb},
                 Rule{"ingress", "ICMP", {}, calico::Ordered{{"type", 8}, {"code", 0}}, {}, kSgApp},
                 Rule{"egress", 6, calico::Ordered::array({3333}), {}, "203.0.113.10/32"},
                 Rule{"egress", 17, calico::Ordered::array({"5000:5010"}), {}, {}, kSgWeb}}));
    expect_same(calico::subnet({kSubnetPublic, kNetPublic, "203.0.113.0/24", "203.0.113.1", {"203.0.113.53"},
                                {{"198.51.100.0/24", "203.0.113.1"}}}));
    expect_same(calico::subnet({kSubnetPrivate, kNetPrivate, "10.20.0.0/24", "10.20.0.1"}, /*v1=*/true));
    calico::Endpoint pairs{"compute-1", "d0000005-1111-4222-8333-944455556665", "c0ffee05-0005-4b2c-9d3e-4f5a6b7c8d05",
                           "52:54:00:00:05:01", "10.10.0.9", "10.10.0.1", kNetNat, {{kSgApp, ""}}, {"10.10.0.200"}};
    std::string value = calico::workload_endpoint(pairs).second;
    // The fixture also has ipNATs, which the writer does not write: the rest is the same.
    const std::string fixture = read_file(kFixtures + "endpoint_with_allowed_ips_and_nats.json");
    EXPECT_EQ(fixture.substr(0, fixture.find(", \"ipNATs\"")) + "}}", value);
}

}  // namespace
}  // namespace calyx::cp::datastore

namespace calyx::cp::datastore {
namespace {

TEST(DatastoreTranslate, ExplainNamesTheEtcdKeyAndRuleThatAllowed) {
    const config::Config cfg = with_site(compute1(), translate(load_site(), compute1()));
    size_t web = 0;
    while (cfg.security_groups[web].name != kSgWeb) ++web;
    EXPECT_EQ(describe_rule(cfg, {static_cast<uint32_t>(web), 0}),
              "ingress tcp/443 from 0.0.0.0/0 (group " + kSgWeb + ", rule 1 at " + kPolicies + "ossg.default." + kSgWeb +
                  " spec.ingress[0])");
}

// The file's `limits:` are every instance's defaults, those from etcd included.
TEST(DatastoreTranslate, InstancesTakeTheFilesLimits) {
    config::Config local = compute1();
    local.limits.connections = 1234;
    local.limits.nat_ports = 77;
    const Site site = translate(load_site(), local);
    ASSERT_FALSE(site.instances.empty());
    for (const auto& inst : site.instances) EXPECT_EQ(inst.limits, local.limits) << inst.name;
}

// The cache re-reads a key only when its value changed, whatever its revisions say (a new or
// restored etcd cluster starts them again), and forgets deleted keys.
TEST(DatastoreTranslate, TheCacheRereadsOnlyChangedKeysAndGivesTheSameSite) {
    Store store = load_site();
    TranslateCache cache;
    const Site cold = translate(store, compute1(), &cache);
    EXPECT_EQ(cache.size(), store.size());
    const Site warm = translate(store, compute1(), &cache);
    EXPECT_EQ(problem_lines(warm), problem_lines(cold));
    ASSERT_EQ(warm.instances.size(), cold.instances.size());
    EXPECT_EQ(warm.security_groups.size(), cold.security_groups.size());
    EXPECT_EQ(warm.counts, cold.counts);

    // web's policy rewritten with one rule: the new value is read.
    const std::string web = kPolicies + "ossg.default." + kSgWeb;
    store[web] = {calico::network_policy(kSgWeb, {calico::Rule{"egress"}}).second, store[web].create_revision, 500};
    const Site changed = translate(store, compute1(), &cache);
    ASSERT_EQ(group(changed, kSgWeb)->rules.size(), 1u);
    EXPECT_EQ(group(changed, kSgWeb)->rules[0].direction, config::RuleDirection::egress);
    // A refused rewrite (at the same revision: a new cluster) is refused from the cache too, and
    // a deleted key leaves it.
    store[web].value = "{broken";
    EXPECT_EQ(translate(store, compute1(), &cache).problems.size(), 1u);
    EXPECT_EQ(translate(store, compute1(), &cache).problems.size(), 1u);
    store.erase(web);
    translate(store, compute1(), &cache);
    EXPECT_EQ(cache.size(), store.size());
    // Local checks are not cached: the same keys on another host give that host's ports.
    config::Config other = compute1();
    other.host = "compute-2";
    EXPECT_EQ(translate(store, other, &cache).local_endpoints.size(), 1u);
}

}  // namespace
}  // namespace calyx::cp::datastore
