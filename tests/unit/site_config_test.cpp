// A site of several compute hosts in the configuration: `host`, instances of other hosts,
// `host_interface`, `routing`, and a host's file that includes the site's shared file.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "calyx/config.hpp"
#include "cp/policy_compiler.hpp"
#include "cp/reload.hpp"

namespace calyx::config {
namespace {

namespace fs = std::filesystem;

// The site's sections, the same on every host: db-1 runs on compute-1, db-2 on compute-2, db-3
// on compute-3 (written without a port and a MAC: no file here is compute-3's), all in group db.
constexpr std::string_view kSite = R"(networks:
  - {name: private, kind: private, cidr: 10.20.0.0/24, gateway: 10.20.0.1}
security_groups:
  - name: db
    rules:
      - {direction: ingress, protocol: tcp, ports: 5432, remote_group: db}
      - {direction: egress, protocol: tcp, ports: 5432, remote_group: db}
instances:
  - {name: db-1, host: compute-1, network: private, mac: "52:54:00:00:03:01", ipv4: 10.20.0.10,
     security_groups: [db], port: {type: vhost-user, socket: /run/calyx/db.sock}}
  - {name: db-2, host: compute-2, network: private, mac: "52:54:00:00:03:02", ipv4: 10.20.0.11,
     security_groups: [db], port: {type: vhost-user, socket: /run/calyx/db.sock}}
  - {name: db-3, host: compute-3, network: private, ipv4: 10.20.0.12, security_groups: [db]}
)";

// A host's own file: its name, uplink, host interface and routing tables, and the site.
std::string host_file(std::string_view host, std::string_view address, std::string_view include = "site.yaml") {
    return fmt::format(R"(host: {}
uplink:
  port: {{type: tap, name: calyx-up}}
  address: {}/24
  gateway: 198.51.100.1
host_interface: {{name: calyx0}}
routing: {{export_table: 100, import_table: 101}}
include: {}
)",
                       host, address, include);
}

class SiteFiles : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / fmt::format("calyx-unit-site-{}-{}", ::getpid(), counter_++);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    std::string write(const std::string& name, std::string_view text) {
        std::ofstream(dir_ / name) << text;
        return (dir_ / name).string();
    }
    std::vector<std::string> errors_of(const std::string& path) {
        const auto result = load_config_file(path);
        std::vector<std::string> lines;
        if (!result)
            for (const Error& e : result.error()) lines.push_back(e.to_string());
        return lines;
    }

    fs::path dir_;
    static inline int counter_ = 0;
};

std::vector<std::string> names(const std::vector<const InstanceConfig*>& instances) {
    std::vector<std::string> out;
    for (const auto* i : instances) out.push_back(i->name);
    return out;
}

TEST_F(SiteFiles, EachHostTakesItsOwnInstancesFromTheSharedSiteFile) {
    write("site.yaml", kSite);
    const auto one = load_config_file(write("compute-1.yaml", host_file("compute-1", "198.51.100.11")));
    ASSERT_TRUE(one.has_value()) << one.error().front().to_string();
    const auto two = load_config_file(write("compute-2.yaml", host_file("compute-2", "198.51.100.12")));
    ASSERT_TRUE(two.has_value()) << two.error().front().to_string();

    EXPECT_EQ(one->host, "compute-1");
    EXPECT_EQ(names(one->local_instances()), (std::vector<std::string>{"db-1"}));
    EXPECT_EQ(two->host, "compute-2");
    EXPECT_EQ(names(two->local_instances()), (std::vector<std::string>{"db-2"}));
    // Every host knows the whole site.
    ASSERT_EQ(one->instances.size(), 3u);
    EXPECT_EQ(one->instances[2].host, "compute-3");
    EXPECT_TRUE(one->instances[2].mac.is_zero()) << "a remote instance needs no MAC";
    EXPECT_TRUE(one->instances[2].port.socket.empty()) << "nor a port";
    ASSERT_TRUE(one->host_interface.has_value());
    EXPECT_EQ(one->host_interface->name, "calyx0");
    ASSERT_TRUE(one->routing.has_value());
    EXPECT_EQ(one->routing->export_table, 100u);
    EXPECT_EQ(one->routing->import_table, 101u);
    EXPECT_EQ(one->uplink->address, Ipv4Addr::from_octets(198, 51, 100, 11));
}

TEST_F(SiteFiles, ErrorsInTheIncludedFileNameThatFile) {
    std::string site{kSite};
    site.replace(site.find("10.20.0.12"), 10, "10.30.0.12");
    const std::string site_path = write("site.yaml", site);
    const auto errors = errors_of(write("compute-1.yaml", host_file("compute-1", "198.51.100.11")));
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_EQ(errors[0], site_path + ":13:59: ipv4 10.30.0.12 is outside network 'private' (10.20.0.0/24)");
}

TEST_F(SiteFiles, ASectionComesFromOneFileAndIncludesDoNotNest) {
    const std::string site_path = write("site.yaml", std::string(kSite) + "include: more.yaml\n");
    write("more.yaml", "networks: []\n");
    const std::string host =
        write("compute-1.yaml", host_file("compute-1", "198.51.100.11") + "networks: []\n");
    EXPECT_EQ(errors_of(host),
              (std::vector<std::string>{
                  host + ":9:1: section 'networks' is already given in " + site_path +
                      " (line 1); each section comes from one file",
                  site_path + ":14:1: an included file includes nothing further; list every file in "
                              "the include of " + host}));
}

TEST_F(SiteFiles, AnUnreadableIncludeIsAnErrorAtTheInclude) {
    const std::string host = write("compute-1.yaml", host_file("compute-1", "198.51.100.11", "[site.yaml, nowhere.yaml]"));
    write("site.yaml", kSite);
    EXPECT_EQ(errors_of(host), (std::vector<std::string>{
                                   host + ":8:22: cannot read included file " + (dir_ / "nowhere.yaml").string() +
                                   ": No such file or directory"}));
}

std::vector<std::string> error_lines(std::string_view text) {
    const auto result = parse_config(text, "bad.yaml");
    std::vector<std::string> lines;
    if (!result)
        for (const Error& e : result.error()) lines.push_back(e.to_string());
    return lines;
}

constexpr std::string_view kNetwork = R"(
networks:
  - {name: private, kind: private, cidr: 10.20.0.0/24, gateway: 10.20.0.1}
)";

TEST(SiteConfig, InstancesWithoutHostAreThisHostsAndTheHostDefaultsToTheMachineName) {
    const auto result = parse_config(std::string(kNetwork) + R"(instances:
  - {name: a, network: private, mac: "52:54:00:00:03:01", ipv4: 10.20.0.10,
     port: {type: vhost-user, socket: /run/a.sock}}
)",
                                     "site.yaml");
    ASSERT_TRUE(result.has_value()) << result.error().front().to_string();
    char name[256] = {};
    ASSERT_EQ(gethostname(name, sizeof name - 1), 0);
    EXPECT_EQ(result->host, name);
    EXPECT_EQ(result->instances[0].host, name);
    EXPECT_EQ(result->local_instances().size(), 1u);
}

TEST(SiteConfig, ThisHostsInstancesNeedAPortAndAMacOtherHostsNeither) {
    EXPECT_EQ(error_lines(std::string("host: compute-1") + std::string(kNetwork) + R"(instances:
  - {name: a, network: private, ipv4: 10.20.0.10}
  - {name: b, host: compute-1, network: private, ipv4: 10.20.0.11}
  - {name: c, host: compute-2, network: private, ipv4: 10.20.0.12}
)"),
              (std::vector<std::string>{
                  "bad.yaml:5:5: instance 'a' is missing required key 'mac'",
                  "bad.yaml:5:5: instance 'a' is missing required key 'port'",
                  "bad.yaml:6:5: instance 'b' is missing required key 'mac'",
                  "bad.yaml:6:5: instance 'b' is missing required key 'port'"}));
}

TEST(SiteConfig, AddressesAndMacsAreUniqueAcrossTheSiteSocketsPerHost) {
    EXPECT_EQ(error_lines(std::string("host: compute-1") + std::string(kNetwork) + R"(instances:
  - {name: a, network: private, mac: "52:54:00:00:03:01", ipv4: 10.20.0.10,
     port: {type: vhost-user, socket: /run/vm.sock}}
  - {name: b, host: compute-2, network: private, mac: "52:54:00:00:03:01", ipv4: 10.20.0.10,
     port: {type: vhost-user, socket: /run/vm.sock}}
  - {name: c, network: private, mac: "52:54:00:00:03:03", ipv4: 10.20.0.13,
     port: {type: vhost-user, socket: /run/vm.sock}}
)"),
              (std::vector<std::string>{
                  "bad.yaml:7:55: mac 52:54:00:00:03:01 is already used by instance 'a' (line 5)",
                  "bad.yaml:7:82: ipv4 10.20.0.10 is already used by instance 'a' (line 5)",
                  "bad.yaml:10:39: socket /run/vm.sock is already used by instance 'a' (line 5)"}));
}

TEST(SiteConfig, HostNamesAreNames) {
    EXPECT_EQ(error_lines(std::string("host: compute 1") + std::string(kNetwork) + R"(instances:
  - {name: c, host: "x/y", network: private, ipv4: 10.20.0.12}
)"),
              (std::vector<std::string>{
                  "bad.yaml:1:7: host name 'compute 1' may contain only letters, digits, '_', '.' and '-'",
                  "bad.yaml:5:21: host name 'x/y' may contain only letters, digits, '_', '.' and '-'"}));
}

constexpr std::string_view kUplink = R"(
uplink:
  port: {type: tap, name: calyx-up}
  address: 198.51.100.11/24
  gateway: 198.51.100.1
)";

TEST(SiteConfig, HostInterfaceNeedsAnUplinkAndAnInterfaceOfItsOwn) {
    EXPECT_EQ(error_lines("host_interface: {name: calyx0}\n"),
              (std::vector<std::string>{
                  "bad.yaml:1:1: host_interface needs an uplink: the host's stack behind it carries the "
                  "uplink's MAC and address"}));
    EXPECT_EQ(error_lines(std::string(kUplink) + "host_interface: {name: calyx-up}\n"),
              (std::vector<std::string>{
                  "bad.yaml:6:24: 'name' calyx-up is the uplink's interface; the host interface needs its own"}));
    EXPECT_EQ(error_lines(std::string(kUplink) + "host_interface: {nmae: calyx0}\n"),
              (std::vector<std::string>{
                  "bad.yaml:6:17: host_interface is missing required key 'name'",
                  "bad.yaml:6:18: unknown key 'nmae' in host_interface; did you mean 'name'?"}));
}

TEST(SiteConfig, RoutingTablesAreCalyxsOwnAndNeedAnUplink) {
    EXPECT_EQ(error_lines("routing: {export_table: 100, import_table: 101}\n"),
              (std::vector<std::string>{
                  "bad.yaml:1:1: routing needs an uplink: the routes it imports lead to other hosts on "
                  "the uplink's subnet"}));
    EXPECT_EQ(error_lines(std::string(kUplink) + "routing: {export_table: 254, import_table: 0}\n"),
              (std::vector<std::string>{
                  "bad.yaml:6:25: 'export_table' 254 is the kernel's 'main' table; calyx adds and "
                  "removes every route of its own in its tables, so give it tables of their own (e.g. "
                  "100 and 101)",
                  "bad.yaml:6:44: 'import_table' must be between 1 and 4294967295, got 0"}));
    EXPECT_EQ(error_lines(std::string(kUplink) + "routing: {export_table: 100, import_table: 100}\n"),
              (std::vector<std::string>{
                  "bad.yaml:6:44: 'import_table' is 'export_table' (100): calyx would import its own "
                  "routes; BIRD learns from one table and writes into the other"}));
    EXPECT_EQ(error_lines(std::string(kUplink) + "routing: {export_table: 100}\n"),
              (std::vector<std::string>{"bad.yaml:6:10: routing is missing required key 'import_table'"}));
}

TEST(SiteConfig, HostInterfaceAndRoutingChangesNeedARestartTheHostNameDoesNot) {
    const std::string base = std::string("host: compute-1") + std::string(kUplink) +
                             "host_interface: {name: calyx0}\nrouting: {export_table: 100, import_table: 101}\n";
    const auto running = parse_config(base, "a.yaml");
    ASSERT_TRUE(running.has_value()) << running.error().front().to_string();
    auto restart = [&](std::string text) {
        const auto next = parse_config(text, "a.yaml");
        EXPECT_TRUE(next.has_value()) << next.error().front().to_string();
        return cp::restart_required(*running, *next).value_or("");
    };
    std::string other = base;
    other.replace(other.find("calyx0"), 6, "calyx1");
    EXPECT_EQ(restart(other), "host_interface cannot change while calyx runs: restart calyx to apply");
    other = base;
    other.replace(other.find("101"), 3, "102");
    EXPECT_EQ(restart(other), "routing cannot change while calyx runs: restart calyx to apply");
    other = base;
    other.replace(other.find("compute-1"), 9, "compute-9");
    EXPECT_EQ(restart(other), "");
}

TEST(SiteConfig, RemoteGroupsCoverEveryHostOnlyThisHostsPoliciesAreCompiled) {
    const auto cfg = parse_config(std::string("host: compute-1\n") + std::string(kSite), "site.yaml");
    ASSERT_TRUE(cfg.has_value()) << cfg.error().front().to_string();
    const auto policies = cp::compile_policies(*cfg);
    ASSERT_EQ(policies.size(), 1u) << "db-1 only";
    const dp::RuleTable& in = policies[0]->ingress;
    for (const auto* ip : {"10.20.0.10", "10.20.0.11", "10.20.0.12"})
        EXPECT_NE(in.match(ipproto::kTcp, 5432, *Ipv4Addr::parse(ip)), dp::kNoRule) << ip << " is a member of db";
    EXPECT_EQ(in.match(ipproto::kTcp, 5432, *Ipv4Addr::parse("10.20.0.13")), dp::kNoRule);
}

// What a hand-over compares to tell whether its predecessor reloaded another configuration: the
// text of the file and of what it includes. The same text gives the same digest; a change in
// either file (a comment included) another.
TEST_F(SiteFiles, TheSourceDigestFollowsTheTextOfTheFileAndOfWhatItIncludes) {
    write("site.yaml", kSite);
    const std::string host = write("compute-1.yaml", host_file("compute-1", "198.51.100.11"));
    const auto first = load_config_file(host);
    ASSERT_TRUE(first) << errors_of(host).front();
    EXPECT_EQ(first->source_digest.size(), 16u) << first->source_digest;
    EXPECT_EQ(load_config_file(host)->source_digest, first->source_digest);
    write("site.yaml", std::string(kSite) + "# db-4 soon\n");
    const auto site_changed = load_config_file(host);
    ASSERT_TRUE(site_changed);
    EXPECT_NE(site_changed->source_digest, first->source_digest);
    write("site.yaml", kSite);
    write("compute-1.yaml", host_file("compute-1", "198.51.100.11") + "# moved\n");
    const auto host_changed = load_config_file(host);
    ASSERT_TRUE(host_changed);
    EXPECT_NE(host_changed->source_digest, first->source_digest);
    EXPECT_NE(host_changed->source_digest, site_changed->source_digest);
    // The same text by another name (a take-over started with a relative path, or through a
    // symlink) is the same configuration.
    write("compute-1.yaml", host_file("compute-1", "198.51.100.11"));
    const fs::path alias = fs::path(host).parent_path() / "alias.yaml";
    fs::create_symlink(fs::path(host).filename(), alias);
    const auto by_alias = load_config_file(alias.string());
    ASSERT_TRUE(by_alias) << errors_of(alias.string()).front();
    EXPECT_EQ(by_alias->source_digest, first->source_digest);
}

}  // namespace
}  // namespace calyx::config
