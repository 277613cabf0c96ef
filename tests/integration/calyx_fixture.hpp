// The integration tests' shared fixture: the real calyx binary on a generated config, and three
// "VMs" (DPDK virtio-user ports in this process) that send real frames over vhost-user.
//
// Topology (one calyx, three instances, one per kind of network):
//   web-1  public  203.0.113.0/24  gw 203.0.113.1   52:54:00:00:01:01  203.0.113.10
//   app-1  nat     10.10.0.0/24    gw 10.10.0.1     52:54:00:00:02:01  10.10.0.5
//   db-1   private 10.20.0.0/24    gw 10.20.0.1     52:54:00:00:03:01  10.20.0.7
//
// Each test starts its own calyx (fresh state, its own temp dir and EAL prefix) and prints
// calyx's output and counters when it fails. The security groups of the config are a parameter
// (ConfigOptions::security); the default puts every instance in one allow-all group, for the
// tests that are about the gateway rather than the policy.
//
//   class MyTest : public CalyxFixture {
//     protected:
//       void SetUp() override { ASSERT_NO_FATAL_FAILURE(start_all({.security = policy})); }
//   };
//   TEST_F(MyTest, ...) {
//       vm(kWeb).send(...);                       // frames from web-1's NIC
//       auto outcome = reload({.security = other_policy});   // rewrite, SIGHUP, wait
//       EXPECT_EQ(counters()->drops("web-1", "sg_no_egress_rule"), 1u);   // SIGUSR1
//   }
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "calyx/net.hpp"
#include "calyx_process.hpp"
#include "test_frames.hpp"
#include "vm_peer.hpp"

namespace calyx::test {

// Generous but bounded: replies normally take microseconds.
using std::chrono::milliseconds;
inline constexpr milliseconds kReply{3000};    // a reply on a warm path
inline constexpr milliseconds kWarmUp{10000};  // first answer after attaching
inline constexpr milliseconds kSilence{500};   // how long "nothing arrives" is watched
// calyx's client-mode reconnect (it retries once a second)
inline constexpr milliseconds kReconnect{10000};
inline constexpr milliseconds kHandshake{5000};  // vhost-user handshake, server-mode calyx
inline constexpr milliseconds kControl{10000};   // calyx answering SIGHUP or SIGUSR1

inline constexpr MacAddr kGatewayMac{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}};  // calyx's default

struct Vm {
    std::string name;
    std::string network;
    MacAddr mac;
    Ipv4Addr ip;
    Ipv4Addr gateway;
};

inline const Vm kWeb{"web-1",
                     "public",
                     {{0x52, 0x54, 0x00, 0x00, 0x01, 0x01}},
                     Ipv4Addr::from_octets(203, 0, 113, 10),
                     Ipv4Addr::from_octets(203, 0, 113, 1)};
inline const Vm kApp{"app-1",
                     "nat",
                     {{0x52, 0x54, 0x00, 0x00, 0x02, 0x01}},
                     Ipv4Addr::from_octets(10, 10, 0, 5),
                     Ipv4Addr::from_octets(10, 10, 0, 1)};
inline const Vm kDb{"db-1",
                    "private",
                    {{0x52, 0x54, 0x00, 0x00, 0x03, 0x01}},
                    Ipv4Addr::from_octets(10, 20, 0, 7),
                    Ipv4Addr::from_octets(10, 20, 0, 1)};
inline const std::array<const Vm*, 3> kVms{&kWeb, &kApp, &kDb};

inline const Ipv4Addr kPublicDns = Ipv4Addr::from_octets(203, 0, 113, 53);
inline constexpr uint16_t kPublicMtu = 1450;  // not the default: option 26 proves it is configured
inline const Ipv4Addr kUnrouted = Ipv4Addr::from_octets(198, 18, 0, 1);

std::string text(Ipv4Addr a);
std::string text(const MacAddr& m);
std::string describe_all(const std::vector<Bytes>& frames);

// ------------------------------------------------------------------------------------------
// Configs

// Security groups and memberships as the config writes them. Rules are YAML flow mappings,
// written as given, e.g. "{direction: ingress, protocol: tcp, ports: 80, remote: 10.0.0.0/8}".
struct SecurityPolicy {
    struct Group {
        std::string name;
        std::vector<std::string> rules;
    };
    std::vector<Group> groups;
    std::map<std::string, std::vector<std::string>> members;  // instance -> its groups

    // One group "open" that allows everything both ways, with every instance in it.
    static SecurityPolicy open_to_all();
    // No groups at all: nothing between instances is allowed (seed frame 1).
    static SecurityPolicy none() { return {}; }

    SecurityPolicy& group(std::string name, std::vector<std::string> rules);
    SecurityPolicy& member(const Vm& vm, std::vector<std::string> groups);
};

// The uplink the integration tests give calyx: a tap interface that the test moves into a
// network namespace playing the Internet (kUpstream is its router, kInternetServer a host
// behind it).
inline const Ipv4Addr kHostAddress = Ipv4Addr::from_octets(198, 51, 100, 10);  // uplink.address
inline const Ipv4Addr kUpstream = Ipv4Addr::from_octets(198, 51, 100, 1);      // uplink.gateway
inline const Ipv4Addr kInternetServer = Ipv4Addr::from_octets(192, 0, 2, 80);

struct ConfigOptions {
    std::set<std::string> client_mode{};  // instances whose calyx port connects (QEMU is server)
    SecurityPolicy security = SecurityPolicy::open_to_all();
    std::string uplink_tap{};  // non-empty: an uplink of type tap with this interface name
    // non-empty: the uplink's `port:` as a YAML flow mapping (any type, e.g. with queues),
    // instead of uplink_tap's
    std::string uplink_port{};
    std::string uplink_nat_ports{};  // non-empty: the uplink's `nat_ports` range, e.g. "20000-20999"
    // Worker lcores 1..workers. Two CPUs here: lcores beyond 1 share CPU 1 (EAL --lcores).
    unsigned workers = 1;
    std::map<std::string, uint16_t> queues{};        // instance -> calyx's queue pairs (1)
    std::map<std::string, uint16_t> guest_queues{};  // instance -> the VM's (as calyx's)
    // Instances beyond web-1, app-1 and db-1 (on their networks), each with its VM.
    std::vector<Vm> more_vms{};
    uint32_t conntrack_capacity = 65536;
    // `limits:` as YAML flow mappings: the top-level defaults, and instances' own.
    std::string limits{};
    std::map<std::string, std::string> instance_limits{};
    // The instances of a config with these options: kVms, then more_vms.
    std::vector<const Vm*> vms() const;
};

// What must stay the same when one calyx re-reads its (rewritten) config: its EAL file prefix
// and metrics port.
struct ConfigIdentity {
    std::string eal_prefix;
    unsigned metrics_port = 0;
};
// Unique per test process and call, so calyx never meets another DPDK process's files.
ConfigIdentity next_config_identity();

std::string gateway_config(const TempDir& dir, const ConfigOptions& opts, const ConfigIdentity& id);
inline std::string gateway_config(const TempDir& dir, const ConfigOptions& opts = {}) {
    return gateway_config(dir, opts, next_config_identity());
}

// "file:line:col: message" lines, as calyx prints config errors.
struct LocatedError {
    std::string file;
    int line = 0;
    int column = 0;
    std::string message;
};
std::vector<LocatedError> located_errors(const std::string& err);
// 1-based number of the first line of `text` containing `marker`; 0 if none does.
int line_of(const std::string& text, std::string_view marker);

// ------------------------------------------------------------------------------------------
// What calyx reports on SIGUSR1:
//   calyx: counters
//   port web-1 (up): /tmp/.../web-1.sock rx 5 pkts 420 bytes, tx 3 pkts 250 bytes
//     drop sg_no_egress_rule 3
//   ...
//   instance web-1: 2 connections, 0 nat ports
//   conntrack: 2 entries of 65536, 4 created, 0 expired, 0 evicted

struct PortReport {
    bool up = false;
    uint64_t rx_packets = 0;
    uint64_t tx_packets = 0;
    std::map<std::string, uint64_t> drops;  // reason -> packets (drops of frames received here)
};

// What an instance holds of what all share (calyx_instance_* in metrics).
struct InstanceReport {
    uint64_t connections = 0;
    uint64_t nat_ports = 0;
};

struct CountersReport {
    std::map<std::string, PortReport> ports;  // by instance name
    std::map<std::string, InstanceReport> instances;
    uint64_t conntrack_entries = 0, conntrack_created = 0, conntrack_evicted = 0;
    std::string text;                         // the block as printed

    // Drops of frames that arrived from `instance`, for `reason` (0 if none).
    uint64_t drops(std::string_view instance, std::string_view reason) const;
    // Every drop of frames that arrived from `instance`, whatever the reason.
    uint64_t all_drops(std::string_view instance) const;
    // What `instance` holds (zeros if it is not listed).
    InstanceReport instance(std::string_view name) const {
        const auto it = instances.find(std::string(name));
        return it == instances.end() ? InstanceReport{} : it->second;
    }
};

// Parses one block from "calyx: counters" to the "conntrack:" line; nullopt if malformed.
std::optional<CountersReport> parse_counters(std::string_view block);

struct ReloadOutcome {
    bool answered = false;  // calyx printed a verdict within kControl
    bool accepted = false;  // "calyx: reloaded: generation N"
    uint64_t generation = 0;
    std::string output;  // everything calyx printed for this reload (errors included)
};

// ------------------------------------------------------------------------------------------
// Fixture: a calyx process and one VmPeer per instance.

class CalyxFixture : public testing::Test {
  protected:
    fs::path socket_of(const Vm& vm) const {
        const auto it = socket_paths_.find(vm.name);
        return it != socket_paths_.end() ? it->second : dir_ / (vm.name + ".sock");
    }
    bool is_client_mode(const Vm& vm) const { return options_.client_mode.contains(vm.name); }
    // calyx's control socket (the config's control.socket), for calyxctl.
    fs::path control_socket() const { return dir_ / "calyx.sock"; }

    // Write the config (on the first call; later calls restart calyx on the same file) and
    // start calyx; returns once its server-mode sockets exist.
    void start_calyx(const ConfigOptions& opts = {});

    // Attach the VM's NIC. Server-mode calyx ports: the VM connects (retrying briefly while
    // calyx is still creating the socket). Client-mode ports: the VM listens and calyx
    // connects.
    void attach(const Vm& vm);

    VmPeer& vm(const Vm& v);

    // The VM resolves its gateway: ARP who-has gateway, retried until answered. This is also
    // what proves the path is up before a test checks that something does NOT arrive.
    void warm_up(const Vm& v);

    // Start calyx and attach and warm up every VM. When that failed in several tests in a
    // row, calyx is broken beyond what one test shows: fail at once instead of spending the
    // same timeouts again (the first failures carry calyx's output).
    void start_all(const ConfigOptions& opts = {});

    // An echo request from `from` to `dst`, sent to the gateway MAC as a VM with a default
    // route via calyx would.
    static Bytes ping_frame(const Vm& from, Ipv4Addr dst, uint16_t id, uint16_t seq,
                            uint8_t ttl = 64);

    // Expect no frame matching `pred` at `v` for `window`.
    void expect_nothing(const Vm& v, const FramePredicate& pred, std::string_view what,
                        std::chrono::milliseconds window = kSilence);

    // Ping from one instance to another through calyx: the request arrives routed (TTL - 1,
    // gateway MAC as source), the destination answers, the reply arrives routed.
    void expect_ping_between(const Vm& from, const Vm& to, uint16_t id, uint16_t seq);

    // Ping the instance's own gateway address; calyx answers itself.
    void expect_gateway_answers_ping(const Vm& v, uint16_t id, uint16_t seq);

    // --- calyx's control signals -----------------------------------------------------------

    // SIGUSR1, then the counters block calyx prints; nullopt (and a test failure) if calyx
    // did not answer within kControl.
    std::optional<CountersReport> counters();

    // Poll the counters until drops(instance, reason) reaches `at_least` or `timeout` passes;
    // returns the last report (nullopt if calyx stopped answering).
    std::optional<CountersReport> wait_for_drops(std::string_view instance, std::string_view reason,
                                                 uint64_t at_least,
                                                 std::chrono::milliseconds timeout = kReply);

    // Rewrite the config file for `opts` (same EAL prefix, metrics port and sockets), send
    // SIGHUP and wait for calyx's verdict. Client-mode choices are kept from start_calyx().
    ReloadOutcome reload(const ConfigOptions& opts);
    // The same with the config text given as is (e.g. an invalid one).
    ReloadOutcome reload_text(const std::string& yaml);
    // The config text reload(opts) would write.
    std::string config_text(const ConfigOptions& opts) const;

    void TearDown() override;

    TempDir dir_;
    fs::path config_;
    ConfigIdentity identity_;
    ConfigOptions options_;
    std::unique_ptr<CalyxProcess> calyx_;
    std::map<std::string, std::unique_ptr<VmPeer>> peers_;
    // Sockets that are not <dir>/<instance>.sock (a datastore names them after the interface).
    std::map<std::string, fs::path> socket_paths_;

  private:
    bool calyx_ready();
    ReloadOutcome send_sighup();
    void cleanup_eal_prefix();
};

// main() of an integration test binary: gtest flags, then [--calyx-bin=PATH | PATH]
// ($CALYX_BIN wins); one VmPeerEal for the whole run.
int run_integration_tests(int argc, char** argv);

}  // namespace calyx::test
