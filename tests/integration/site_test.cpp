// Two compute hosts of one site, in network namespaces the test creates, each running the real
// calyx inside its namespace (`ip netns exec`), with virtio-user "VMs" in this process:
//
//   fabric  a bridge, 198.51.100.1/24: the hosts' segment and the Internet's router, with a UDP
//           server on 192.0.2.80:5353 that answers every datagram with the address and port it
//           saw it from
//   host 1  calyx (uplink tap in the fabric's bridge, host interface 198.51.100.11): db-1
//           (private 10.20.0.10), app-1 (nat 10.10.0.5)
//   host 2  likewise 198.51.100.12: db-2 (private 10.20.0.11), web-2 (public 203.0.113.20)
//
// Two modes, one binary. integration-site writes the routes BIRD would write by hand (`ip route
// add ... table 101`): each host imports the other's instances via its address, and the fabric
// routes web-2 to host 2. integration-site-bgp (CALYX_SITE_BGP=1) runs real bird2 instead: a
// route reflector in the fabric that is also the Internet's router (it installs the public
// network's routes it learns), and in each host namespace a BIRD on conf/bird/bird.conf whose
// BGP session runs through calyx's host interface. Both hosts read one site file through an
// include. Checked: the exported tables, the data path
// between the hosts (source unchanged, rules split between them, refusals counted on the
// destination host), the Internet to a public instance on host 2, masquerade of a nat
// instance to its host's address, the host's own stack behind its tap, the reverse-path check,
// a route's withdrawal and return, and calyx withdrawing its routes when it stops.
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "calyx_fixture.hpp"
#include "netns.hpp"

namespace calyx::test {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

const Ipv4Addr kFabric = Ipv4Addr::from_octets(198, 51, 100, 1);
const Ipv4Addr kServer = Ipv4Addr::from_octets(192, 0, 2, 80);
constexpr uint16_t kServerPort = 5353;

struct Host {
    int number;
    Ipv4Addr address;
};
const Host kHost1{1, Ipv4Addr::from_octets(198, 51, 100, 11)};
const Host kHost2{2, Ipv4Addr::from_octets(198, 51, 100, 12)};

const Vm kDb1{"db-1", "private", {{0x52, 0x54, 0x00, 0x00, 0x03, 0x01}}, Ipv4Addr::from_octets(10, 20, 0, 10),
              Ipv4Addr::from_octets(10, 20, 0, 1)};
const Vm kApp1{"app-1", "nat", {{0x52, 0x54, 0x00, 0x00, 0x02, 0x01}}, Ipv4Addr::from_octets(10, 10, 0, 5),
               Ipv4Addr::from_octets(10, 10, 0, 1)};
const Vm kDb2{"db-2", "private", {{0x52, 0x54, 0x00, 0x00, 0x03, 0x02}}, Ipv4Addr::from_octets(10, 20, 0, 11),
              Ipv4Addr::from_octets(10, 20, 0, 1)};
const Vm kWeb2{"web-2", "public", {{0x52, 0x54, 0x00, 0x00, 0x01, 0x02}}, Ipv4Addr::from_octets(203, 0, 113, 20),
               Ipv4Addr::from_octets(203, 0, 113, 1)};
// Added on host 2 by reload, then moved to host 1 (integration-site-bgp).
const Vm kDb3{"db-3", "private", {{0x52, 0x54, 0x00, 0x00, 0x03, 0x03}}, Ipv4Addr::from_octets(10, 20, 0, 12),
              Ipv4Addr::from_octets(10, 20, 0, 1)};
struct Placement {
    const Vm* vm;
    const Host* host;
    const char* groups;
};
const Placement kPlacements[] = {
    {&kDb1, &kHost1, "db"}, {&kApp1, &kHost1, "app"}, {&kDb2, &kHost2, "db"}, {&kWeb2, &kHost2, "web"}};

// Answers every datagram with "IP:PORT\n" of its sender.
constexpr const char* kServerScript = R"(import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.80", 5353))
open(sys.argv[1], "w").close()
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(f"{peer[0]}:{peer[1]}\n".encode(), peer)
)";

// The route reflector, also the Internet's router, runs conf/bird/route-reflector.conf (shared
// with the e2e suite): it puts into its kernel's main table only the public network's
// instances. Its clients' file adds what a careless reflector could send the hosts: a default
// route, a network of the site cut in two, a /32 outside the site; the hosts' BIRD must keep
// every one of them out of import_table.
constexpr const char* kReflectorSite = R"(router id 198.51.100.1;
define CALYX_AS = 64512;
define CALYX_SEGMENT = 198.51.100.0/24;
define CALYX_PUBLIC_HOSTS = [203.0.113.0/24{32,32}];
)";
constexpr const char* kReflectorClients = R"(protocol bgp h1 from calyx_host { neighbor 198.51.100.11 as CALYX_AS; }
protocol bgp h2 from calyx_host { neighbor 198.51.100.12 as CALYX_AS; }
protocol static noise {
  ipv4;
  route 0.0.0.0/0 blackhole;
  route 10.20.0.128/25 blackhole;
  route 192.0.2.99/32 blackhole;
}
)";

std::string bird_conf_source() {
    const char* conf = std::getenv("CALYX_BIRD_CONF");
    return conf ? conf : "conf/bird/bird.conf";
}

std::string calyxctl_binary() {
    const char* bin = std::getenv("CALYXCTL_BIN");
    return bin ? bin : "build/calyxctl";
}

// Whether `ip route show [TABLE] ADDRESS/32` in `ns` names `via` as a next hop.
bool has_route(const Namespace& ns, std::string_view table, Ipv4Addr to, Ipv4Addr via) {
    const auto r = ns.exec(fmt::format("ip route show {} {}/32", table, text(to)));
    return r.status == 0 && r.output.find(fmt::format("via {} ", text(via))) != std::string::npos;
}
// Polls has_route() until it is `present` (or absent), up to `timeout`.
bool wait_for_route(const Namespace& ns, std::string_view table, Ipv4Addr to, Ipv4Addr via,
                    std::chrono::milliseconds timeout, bool present = true) {
    const auto deadline = Clock::now() + timeout;
    while (has_route(ns, table, to, via) != present) {
        if (Clock::now() > deadline) return false;
        std::this_thread::sleep_for(20ms);
    }
    return true;
}
int ms_since(Clock::time_point t) {
    return static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
}

// One site, set up once for all the tests of the suite (two calyx processes take seconds).
class Site : public testing::Test {
protected:
    static void SetUpTestSuite() {
        s_ = new Shared();
        s_->setup();
    }
    static void TearDownTestSuite() {
        delete s_;
        s_ = nullptr;
    }
    void SetUp() override {
        ASSERT_TRUE(s_->ready) << "the site did not come up: " << s_->failure;
    }

    struct Shared {
        TempDir dir{"calyx-site"};
        std::string tag = std::to_string(::getpid() % 100000);
        Namespace fabric{"calyx-st-fab-" + tag};
        Namespace h1{"calyx-st-h1-" + tag};
        Namespace h2{"calyx-st-h2-" + tag};
        std::unique_ptr<ChildProcess> calyx[3];
        // integration-site-bgp: BIRD of the fabric (the route reflector) [0] and of each host.
        const bool bgp = std::getenv("CALYX_SITE_BGP") != nullptr;
        std::unique_ptr<ChildProcess> bird[3];
        std::vector<Placement> placements{std::begin(kPlacements), std::end(kPlacements)};
        fs::path config_file[3];
        int starts[3] = {};  // a fresh log per start: its ready line is that start's
        std::map<std::string, std::unique_ptr<VmPeer>> vms;
        int server_pid = 0;
        bool ready = false;
        std::string failure;

        ~Shared() {
            if (server_pid > 0) sh(fmt::format("kill {}", server_pid));
            vms.clear();
            for (auto& b : bird)
                if (b) b->stop();
            for (auto& c : calyx)
                if (c) c->stop();
            for (const ConfigIdentity& id : identities) sh("rm -rf /var/run/dpdk/" + id.eal_prefix);
        }

        const Namespace& ns(const Host& h) const { return h.number == 1 ? h1 : h2; }
        std::string uplink_tap(const Host& h) const { return fmt::format("stup{}-{}", h.number, tag); }
        fs::path control(const Host& h) const { return dir / fmt::format("h{}.ctl", h.number); }
        fs::path bird_control(int n) const { return dir / fmt::format("bird-{}.ctl", n); }
        const Namespace& ns_of(int n) const { return n == 0 ? fabric : n == 1 ? h1 : h2; }
        fs::path socket_of(const Vm& v, const Host& h) const {
            return dir / fmt::format("{}-h{}.sock", v.name, h.number);
        }

        std::string site_yaml() const {
            std::string y = R"(security_groups:
  - name: db
    rules:
      - {direction: ingress, protocol: icmp, remote_group: db}
      - {direction: ingress, protocol: tcp, ports: 5432, remote_group: db}
      - {direction: egress, protocol: any, remote_group: db}
  - name: web
    rules:
      - {direction: ingress, protocol: icmp, remote: 0.0.0.0/0}
  - name: app
    rules:
      - {direction: egress, protocol: any}
networks:
  - {name: public, kind: public, cidr: 203.0.113.0/24, gateway: 203.0.113.1}
  - {name: nat, kind: nat, cidr: 10.10.0.0/24, gateway: 10.10.0.1}
  - {name: private, kind: private, cidr: 10.20.0.0/24, gateway: 10.20.0.1}
instances:
)";
            for (const Placement& p : placements)
                y += fmt::format(
                    "  - {{name: {}, host: compute-{}, network: {}, mac: \"{}\", ipv4: {}, security_groups: [{}],\n"
                    "     port: {{type: vhost-user, socket: {}}}}}\n",
                    p.vm->name, p.host->number, p.vm->network, text(p.vm->mac), text(p.vm->ip), p.groups,
                    socket_of(*p.vm, *p.host).string());
            return y;
        }

        int bgp_converged_ms = 0;
        std::vector<ConfigIdentity> identities;
        std::string host_yaml(const Host& h) {
            identities.push_back(next_config_identity());
            const ConfigIdentity& id = identities.back();
            return fmt::format(R"(host: compute-{n}
dataplane:
  workers: [1]
  eal_args: ["--no-huge", "-m", "256", "--file-prefix", "{prefix}"]
  conntrack: {{capacity: 4096}}
control: {{socket: {control}}}
metrics: {{listen: "127.0.0.1:{port}"}}
uplink:
  port: {{type: tap, name: {tap}}}
  address: {address}/24
  gateway: {fabric}
host_interface: {{name: calyx0}}
routing: {{export_table: 100, import_table: 101}}
include: site.yaml
)",
                               fmt::arg("n", h.number), fmt::arg("prefix", id.eal_prefix),
                               fmt::arg("control", control(h).string()), fmt::arg("port", id.metrics_port),
                               fmt::arg("tap", uplink_tap(h)), fmt::arg("address", text(h.address)),
                               fmt::arg("fabric", text(kFabric)));
        }

        void fail(std::string why) {
            failure = std::move(why);
            for (int n : {1, 2})
                if (calyx[n]) failure += fmt::format("\n--- calyx of host {} ---\n{}", n, calyx[n]->log());
            for (int n : {0, 1, 2})
                if (bird[n]) failure += fmt::format("\n--- BIRD {} ---\n{}", n, bird[n]->log());
        }

        // BIRD in namespace n (0: the fabric's reflector), on `conf`, in the foreground.
        std::expected<void, std::string> start_bird(int n) {
            const fs::path conf = n == 0 ? dir / "bird-0" / "bird.conf" : dir / fmt::format("bird-{}", n) / "bird.conf";
            auto p = ChildProcess::spawn({kIpTool, "netns", "exec", ns_of(n).name(), "/usr/sbin/bird", "-f", "-c",
                                          conf.string(), "-s", bird_control(n).string()},
                                         dir / fmt::format("bird-{}.log", n));
            if (!p) return std::unexpected(p.error());
            bird[n] = std::move(*p);
            return {};
        }
        // The reflector's directory: the shipped route-reflector.conf as bird.conf, its site and
        // clients files; each host's: the shipped bird.conf, its host and peer files.
        std::expected<void, std::string> write_bird_files() {
            fs::create_directories(dir / "bird-0");
            std::error_code ec;
            const fs::path reflector = fs::path(bird_conf_source()).parent_path() / "route-reflector.conf";
            fs::copy_file(reflector, dir / "bird-0" / "bird.conf", fs::copy_options::overwrite_existing, ec);
            if (ec) return std::unexpected(fmt::format("cannot copy {}: {}", reflector.string(), ec.message()));
            dir.write("bird-0/route-reflector-site.conf", kReflectorSite);
            dir.write("bird-0/route-reflector-clients.conf", kReflectorClients);
            for (const Host* h : {&kHost1, &kHost2}) {
                const std::string sub = fmt::format("bird-{}", h->number);
                fs::create_directories(dir / sub);
                fs::copy_file(bird_conf_source(), dir / sub / "bird.conf", fs::copy_options::overwrite_existing, ec);
                if (ec) return std::unexpected(fmt::format("cannot copy {}: {}", bird_conf_source(), ec.message()));
                dir.write(sub + "/calyx-host.conf",
                          fmt::format("router id {};\n"
                                      "define CALYX_AS = 64512;\n"
                                      "define CALYX_EXPORT_TABLE = 100;\n"
                                      "define CALYX_IMPORT_TABLE = 101;\n"
                                      "define CALYX_SITE_NETWORKS = [10.10.0.0/24, 10.20.0.0/24, 203.0.113.0/24];\n"
                                      "define CALYX_SITE_HOSTS = [10.10.0.0/24{{32,32}}, 10.20.0.0/24{{32,32}}, "
                                      "203.0.113.0/24{{32,32}}];\n",
                                      text(h->address)));
                dir.write(sub + "/calyx-peers.conf",
                          fmt::format("protocol bgp rr1 from calyx_peer {{ neighbor {} as 64512; }}\n", text(kFabric)));
            }
            return {};
        }
        // Starts (or restarts) host h's calyx on its file and puts its uplink into the fabric.
        std::expected<void, std::string> start_calyx(const Host& h) {
            auto p = ChildProcess::spawn({kIpTool, "netns", "exec", ns(h).name(), calyx_binary(), "--config",
                                          config_file[h.number].string()},
                                         dir / fmt::format("calyx-{}.{}.log", h.number, starts[h.number]++));
            if (!p) return std::unexpected(p.error());
            calyx[h.number] = std::move(*p);
            if (!calyx[h.number]->wait_for_log("calyx: ready", 30s))
                return std::unexpected(fmt::format("calyx {} is not ready", h.number));
            if (auto r = ns(h).ip(fmt::format("link set {} netns {}", uplink_tap(h), fabric.name())); !r)
                return std::unexpected(r.message());
            if (auto r = fabric.ip(fmt::format("link set {} master br0 up", uplink_tap(h))); !r)
                return std::unexpected(r.message());
            return {};
        }
        // A VM attached to its instance's port (again, after its calyx restarted or it moved).
        std::expected<void, std::string> attach(const Placement& p) {
            vms.erase(p.vm->name);
            auto vm = VmPeer::attach({.socket = socket_of(*p.vm, *p.host).string(), .mac = p.vm->mac});
            if (!vm) return std::unexpected(fmt::format("{}: {}", p.vm->name, vm.error()));
            // Its gateway answers: calyx serves it.
            if (!(*vm)->request(arp_request(p.vm->mac, p.vm->ip, p.vm->gateway), kWarmUp,
                                is_arp_reply_for(p.vm->gateway)))
                return std::unexpected(fmt::format("{}: no ARP reply from its gateway", p.vm->name));
            vms[p.vm->name] = std::move(*vm);
            return {};
        }

        void setup() {
            if (!fabric.created() || !h1.created() || !h2.created()) return fail("cannot create the namespaces");
            for (const std::string& cmd : std::vector<std::string>{
                     // A bridge takes the lowest MAC of its ports unless given one: with ports
                     // coming and going (calyx restarted), the fabric's MAC would change under
                     // the hosts' pinned gateway entry.
                     "link set lo up", "link add br0 address 02:00:5e:00:00:01 type bridge", "link set br0 up",
                     fmt::format("addr add {}/24 dev br0", text(kFabric)), fmt::format("addr add {}/32 dev lo", text(kServer))})
                if (auto r = fabric.ip(cmd); !r) return fail(r.message());
            // Without BIRD, the fabric routes web-2 by hand.
            if (!bgp)
                if (auto r = fabric.ip(fmt::format("route add {}/32 via {}", text(kWeb2.ip), text(kHost2.address))); !r)
                    return fail(r.message());
            for (const Namespace* n : {&h1, &h2})
                if (auto r = n->ip("link set lo up"); !r) return fail(r.message());
            dir.write("site.yaml", site_yaml());
            for (const Host* h : {&kHost1, &kHost2}) {
                config_file[h->number] = dir.write(fmt::format("compute-{}.yaml", h->number), host_yaml(*h));
                if (auto started = start_calyx(*h); !started) return fail(started.error());
            }
            if (bgp) {
                if (auto written = write_bird_files(); !written) return fail(written.error());
                const auto started = Clock::now();
                for (int n : {0, 1, 2})
                    if (auto b = start_bird(n); !b) return fail(b.error());
                // Each host learns the other's two instances, the fabric web-2.
                for (const Placement& p : placements) {
                    const Host& other = p.host->number == 1 ? kHost2 : kHost1;
                    if (!wait_for_route(ns(other), "table 101", p.vm->ip, p.host->address, 60s))
                        return fail(fmt::format("host {} did not learn {} by BGP", other.number, p.vm->name));
                }
                if (!wait_for_route(fabric, "", kWeb2.ip, kHost2.address, 10s))
                    return fail("the reflector did not route web-2");
                bgp_converged_ms = static_cast<int>(
                    std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count());
            } else {
                // What BIRD would write: the other host's instances via its address.
                for (const Placement& p : placements) {
                    const Host& other = p.host->number == 1 ? kHost2 : kHost1;
                    if (auto r = ns(other).ip(fmt::format("route add {}/32 via {} proto bird table 101",
                                                          text(p.vm->ip), text(p.host->address)));
                        !r)
                        return fail(r.message());
                }
            }
            const auto script = dir / "server.py";
            std::ofstream(script) << kServerScript;
            const auto started = fabric.exec(fmt::format("python3 {} {} >/dev/null 2>&1 & echo $!", script.string(),
                                                         (dir / "server.ready").string()));
            server_pid = std::atoi(started.output.c_str());
            for (int i = 0; i < 100 && !fs::exists(dir / "server.ready"); ++i) std::this_thread::sleep_for(50ms);
            if (!fs::exists(dir / "server.ready")) return fail("the UDP server did not start");
            for (const Placement& p : placements)
                if (auto a = attach(p); !a) return fail(a.error());
            // The fabric reaches both hosts (calyx answers ARP for their addresses).
            for (const Host* h : {&kHost1, &kHost2})
                if (fabric.exec(fmt::format("ping -c 1 -W 3 {}", text(h->address))).status != 0)
                    return fail(fmt::format("the fabric cannot ping host {}", h->number));
            ready = true;
        }
    };
    static inline Shared* s_ = nullptr;

    VmPeer& vm(const Vm& v) { return *s_->vms.at(v.name); }

    // `calyxctl --json COMMAND` against a host's calyx.
    static Json ctl(const Host& h, const std::string& command) {
        const auto r = sh(fmt::format("{} --socket {} --json {}", calyxctl_binary(), s_->control(h).string(), command));
        EXPECT_EQ(r.status, 0) << r.output;
        return Json::parse(r.output, nullptr, false);
    }
    // `birdc COMMAND` against BIRD n (0: the reflector).
    static std::string birdc(int n, const std::string& command) {
        return sh(fmt::format("birdc -s {} {}", s_->bird_control(n).string(), command)).output;
    }
    static bool established(int n, const std::string& protocol) {
        return birdc(n, "show protocols " + protocol).find("Established") != std::string::npos;
    }
    static bool wait_established(int n, const std::string& protocol, std::chrono::milliseconds timeout) {
        const auto deadline = Clock::now() + timeout;
        while (!established(n, protocol)) {
            if (Clock::now() > deadline) return false;
            std::this_thread::sleep_for(100ms);
        }
        return true;
    }
    // Every calyx rereads the site file (both hosts share it).
    static void reload_site() {
        s_->dir.write("site.yaml", s_->site_yaml());
        for (const Host* h : {&kHost1, &kHost2}) {
            const Json r = ctl(*h, "reload");
            EXPECT_FALSE(r.contains("error")) << r.dump();
        }
    }
    static void report(const char* what, int ms) {
        RecordProperty(what, ms);
        std::cerr << "[calyx-it] " << what << " = " << ms << " ms\n";
    }
    static uint64_t drops(const Host& h, std::string_view port, std::string_view reason) {
        const Json j = ctl(h, "drops --all");
        if (!j.contains("result")) return 0;
        for (const auto& d : j["result"]["drops"])
            if (d["port"] == port && d["reason"] == reason) return d["packets"].get<uint64_t>();
        return 0;
    }
    static Bytes udp_frame(const Vm& from, Ipv4Addr to, uint16_t sport, uint16_t dport, std::string payload = "") {
        return FrameBuilder()
            .eth(from.mac, kGatewayMac)
            .ipv4(from.ip, to, ipproto::kUdp)
            .udp(sport, dport, std::vector<uint8_t>(payload.begin(), payload.end()))
            .build();
    }
    static FramePredicate udp_to(const Vm& v, uint16_t port) {
        return [&v, port](const Bytes& f) {
            return is_udp(f) && Ipv4Addr::from_be(ipv4_of(f).dst) == v.ip && udp_of(f).dst_port.host() == port;
        };
    }
    static FramePredicate tcp_to(const Vm& v, uint16_t port) {
        return [&v, port](const Bytes& f) {
            return is_tcp(f) && Ipv4Addr::from_be(ipv4_of(f).dst) == v.ip && tcp_of(f).dst_port.host() == port;
        };
    }
    static Bytes tcp_syn(const Vm& from, Ipv4Addr to, uint16_t sport, uint16_t dport) {
        return FrameBuilder()
            .eth(from.mac, kGatewayMac)
            .ipv4(from.ip, to, ipproto::kTcp)
            .tcp(sport, dport, TcpHdr::kSyn, 1000, 0)
            .build();
    }
    // Ping from `from` to `to` across the hosts: the request arrives with its source unchanged,
    // the reply comes back. Retried while `within` lasts (routes, ARP, RPF may still settle).
    ::testing::AssertionResult ping_across(const Vm& from, const Vm& to, uint16_t id,
                                           std::chrono::milliseconds within = kWarmUp) {
        const auto deadline = Clock::now() + within;
        uint16_t seq = 0;
        while (Clock::now() < deadline) {
            ++seq;
            vm(from).send(echo_request(from.mac, kGatewayMac, from.ip, to.ip, id, seq));
            const auto req = vm(to).receive(200ms, is_echo_request(id, seq));
            if (!req) continue;
            if (Ipv4Addr::from_be(ipv4_of(*req).src) != from.ip)
                return ::testing::AssertionFailure() << "the source changed: " << describe_frame(*req);
            vm(to).send(echo_reply(to.mac, kGatewayMac, to.ip, from.ip, id, seq));
            if (vm(from).receive(kReply, is_echo_reply(id, seq))) return ::testing::AssertionSuccess();
            return ::testing::AssertionFailure() << "the reply did not come back to " << from.name;
        }
        return ::testing::AssertionFailure() << "no echo request of " << from.name << " reached " << to.name;
    }
};

TEST_F(Site, EachHostExportsItsOwnInstancesOnly) {
    const auto table = [&](const Host& h) { return s_->ns(h).exec("ip route show table 100 proto 67").output; };
    EXPECT_EQ(table(kHost1), "blackhole 10.10.0.5 \nblackhole 10.20.0.10 \n");
    EXPECT_EQ(table(kHost2), "blackhole 10.20.0.11 \nblackhole 203.0.113.20 \n");
}

TEST_F(Site, PrivateInstancesOnTwoHostsTalkWithTheirSourceUnchanged) {
    EXPECT_TRUE(ping_across(kDb1, kDb2, 101));
    EXPECT_TRUE(ping_across(kDb2, kDb1, 102));
    // And a TCP connection their rules allow: the SYN arrives as sent.
    vm(kDb1).send(tcp_syn(kDb1, kDb2.ip, 40000, 5432));
    const auto syn = vm(kDb2).receive(kReply, tcp_to(kDb2, 5432));
    ASSERT_TRUE(syn.has_value());
    EXPECT_EQ(Ipv4Addr::from_be(ipv4_of(*syn).src), kDb1.ip);
    EXPECT_EQ(tcp_of(*syn).src_port.host(), 40000);
}

TEST_F(Site, ARefusalIsCountedOnTheDestinationHost) {
    ASSERT_TRUE(ping_across(kDb1, kDb2, 201));
    const uint64_t before = drops(kHost2, "uplink", "sg_no_ingress_rule");
    // db-1 may send anything to group db; db-2 takes tcp only on 5432.
    vm(kDb1).send(tcp_syn(kDb1, kDb2.ip, 40001, 22));
    EXPECT_FALSE(vm(kDb2).receive(kSilence, tcp_to(kDb2, 22)).has_value());
    uint64_t after = before;
    for (int i = 0; i < 30 && after == before; ++i) {
        std::this_thread::sleep_for(100ms);
        after = drops(kHost2, "uplink", "sg_no_ingress_rule");
    }
    EXPECT_EQ(after, before + 1) << "counted on host 2, where db-2's ingress rules are";
    EXPECT_EQ(drops(kHost1, "db-1", "sg_no_egress_rule"), 0u) << "host 1 let it out";
}

TEST_F(Site, APublicInstanceOnHost2IsReachableFromTheInternet) {
    auto ping = std::async(std::launch::async, [] {
        return s_->fabric.exec(fmt::format("ping -c 1 -W 5 {}", text(kWeb2.ip)));
    });
    const auto req = vm(kWeb2).receive(kWarmUp, [](const Bytes& f) {
        return is_icmp(f) && icmp_of(f).type == icmp::kEchoRequest;
    });
    ASSERT_TRUE(req.has_value()) << "the Internet's ping never reached web-2";
    EXPECT_EQ(Ipv4Addr::from_be(ipv4_of(*req).src), kFabric);
    const IcmpHdr ic = icmp_of(*req);
    const size_t at = l4_offset(*req) + 4;
    const uint16_t id = static_cast<uint16_t>((*req)[at] << 8 | (*req)[at + 1]);
    const uint16_t seq = static_cast<uint16_t>((*req)[at + 2] << 8 | (*req)[at + 3]);
    (void)ic;
    vm(kWeb2).send(echo_reply(kWeb2.mac, kGatewayMac, kWeb2.ip, kFabric, id, seq));
    const auto result = ping.get();
    EXPECT_EQ(result.status, 0) << result.output;
}

TEST_F(Site, ANatInstanceOnHost1IsMasqueradedToHost1sAddress) {
    std::optional<Bytes> answer;
    for (int i = 0; i < 10 && !answer; ++i) {  // the first may meet an unresolved gateway
        vm(kApp1).send(udp_frame(kApp1, kServer, 33000, kServerPort, "who am I"));
        answer = vm(kApp1).receive(1s, udp_to(kApp1, 33000));
    }
    ASSERT_TRUE(answer.has_value()) << "no answer from the Internet's server";
    const size_t at = l4_offset(*answer) + sizeof(UdpHdr);
    const std::string seen(answer->begin() + static_cast<long>(at), answer->end());
    EXPECT_TRUE(seen.starts_with(text(kHost1.address) + ":")) << seen;
}

TEST_F(Site, ANatInstanceReachesAnotherHostUnmasqueraded) {
    // app-1 (nat, host 1) pings web-2 (host 2, icmp from anywhere): inside the site the source
    // stays app-1's own; masquerade is only for what leaves the site.
    EXPECT_TRUE(ping_across(kApp1, kWeb2, 111));
}

TEST_F(Site, TheHostsOwnServiceIsReachableFromTheFabric) {
    const auto ready = s_->dir / "listener.ready";
    auto listener = std::async(std::launch::async, [&] {
        return s_->h1.exec(fmt::format(
            "timeout 15 python3 -c \"import socket; s = socket.socket(); "
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('{}', 2222)); s.listen(1); "
            "open('{}', 'w').close(); c, a = s.accept(); c.sendall(('seen ' + a[0]).encode()); c.close()\"",
            text(kHost1.address), ready.string()));
    });
    for (int i = 0; i < 100 && !fs::exists(ready); ++i) std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(fs::exists(ready)) << "the listener did not start";
    const auto got = s_->fabric.exec(fmt::format(
        "timeout 10 python3 -c \"import socket; print(socket.create_connection(('{}', 2222), timeout=5).recv(64).decode())\"",
        text(kHost1.address)));
    EXPECT_EQ(got.status, 0) << got.output;
    EXPECT_EQ(got.output, "seen " + text(kFabric) + "\n");
    EXPECT_EQ(listener.get().status, 0);
    // The fabric's ping of the host is answered by the host's kernel, through the tap.
    EXPECT_EQ(s_->fabric.exec(fmt::format("ping -c 1 -W 3 {}", text(kHost1.address))).status, 0);
    const Json ports = ctl(kHost1, "ports");
    bool host_port_used = false;
    for (const auto& p : ports["result"]["ports"])
        if (p["name"] == "host_interface") host_port_used = p["rx_packets"].get<uint64_t>() > 0;
    EXPECT_TRUE(host_port_used) << ports.dump();
}

TEST_F(Site, ASiteSourceFromAnyoneButItsHostIsAMartian) {
    ASSERT_TRUE(ping_across(kDb2, kDb1, 301));
    // The fabric claims db-2's address and sends to db-1 through host 1.
    ASSERT_TRUE(s_->fabric.ip(fmt::format("addr add {}/32 dev lo", text(kDb2.ip))));
    ASSERT_TRUE(s_->fabric.ip(fmt::format("route add {}/32 via {}", text(kDb1.ip), text(kHost1.address))));
    const uint64_t before = drops(kHost1, "uplink", "martian_source");
    const auto spoofed = s_->fabric.exec(fmt::format("ping -c 3 -i 0.2 -W 1 -I {} {}", text(kDb2.ip), text(kDb1.ip)));
    EXPECT_NE(spoofed.status, 0) << spoofed.output;
    EXPECT_FALSE(vm(kDb1).receive(kSilence, [](const Bytes& f) {
        return is_icmp(f) && Ipv4Addr::from_be(ipv4_of(f).src) == kDb2.ip && icmp_of(f).type == icmp::kEchoRequest;
    }));
    EXPECT_GE(drops(kHost1, "uplink", "martian_source"), before + 3);
    EXPECT_TRUE(s_->fabric.ip(fmt::format("route del {}/32", text(kDb1.ip))));
    EXPECT_TRUE(s_->fabric.ip(fmt::format("addr del {}/32 dev lo", text(kDb2.ip))));
    EXPECT_TRUE(ping_across(kDb2, kDb1, 302)) << "the real db-2 still passes";
}

TEST_F(Site, AWithdrawnRouteStopsTheTrafficAndItsReturnRestoresIt) {
    ASSERT_TRUE(ping_across(kDb1, kDb2, 401));
    const std::string route = fmt::format("{}/32 via {} proto bird table 101", text(kDb2.ip), text(kHost2.address));
    ASSERT_TRUE(s_->h1.ip("route del " + route));
    // Within a housekeeping tick or two calyx routes db-2 by the default route: to the fabric,
    // which sends it back to no one (private addresses are not routed there).
    std::this_thread::sleep_for(500ms);
    EXPECT_FALSE(ping_across(kDb1, kDb2, 402, 1s));
    const auto added = Clock::now();
    ASSERT_TRUE(s_->h1.ip("route add " + route));
    EXPECT_TRUE(ping_across(kDb1, kDb2, 403, 5s));
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - added).count();
    RecordProperty("route_return_to_traffic_ms", static_cast<int>(ms));
    std::cerr << "[calyx-it] a returned route carried traffic after " << ms << " ms\n";
}

// integration-site-bgp only (CALYX_SITE_BGP=1): routes exchanged by real bird2.

TEST_F(Site, BgpSessionsAreEstablishedThroughTheHostInterfaces) {
    for (const char* host : {"h1", "h2"}) EXPECT_TRUE(established(0, host)) << birdc(0, "show protocols");
    for (int n : {1, 2}) EXPECT_TRUE(established(n, "rr1")) << birdc(n, "show protocols all rr1");
    report("bgp_start_until_both_hosts_route_ms", s_->bgp_converged_ms);
    // The sessions run through calyx: the host interface carried them both ways.
    for (const Host* h : {&kHost1, &kHost2}) {
        const Json ports = ctl(*h, "ports");
        bool found = false;
        for (const auto& p : ports["result"]["ports"])
            if (p["name"] == "host_interface") {
                found = true;
                EXPECT_GT(p["rx_packets"].get<uint64_t>(), 0u) << p.dump();
                EXPECT_GT(p["tx_packets"].get<uint64_t>(), 0u) << p.dump();
            }
        EXPECT_TRUE(found) << ports.dump();
    }
}

TEST_F(Site, BgpEachHostLearnsTheOthersInstancesAndNothingElse) {
    // The reflector has all four, and the noise it would send on.
    const std::string reflected = birdc(0, "show route");
    for (const Placement& p : kPlacements) EXPECT_NE(reflected.find(text(p.vm->ip) + "/32"), std::string::npos) << reflected;
    EXPECT_NE(reflected.find("192.0.2.99/32"), std::string::npos) << reflected;
    // Each host's import table: exactly the other host's two instances, via that host.
    for (const Host* h : {&kHost1, &kHost2}) {
        const Host& other = h->number == 1 ? kHost2 : kHost1;
        const std::string table = s_->ns(*h).exec("ip route show table 101").output;
        EXPECT_EQ(std::ranges::count(table, '\n'), 2) << "host " << h->number << ":\n" << table;
        for (const Placement& p : kPlacements)
            if (p.host == &other) {
                EXPECT_TRUE(has_route(s_->ns(*h), "table 101", p.vm->ip, other.address)) << table;
            }
        for (const char* noise : {"default", "10.20.0.128", "192.0.2.99"})
            EXPECT_EQ(table.find(noise), std::string::npos) << noise << " got in:\n" << table;
        // And the main table is BIRD-free.
        EXPECT_EQ(s_->ns(*h).exec("ip route show proto bird").output, "");
    }
    // calyxctl routes: db-2 on host 1, learnt by BIRD, via host 2.
    bool shown = false;
    const Json routes = ctl(kHost1, "routes");
    for (const auto& r : routes["result"]["routes"])
        if (r["prefix"] == text(kDb2.ip) + "/32") {
            shown = true;
            EXPECT_EQ(r["next_hop"]["next_hops"], Json::array({text(kHost2.address)})) << r.dump();
            EXPECT_EQ(r["origin"], Json({{"table", 101}, {"protocol", "bird"}})) << r.dump();
        }
    EXPECT_TRUE(shown) << "calyxctl routes does not show db-2: " << routes.dump();
}

TEST_F(Site, BgpOnlyCalyxsSiteRoutesLeaveAHost) {
    // What calyx writes (proto 67, a /32 of the site) leaves; nothing else in its table does.
    const std::vector<std::string> refused = {"blackhole 10.20.0.77/32 proto static", "blackhole 192.0.2.98/32 proto 67",
                                              "blackhole 10.20.0.0/25 proto 67"};
    const std::string control = "blackhole 10.20.0.78/32 proto 67";
    for (const auto& r : refused) ASSERT_TRUE(s_->h1.ip("route add table 100 " + r));
    ASSERT_TRUE(s_->h1.ip("route add table 100 " + control));
    EXPECT_TRUE(wait_for_route(s_->h2, "table 101", Ipv4Addr::from_octets(10, 20, 0, 78), kHost1.address, 10s))
        << "the control route did not reach host 2";
    std::this_thread::sleep_for(500ms);
    const std::string reflected = birdc(0, "show route");
    for (const char* prefix : {"10.20.0.77/32", "192.0.2.98/32", "10.20.0.0/25"})
        EXPECT_EQ(reflected.find(prefix), std::string::npos) << prefix << " left host 1:\n" << reflected;
    for (const auto& r : refused) s_->h1.exec("ip route del table 100 " + r);
    s_->h1.exec("ip route del table 100 " + control);  // calyx may have removed it already
    EXPECT_TRUE(wait_for_route(s_->h2, "table 101", Ipv4Addr::from_octets(10, 20, 0, 78), kHost1.address, 10s, false));
}

TEST_F(Site, BgpAnInstanceAddedOnHost2IsReachableFromHost1AndMovedToHost1) {
    ASSERT_TRUE(ping_across(kDb1, kDb2, 601));
    s_->placements.push_back({&kDb3, &kHost2, "db"});
    const auto added = Clock::now();
    reload_site();
    ASSERT_TRUE(s_->attach(s_->placements.back())) << "db-3 on host 2";
    ASSERT_TRUE(wait_for_route(s_->h1, "table 101", kDb3.ip, kHost2.address, 10s)) << "host 1 never learnt db-3";
    report("instance_added_until_other_host_routes_ms", ms_since(added));
    EXPECT_TRUE(ping_across(kDb1, kDb3, 602, 10s));
    report("instance_added_until_traffic_ms", ms_since(added));

    // Moved: removed on host 2, added on host 1, by one change of the site file.
    s_->vms.erase(kDb3.name);
    s_->placements.back().host = &kHost1;
    const auto moved = Clock::now();
    reload_site();
    ASSERT_TRUE(s_->attach(s_->placements.back())) << "db-3 on host 1";
    EXPECT_TRUE(wait_for_route(s_->h1, "table 101", kDb3.ip, kHost2.address, 10s, false)) << "host 1 kept its route";
    report("instance_removed_until_other_host_withdraws_ms", ms_since(moved));
    EXPECT_TRUE(wait_for_route(s_->h2, "table 101", kDb3.ip, kHost1.address, 10s)) << "host 2 never learnt db-3";
    EXPECT_TRUE(ping_across(kDb2, kDb3, 603, 10s));
    report("instance_moved_until_traffic_ms", ms_since(moved));
}

TEST_F(Site, BgpABirdRestartKeepsForwarding) {
    ASSERT_TRUE(ping_across(kDb1, kDb2, 701));
    // BIRD on host 2 goes down announcing a graceful restart, and stays away a while.
    birdc(2, "graceful restart");
    ASSERT_TRUE(s_->bird[2]->wait(10s).has_value()) << "BIRD 2 did not stop";
    std::this_thread::sleep_for(2s);
    // The reflector keeps host 2's routes (stale), host 2 keeps its import table (persist).
    EXPECT_TRUE(has_route(s_->h1, "table 101", kDb2.ip, kHost2.address));
    EXPECT_TRUE(has_route(s_->h2, "table 101", kDb1.ip, kHost1.address));
    EXPECT_TRUE(ping_across(kDb1, kDb2, 702, 2s));
    EXPECT_TRUE(ping_across(kDb2, kDb1, 703, 2s));
    const auto back = Clock::now();
    ASSERT_TRUE(s_->start_bird(2));
    EXPECT_TRUE(wait_established(0, "h2", 60s)) << birdc(0, "show protocols all h2");
    report("bird_restart_until_established_ms", ms_since(back));
    EXPECT_TRUE(ping_across(kDb1, kDb2, 704, 5s));
    EXPECT_TRUE(ping_across(kDb2, kDb1, 705, 5s));
}

TEST_F(Site, BgpStoppingCalyxWithdrawsItsRoutesAndARestartBringsThemBack) {
    ASSERT_TRUE(ping_across(kDb1, kDb2, 801));
    const auto stopped = Clock::now();
    EXPECT_EQ(s_->calyx[2]->stop(), 0) << s_->calyx[2]->log();
    EXPECT_TRUE(wait_for_route(s_->h1, "table 101", kDb2.ip, kHost2.address, 10s, false))
        << "host 1 kept db-2's route";
    report("host_calyx_stopped_until_routes_withdrawn_ms", ms_since(stopped));
    EXPECT_TRUE(wait_for_route(s_->fabric, "", kWeb2.ip, kHost2.address, 10s, false)) << "the Internet kept web-2's route";
    // Host 1 goes on: its nat instance still reaches the Internet.
    std::optional<Bytes> answer;
    for (int i = 0; i < 5 && !answer; ++i) {
        vm(kApp1).send(udp_frame(kApp1, kServer, 33100, kServerPort, "still here"));
        answer = vm(kApp1).receive(1s, udp_to(kApp1, 33100));
    }
    EXPECT_TRUE(answer.has_value()) << "host 1 stopped working with host 2";

    for (const Vm* v : {&kDb2, &kWeb2}) s_->vms.erase(v->name);
    const auto restarted = Clock::now();
    if (auto started = s_->start_calyx(kHost2); !started) FAIL() << started.error();
    for (const Placement& p : s_->placements)
        if (p.host == &kHost2) {
            const auto attached = s_->attach(p);
            ASSERT_TRUE(attached) << attached.error();
        }
    EXPECT_TRUE(wait_for_route(s_->h1, "table 101", kDb2.ip, kHost2.address, 60s)) << birdc(2, "show protocols all");
    report("host_calyx_restarted_until_other_host_routes_ms", ms_since(restarted));
    EXPECT_TRUE(ping_across(kDb1, kDb2, 802, 10s));
    EXPECT_TRUE(ping_across(kDb2, kDb1, 803, 10s));
    report("host_calyx_restarted_until_traffic_ms", ms_since(restarted));
}

// Last: stops host 1's BIRD for good.
TEST_F(Site, BgpZzStoppingBirdWithdrawsItsHostsRoutes) {
    ASSERT_TRUE(has_route(s_->h2, "table 101", kDb1.ip, kHost1.address));
    const auto stopped = Clock::now();
    s_->bird[1]->stop();
    EXPECT_TRUE(wait_for_route(s_->h2, "table 101", kDb1.ip, kHost1.address, 10s, false)) << birdc(0, "show route");
    report("host_bird_stopped_until_routes_withdrawn_ms", ms_since(stopped));
    // Within a housekeeping tick calyx on host 2 has no route to db-1 any more.
    std::this_thread::sleep_for(500ms);
    EXPECT_FALSE(ping_across(kDb2, kDb1, 901, 1s));
}

// integration-site only (routes by hand). Last: stops host 2's calyx.
TEST_F(Site, ZzStoppingCalyxWithdrawsItsRoutes) {
    ASSERT_FALSE(s_->h2.exec("ip route show table 100 proto 67").output.empty());
    EXPECT_EQ(s_->calyx[2]->stop(), 0) << s_->calyx[2]->log();
    EXPECT_EQ(s_->h2.exec("ip route show table 100 proto 67").output, "") << "BIRD would withdraw them";
    EXPECT_FALSE(s_->h2.exec("ip route show table 100").output.find("blackhole") != std::string::npos);
    EXPECT_FALSE(ping_across(kDb1, kDb2, 501, 1s));
}

}  // namespace
}  // namespace calyx::test

int main(int argc, char** argv) { return calyx::test::run_integration_tests(argc, argv); }
