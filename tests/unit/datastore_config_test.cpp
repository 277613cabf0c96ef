// The `datastore` section: where the site comes from, and what the file may still declare.
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "calyx/config.hpp"
#include "cp/reload.hpp"

namespace calyx::config {
namespace {

std::string_view yaml(std::string_view text) {
    if (text.starts_with('\n')) text.remove_prefix(1);
    return text;
}

std::vector<std::string> error_lines(std::string_view text) {
    const auto result = parse_config(yaml(text), "host.yaml");
    std::vector<std::string> lines;
    if (!result)
        for (const Error& e : result.error()) lines.push_back(e.to_string());
    return lines;
}

TEST(DatastoreConfig, EtcdSectionParsesWithExactValues) {
    const auto cfg = parse_config(yaml(R"(
datastore:
  type: etcd
  endpoints: [http://10.0.0.5:2379, https://etcd.example.org:2379/]
  prefix: /calico
  port_socket: /run/calyx/vhu-{interface}.sock
  region: north-1
  networks:
    - {id: 6c1e1a9c-0b6d-4f8e-9d55-2f0c7e0e5a11, kind: nat, mtu: 1450}
    - {id: public-net, kind: public}
)"),
                                  "host.yaml");
    ASSERT_TRUE(cfg) << cfg.error().front().to_string();
    const DatastoreConfig& ds = cfg->datastore;
    EXPECT_EQ(ds.type, DatastoreType::etcd);
    EXPECT_EQ(ds.endpoints, (std::vector<std::string>{"http://10.0.0.5:2379", "https://etcd.example.org:2379/"}));
    EXPECT_EQ(ds.prefix, "/calico");
    EXPECT_EQ(ds.port_socket, "/run/calyx/vhu-{interface}.sock");
    EXPECT_EQ(ds.region, "north-1");
    EXPECT_EQ(ds.region_string(), "region-north-1");
    EXPECT_EQ(ds.namespace_name(), "openstack-region-north-1");
    ASSERT_EQ(ds.networks.size(), 2u);
    EXPECT_EQ(ds.networks[0].id, "6c1e1a9c-0b6d-4f8e-9d55-2f0c7e0e5a11");
    EXPECT_EQ(ds.networks[0].kind, NetworkKind::nat);
    EXPECT_EQ(ds.networks[0].mtu, 1450);
    EXPECT_EQ(ds.networks[0].where.line, 8);
    EXPECT_EQ(ds.networks[1].kind, NetworkKind::public_);
    EXPECT_EQ(ds.networks[1].mtu, 1500);
    EXPECT_EQ(ds.find_network("public-net"), &ds.networks[1]);
    EXPECT_EQ(ds.find_network("other"), nullptr);
}

TEST(DatastoreConfig, DefaultsAreNoDatastoreAndNetworkingCalicosKeys) {
    const auto cfg = parse_config("dataplane: {workers: [1]}\n", "host.yaml");
    ASSERT_TRUE(cfg);
    const DatastoreConfig& ds = cfg->datastore;
    EXPECT_EQ(ds.type, DatastoreType::none);
    EXPECT_EQ(ds.endpoints, std::vector<std::string>{"http://127.0.0.1:2379"});
    EXPECT_EQ(ds.prefix, "/calico");
    EXPECT_EQ(ds.port_socket, "/run/calyx/{interface}.sock");
    EXPECT_FALSE(ds.region);
    EXPECT_EQ(ds.region_string(), "no-region");
    EXPECT_EQ(ds.namespace_name(), "openstack");
    EXPECT_EQ(to_string(DatastoreType::etcd), "etcd");
}

TEST(DatastoreConfig, TheFileKeepsTheHostsOwnSectionsNextToADatastore) {
    const auto cfg = parse_config(yaml(R"(
dataplane: {workers: [1]}
uplink:
  port: {type: tap, name: calyx-up}
  address: 192.0.2.10/24
  gateway: 192.0.2.1
datastore: {type: etcd}
)"),
                                  "host.yaml");
    ASSERT_TRUE(cfg) << cfg.error().front().to_string();
    EXPECT_EQ(cfg->datastore.type, DatastoreType::etcd);
    EXPECT_TRUE(cfg->uplink);
}

TEST(DatastoreConfig, DeclaringTheSiteInTheFileAndTheDatastoreIsRefusedAtEachSection) {
    EXPECT_EQ(error_lines(R"(
networks:
  - {name: n, kind: public, cidr: 10.0.0.0/24, gateway: 10.0.0.1}
security_groups:
  - {name: web}
instances:
  - name: vm
    network: n
    mac: 52:54:00:00:00:01
    ipv4: 10.0.0.2
    port: {type: vhost-user, socket: /tmp/vm.sock}
datastore:
  type: etcd
)"),
              (std::vector<std::string>{
                  "host.yaml:2:5: 'networks' is declared here and the site comes from the datastore (datastore.type "
                  "etcd, line 12): the datastore's networks are the ones in force; remove this section, or set "
                  "datastore.type to none",
                  "host.yaml:4:5: 'security_groups' is declared here and the site comes from the datastore "
                  "(datastore.type etcd, line 12): the datastore's security_groups are the ones in force; remove "
                  "this section, or set datastore.type to none",
                  "host.yaml:6:5: 'instances' is declared here and the site comes from the datastore (datastore.type "
                  "etcd, line 12): the datastore's instances are the ones in force; remove this section, or set "
                  "datastore.type to none",
              }));
}

TEST(DatastoreConfig, WithoutADatastoreTheSiteSectionsAreTheFiles) {
    const auto cfg = parse_config(yaml(R"(
networks:
  - {name: n, kind: public, cidr: 10.0.0.0/24, gateway: 10.0.0.1}
datastore: {type: none}
)"),
                                  "host.yaml");
    ASSERT_TRUE(cfg) << cfg.error().front().to_string();
    EXPECT_EQ(cfg->networks.size(), 1u);
}

struct BadDatastore {
    const char* behaviour;
    std::string_view text;
    std::vector<std::string> errors;
};

const BadDatastore kBad[] = {
    {"UnknownTypeIsSuggested",
     "datastore: {type: etdc}\n",
     {"host.yaml:1:19: 'type' must be none or etcd, got 'etdc'; did you mean 'etcd'?"}},
    {"UnknownKeyIsSuggested",
     "datastore: {type: etcd, endpoint: [http://a:1]}\n",
     {"host.yaml:1:25: unknown key 'endpoint' in datastore; did you mean 'endpoints'?"}},
    {"EndpointsMustBeUrlsWithoutAPath",
     "datastore: {endpoints: [127.0.0.1:2379, http://a:2379/v3, ftp://a]}\n",
     {"host.yaml:1:25: entry of 'endpoints' must be a URL like http://127.0.0.1:2379 (http or https, host and "
      "port, no path), got '127.0.0.1:2379'",
      "host.yaml:1:41: entry of 'endpoints' must be a URL like http://127.0.0.1:2379 (http or https, host and "
      "port, no path), got 'http://a:2379/v3'",
      "host.yaml:1:59: entry of 'endpoints' must be a URL like http://127.0.0.1:2379 (http or https, host and "
      "port, no path), got 'ftp://a'"}},
    {"EndpointsMustNotBeEmpty",
     "datastore: {endpoints: []}\n",
     {"host.yaml:1:24: 'endpoints' must name at least one etcd client URL"}},
    {"PrefixNeedsALeadingAndNoTrailingSlash",
     "datastore: {prefix: calico/}\n",
     {"host.yaml:1:21: 'prefix' must be a key prefix like /calico: a leading '/', no trailing '/', no spaces; got "
      "'calico/'"}},
    {"PortSocketNeedsThePlaceholderOnce",
     "datastore: {port_socket: /run/calyx/x.sock}\n",
     {"host.yaml:1:26: 'port_socket' must contain {interface} exactly once (each endpoint's interfaceName takes "
      "its place), got '/run/calyx/x.sock'"}},
    {"PortSocketMustBeAbsolute",
     "datastore: {port_socket: 'run/{interface}.sock'}\n",
     {"host.yaml:1:26: 'port_socket' must be an absolute path, got 'run/{interface}.sock'"}},
    {"PortSocketMustHaveNoOtherBraces",
     "datastore: {port_socket: '/run/{id}/{interface}.sock'}\n",
     {"host.yaml:1:26: 'port_socket' may contain no braces but those of {interface}, got "
      "'/run/{id}/{interface}.sock'"}},
    {"PortSocketMustLeaveRoomForTheLongestInterfaceName",
     "datastore: {port_socket: '/run/calyx/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaa/{interface}.sock'}\n",
     {"host.yaml:1:26: 'port_socket' is too long: with a 15-byte interface name it is 121 bytes, and a unix "
      "socket path holds at most 107"}},
    {"RegionIsADnsLabel",
     "datastore: {region: North_1}\n",
     {"host.yaml:1:21: 'region' must be networking-calico's openstack_region: lower-case letters, digits and "
      "'-', starting and ending with a letter or digit, at most 46 characters; got 'North_1'"}},
    {"NetworkNeedsIdAndKind",
     "datastore:\n  networks:\n    - {mtu: 1450}\n",
     {"host.yaml:3:7: datastore network is missing required key 'id'",
      "host.yaml:3:7: datastore network is missing required key 'kind'"}},
    {"NetworkKindIsSuggested",
     "datastore:\n  networks:\n    - {id: n1, kind: nta}\n",
     {"host.yaml:3:22: 'kind' must be public, nat or private, got 'nta'; did you mean 'nat'?"}},
    {"NetworkListedTwice",
     "datastore:\n  networks:\n    - {id: n1, kind: nat}\n    - {id: n1, kind: public}\n",
     {"host.yaml:4:12: network 'n1' is listed twice (first at line 3)"}},
    {"NetworkMtuInRange",
     "datastore:\n  networks:\n    - {id: n1, kind: nat, mtu: 100}\n",
     {"host.yaml:3:32: 'mtu' must be between 576 and 9000, got 100"}},
};

class BadDatastoreTest : public testing::TestWithParam<BadDatastore> {};

TEST_P(BadDatastoreTest, IsRejectedWithExactErrors) { EXPECT_EQ(error_lines(GetParam().text), GetParam().errors); }

INSTANTIATE_TEST_SUITE_P(DatastoreConfig, BadDatastoreTest, testing::ValuesIn(kBad),
                         [](const testing::TestParamInfo<BadDatastore>& info) { return info.param.behaviour; });

TEST(DatastoreConfig, ItsConnectionIsFixedWhileCalyxRunsButWhatTheTranslationReadsIsNot) {
    Config running;
    running.datastore.type = DatastoreType::etcd;
    Config next = running;
    next.datastore.port_socket = "/run/other/{interface}.sock";
    next.datastore.networks.push_back({"n1", NetworkKind::nat, 1450, {}});
    EXPECT_EQ(cp::restart_required(running, next), std::nullopt);
    next.datastore.endpoints = {"http://10.0.0.9:2379"};
    EXPECT_EQ(cp::restart_required(running, next),
              "datastore cannot change while calyx runs: restart calyx to apply");
    next = running;
    next.datastore.region = "north";
    EXPECT_TRUE(cp::restart_required(running, next));
    next = running;
    next.datastore.type = DatastoreType::none;
    EXPECT_TRUE(cp::restart_required(running, next));
}

}  // namespace
}  // namespace calyx::config
