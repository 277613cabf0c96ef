#include "calyx_fixture.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <iostream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace calyx::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

unsigned g_config_seq = 0;

constexpr std::string_view kCountersHeader = "calyx: counters\n";
constexpr std::string_view kReloadedLine = "calyx: reloaded: generation ";
constexpr std::string_view kRejectedLine = "calyx: reload rejected";
constexpr std::string_view kFailedLine = "calyx: reload failed";

std::optional<uint64_t> to_u64(std::string_view s) {
    uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size()) return std::nullopt;
    return v;
}

std::vector<std::string_view> words(std::string_view line) {
    std::vector<std::string_view> out;
    size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && line[i] == ' ') ++i;
        const size_t start = i;
        while (i < line.size() && line[i] != ' ') ++i;
        if (i > start) out.push_back(line.substr(start, i - start));
    }
    return out;
}

}  // namespace

std::string text(Ipv4Addr a) {
    const uint32_t v = a.value;
    return fmt::format("{}.{}.{}.{}", v >> 24, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff);
}

std::string text(const MacAddr& m) {
    return fmt::format("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m.bytes[0], m.bytes[1],
                       m.bytes[2], m.bytes[3], m.bytes[4], m.bytes[5]);
}

std::string describe_all(const std::vector<Bytes>& frames) {
    std::string s;
    for (auto& f : frames) s += "  " + describe_frame(f) + "\n";
    return s;
}

// ------------------------------------------------------------------------------------------
// Configs

SecurityPolicy SecurityPolicy::open_to_all() {
    SecurityPolicy p;
    p.group("open", {"{direction: ingress, protocol: any}", "{direction: egress, protocol: any}"});
    for (const Vm* vm : kVms) p.member(*vm, {"open"});
    return p;
}

SecurityPolicy& SecurityPolicy::group(std::string name, std::vector<std::string> rules) {
    groups.push_back({std::move(name), std::move(rules)});
    return *this;
}

SecurityPolicy& SecurityPolicy::member(const Vm& vm, std::vector<std::string> g) {
    members[vm.name] = std::move(g);
    return *this;
}

ConfigIdentity next_config_identity() {
    ++g_config_seq;
    return {fmt::format("calyx-it-{}-{}", ::getpid(), g_config_seq),
            // Below Linux's ephemeral range (32768-60999): no outgoing connection of this
            // machine can hold the port calyx is about to listen on.
            10000 + (static_cast<unsigned>(::getpid()) * 13 + g_config_seq) % 22000};
}

namespace {
std::vector<unsigned> worker_lcores(const ConfigOptions& opts) {
    std::vector<unsigned> lcores;
    for (unsigned w = 1; w <= opts.workers; ++w) lcores.push_back(w);
    return lcores;
}
// "0@0,1@1,2@1": the main lcore on CPU 0, the workers on CPU 1.
std::string lcore_map(const ConfigOptions& opts) {
    std::string map = "0@0";
    for (unsigned lcore : worker_lcores(opts)) map += fmt::format(",{}@1", lcore);
    return map;
}
}  // namespace

std::vector<const Vm*> ConfigOptions::vms() const {
    std::vector<const Vm*> all(kVms.begin(), kVms.end());
    for (const Vm& vm : more_vms) all.push_back(&vm);
    return all;
}

std::string gateway_config(const TempDir& dir, const ConfigOptions& opts,
                           const ConfigIdentity& id) {
    std::string y =
        fmt::format(R"(# written by the calyx integration tests
dataplane:
  workers: [{workers}]
  eal_args: ["--no-huge", "-m", "512", "--file-prefix", "{prefix}"{lcores}]
  conntrack: {{capacity: {capacity}}}
control:
  socket: {dir}/calyx.sock
metrics:
  listen: 127.0.0.1:{metrics_port}
networks:
  - name: public
    kind: public
    cidr: 203.0.113.0/24
    gateway: 203.0.113.1
    dns: [{dns}]
    mtu: {mtu}
  - name: nat
    kind: nat
    cidr: 10.10.0.0/24
    gateway: 10.10.0.1
  - name: private
    kind: private
    cidr: 10.20.0.0/24
    gateway: 10.20.0.1
)",
                    fmt::arg("prefix", id.eal_prefix), fmt::arg("dir", dir.path().string()),
                    fmt::arg("workers", fmt::join(worker_lcores(opts), ", ")),
                    fmt::arg("lcores", opts.workers > 1 ? fmt::format(", \"--lcores\", \"{}\"", lcore_map(opts)) : ""),
                    fmt::arg("metrics_port", id.metrics_port), fmt::arg("dns", text(kPublicDns)),
                    fmt::arg("mtu", kPublicMtu), fmt::arg("capacity", opts.conntrack_capacity));
    if (!opts.limits.empty()) y += fmt::format("limits: {}\n", opts.limits);
    if (!opts.uplink_tap.empty() || !opts.uplink_port.empty()) {
        y += fmt::format("uplink:\n  port: {}\n  address: {}/24\n  gateway: {}\n",
                         opts.uplink_port.empty() ? fmt::format("{{type: tap, name: {}}}", opts.uplink_tap)
                                                  : opts.uplink_port,
                         text(kHostAddress), text(kUpstream));
        if (!opts.uplink_nat_ports.empty()) y += fmt::format("  nat_ports: \"{}\"\n", opts.uplink_nat_ports);
    }
    if (!opts.security.groups.empty()) {
        y += "security_groups:\n";
        for (const auto& g : opts.security.groups) {
            y += fmt::format("  - name: {}\n", g.name);
            if (g.rules.empty()) {
                y += "    rules: []\n";
                continue;
            }
            y += "    rules:\n";
            for (const auto& r : g.rules) y += fmt::format("      - {}\n", r);
        }
    }
    y += "instances:\n";
    for (const Vm* vm : opts.vms()) {
        y += fmt::format(
            R"(  - name: {name}
    network: {network}
    mac: {mac}
    ipv4: {ip}
)",
            fmt::arg("name", vm->name), fmt::arg("network", vm->network),
            fmt::arg("mac", text(vm->mac)), fmt::arg("ip", text(vm->ip)));
        if (auto it = opts.security.members.find(vm->name);
            it != opts.security.members.end() && !it->second.empty())
            y += fmt::format("    security_groups: [{}]\n", fmt::join(it->second, ", "));
        const auto queues = opts.queues.find(vm->name);
        y += fmt::format(
            "    port: {{type: vhost-user, socket: {dir}/{name}.sock, mode: {mode}, queues: {queues}}}\n",
            fmt::arg("dir", dir.path().string()), fmt::arg("name", vm->name),
            fmt::arg("mode", opts.client_mode.contains(vm->name) ? "client" : "server"),
            fmt::arg("queues", queues == opts.queues.end() ? 1 : queues->second));
        if (auto it = opts.instance_limits.find(vm->name); it != opts.instance_limits.end())
            y += fmt::format("    limits: {}\n", it->second);
    }
    return y;
}

std::vector<LocatedError> located_errors(const std::string& err) {
    static const std::regex re(R"(^(.+):(\d+):(\d+): (.+)$)");
    std::vector<LocatedError> out;
    std::istringstream in(err);
    std::string line;
    std::smatch m;
    while (std::getline(in, line))
        if (std::regex_match(line, m, re))
            out.push_back({m[1], std::stoi(m[2]), std::stoi(m[3]), m[4]});
    return out;
}

int line_of(const std::string& text, std::string_view marker) {
    std::istringstream in(text);
    std::string line;
    for (int n = 1; std::getline(in, line); ++n)
        if (line.find(marker) != std::string::npos) return n;
    return 0;
}

// ------------------------------------------------------------------------------------------
// Counters

uint64_t CountersReport::drops(std::string_view instance, std::string_view reason) const {
    auto p = ports.find(std::string(instance));
    if (p == ports.end()) return 0;
    auto d = p->second.drops.find(std::string(reason));
    return d == p->second.drops.end() ? 0 : d->second;
}

uint64_t CountersReport::all_drops(std::string_view instance) const {
    auto p = ports.find(std::string(instance));
    if (p == ports.end()) return 0;
    uint64_t n = 0;
    for (const auto& [reason, count] : p->second.drops) n += count;
    return n;
}

std::optional<CountersReport> parse_counters(std::string_view block) {
    CountersReport r;
    r.text = std::string(block);
    PortReport* port = nullptr;
    bool saw_header = false, saw_end = false;
    size_t pos = 0;
    while (pos < block.size()) {
        size_t eol = block.find('\n', pos);
        if (eol == std::string_view::npos) eol = block.size();
        const std::string_view line = block.substr(pos, eol - pos);
        pos = eol + 1;
        const auto w = words(line);
        if (line == "calyx: counters") {
            saw_header = true;
        } else if (line.starts_with("port ") && w.size() >= 3) {
            // port NAME (up|down): SOCKET rx N pkts N bytes, tx N pkts N bytes
            port = &r.ports[std::string(w[1])];
            port->up = w[2] == "(up):";
            for (size_t i = 3; i + 1 < w.size(); ++i) {
                if (w[i] == "rx") port->rx_packets = to_u64(w[i + 1]).value_or(0);
                if (w[i] == "tx") port->tx_packets = to_u64(w[i + 1]).value_or(0);
            }
        } else if (line.starts_with("  drop ") && w.size() == 3 && port) {
            if (auto n = to_u64(w[2])) port->drops[std::string(w[1])] = *n;
        } else if (line.starts_with("instance ") && w.size() == 7) {
            // instance NAME: N connections, M nat ports
            std::string_view name = w[1];
            if (name.ends_with(':')) name.remove_suffix(1);
            InstanceReport& inst = r.instances[std::string(name)];
            inst.connections = to_u64(w[2]).value_or(0);
            inst.nat_ports = to_u64(w[4]).value_or(0);
        } else if (line.starts_with("conntrack: ")) {
            // conntrack: E entries of C, N created, X expired, V evicted
            for (size_t i = 1; i + 1 < w.size(); ++i) {
                const std::string_view what = w[i + 1];
                if (what == "entries") r.conntrack_entries = to_u64(w[i]).value_or(0);
                if (what.starts_with("created")) r.conntrack_created = to_u64(w[i]).value_or(0);
                if (what.starts_with("evicted")) r.conntrack_evicted = to_u64(w[i]).value_or(0);
            }
            saw_end = true;
        } else if (!line.starts_with("  ")) {
            port = nullptr;  // "replies: ...", or a log line of another thread
        }
    }
    if (!saw_header || !saw_end) return std::nullopt;
    return r;
}

// ------------------------------------------------------------------------------------------
// Fixture

void CalyxFixture::start_calyx(const ConfigOptions& opts) {
    options_ = opts;
    if (config_.empty()) {
        identity_ = next_config_identity();
        config_ = dir_.write("calyx.yaml", gateway_config(dir_, opts, identity_));
    }
    CalyxStartOptions start;
    for (const Vm* vm : options_.vms())
        if (!is_client_mode(*vm)) start.server_sockets.push_back(socket_of(*vm));
    start.sockets_suffice = true;
    auto c = CalyxProcess::start(config_, start);
    ASSERT_TRUE(c) << c.error() << "\nconfig " << config_.string() << ":\n" << read_file(config_);
    calyx_ = std::move(*c);
}

void CalyxFixture::attach(const Vm& vm) {
    // Server-mode calyx answers the handshake in milliseconds; a client-mode calyx first
    // has to notice the new socket (it retries once a second).
    const auto queues = [&](const std::map<std::string, uint16_t>& m, uint16_t otherwise) {
        const auto it = m.find(vm.name);
        return it == m.end() ? otherwise : it->second;
    };
    VmPeerOptions o{.socket = socket_of(vm),
                    .mac = vm.mac,
                    .server = is_client_mode(vm),
                    .connect_timeout = is_client_mode(vm) ? kReconnect : kHandshake,
                    .queues = queues(options_.guest_queues, queues(options_.queues, 1))};
    std::string last_error;
    const auto deadline = Clock::now() + 5s;
    do {
        auto p = VmPeer::attach(o);
        if (p) {
            peers_[vm.name] = std::move(*p);
            return;
        }
        last_error = p.error();
        if (o.server) break;  // already waited connect_timeout
        std::this_thread::sleep_for(100ms);
    } while (Clock::now() < deadline);
    FAIL() << vm.name << ": cannot attach: " << last_error;
}

VmPeer& CalyxFixture::vm(const Vm& v) {
    auto it = peers_.find(v.name);
    if (it == peers_.end() || !it->second) throw std::logic_error(v.name + " not attached");
    return *it->second;
}

void CalyxFixture::warm_up(const Vm& v) {
    auto reply =
        vm(v).request(arp_request(v.mac, v.ip, v.gateway), kWarmUp, is_arp_reply_for(v.gateway));
    ASSERT_TRUE(reply) << v.name << ": no ARP reply for its gateway " << text(v.gateway)
                       << " within " << kWarmUp.count() << " ms";
}

void CalyxFixture::start_all(const ConfigOptions& opts) {
    static int failed_in_a_row = 0;
    constexpr int kGiveUpAfter = 3;
    ASSERT_LT(failed_in_a_row, kGiveUpAfter) << "calyx could not serve the VMs in the previous "
                                             << kGiveUpAfter << " tests; not trying again";
    ++failed_in_a_row;
    ASSERT_NO_FATAL_FAILURE(start_calyx(opts));
    for (const Vm* v : options_.vms()) ASSERT_NO_FATAL_FAILURE(attach(*v));
    for (const Vm* v : options_.vms()) ASSERT_NO_FATAL_FAILURE(warm_up(*v));
    failed_in_a_row = 0;
}

Bytes CalyxFixture::ping_frame(const Vm& from, Ipv4Addr dst, uint16_t id, uint16_t seq,
                               uint8_t ttl) {
    return echo_request(from.mac, kGatewayMac, from.ip, dst, id, seq, ttl);
}

void CalyxFixture::expect_nothing(const Vm& v, const FramePredicate& pred, std::string_view what,
                                  std::chrono::milliseconds window) {
    const auto got = vm(v).receive_all(window, pred);
    EXPECT_TRUE(got.empty()) << what << ": " << v.name << " received " << got.size()
                             << " frame(s):\n"
                             << describe_all(got);
}

void CalyxFixture::expect_ping_between(const Vm& from, const Vm& to, uint16_t id, uint16_t seq) {
    SCOPED_TRACE(fmt::format("ping {} -> {}", from.name, to.name));
    ASSERT_TRUE(vm(from).send(ping_frame(from, to.ip, id, seq, 64)));
    auto req = vm(to).receive(kReply, is_echo_request(id, seq));
    ASSERT_TRUE(req) << "echo request did not arrive at " << to.name;
    EXPECT_EQ(eth_src(*req), kGatewayMac);
    EXPECT_EQ(eth_dst(*req), to.mac);
    EXPECT_EQ(ipv4_of(*req).src.host(), from.ip.value);
    EXPECT_EQ(ipv4_of(*req).dst.host(), to.ip.value);
    EXPECT_EQ(ipv4_of(*req).ttl, 63) << "TTL must be decremented by exactly 1";
    EXPECT_TRUE(ipv4_checksums_ok(*req)) << describe_frame(*req);

    // The destination answers, as its IP stack would.
    ASSERT_TRUE(vm(to).send(echo_reply(to.mac, kGatewayMac, to.ip, from.ip, id, seq, 64)));
    auto rep = vm(from).receive(kReply, is_echo_reply(id, seq));
    ASSERT_TRUE(rep) << "echo reply did not come back to " << from.name;
    EXPECT_EQ(eth_src(*rep), kGatewayMac);
    EXPECT_EQ(eth_dst(*rep), from.mac);
    EXPECT_EQ(ipv4_of(*rep).src.host(), to.ip.value);
    EXPECT_EQ(ipv4_of(*rep).ttl, 63);
    EXPECT_TRUE(ipv4_checksums_ok(*rep)) << describe_frame(*rep);
}

void CalyxFixture::expect_gateway_answers_ping(const Vm& v, uint16_t id, uint16_t seq) {
    SCOPED_TRACE(fmt::format("ping {} -> its gateway {}", v.name, text(v.gateway)));
    const Bytes req = ping_frame(v, v.gateway, id, seq);
    auto rep = vm(v).request(req, kReply, is_echo_reply(id, seq));
    ASSERT_TRUE(rep) << "no echo reply from the gateway";
    EXPECT_EQ(eth_src(*rep), kGatewayMac);
    EXPECT_EQ(eth_dst(*rep), v.mac);
    EXPECT_EQ(ipv4_of(*rep).src.host(), v.gateway.value);
    EXPECT_EQ(ipv4_of(*rep).dst.host(), v.ip.value);
    EXPECT_TRUE(ipv4_checksums_ok(*rep)) << describe_frame(*rep);
    // Same payload back.
    EXPECT_EQ(rep->size(), req.size());
    if (rep->size() == req.size()) {
        const size_t payload = l4_offset(req) + sizeof(IcmpHdr);
        EXPECT_TRUE(std::equal(req.begin() + payload, req.end(), rep->begin() + payload))
            << "echo payload changed";
    }
}

// --- control signals ----------------------------------------------------------------------

// calyx blocks its control signals before it creates any socket, so once start_calyx()
// returned they are safe to send; the ready line additionally means the workers run.
bool CalyxFixture::calyx_ready() {
    return calyx_ && calyx_->process().wait_for_log("calyx: ready", kControl);
}

std::optional<CountersReport> CalyxFixture::counters() {
    if (!calyx_ || !calyx_->running()) {
        ADD_FAILURE() << "counters: calyx is not running";
        return std::nullopt;
    }
    if (!calyx_ready()) {
        ADD_FAILURE() << "counters: calyx never printed its ready line";
        return std::nullopt;
    }
    const size_t from = calyx_->log().size();
    ::kill(calyx_->process().pid(), SIGUSR1);
    const auto deadline = Clock::now() + kControl;
    for (;;) {
        const std::string log = calyx_->log();
        if (const size_t at = log.find(kCountersHeader, from); at != std::string::npos) {
            const size_t end = log.find("\nconntrack: ", at);
            const size_t eol = end == std::string::npos ? end : log.find('\n', end + 1);
            if (eol != std::string::npos) {
                auto r = parse_counters(std::string_view(log).substr(at, eol - at));
                if (!r) ADD_FAILURE() << "unparsable counters:\n" << log.substr(at, eol - at);
                return r;
            }
        }
        if (!calyx_->running() || Clock::now() >= deadline) {
            ADD_FAILURE() << "calyx printed no counters within " << kControl.count()
                          << " ms of SIGUSR1";
            return std::nullopt;
        }
        std::this_thread::sleep_for(10ms);
    }
}

std::optional<CountersReport> CalyxFixture::wait_for_drops(std::string_view instance,
                                                           std::string_view reason,
                                                           uint64_t at_least,
                                                           std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        auto c = counters();
        if (!c || c->drops(instance, reason) >= at_least || Clock::now() >= deadline) return c;
        std::this_thread::sleep_for(20ms);
    }
}

std::string CalyxFixture::config_text(const ConfigOptions& opts) const {
    ConfigOptions o = opts;
    o.client_mode = options_.client_mode;  // ports stay as they were opened
    return gateway_config(dir_, o, identity_);
}

ReloadOutcome CalyxFixture::reload(const ConfigOptions& opts) {
    const std::string yaml = config_text(opts);
    options_.security = opts.security;
    return reload_text(yaml);
}

ReloadOutcome CalyxFixture::reload_text(const std::string& yaml) {
    dir_.write("calyx.yaml.next", yaml);
    // Replace the file atomically: calyx must never read half of it.
    fs::rename(dir_ / "calyx.yaml.next", config_);
    return send_sighup();
}

ReloadOutcome CalyxFixture::send_sighup() {
    ReloadOutcome r;
    if (!calyx_ || !calyx_->running() || !calyx_ready()) {
        ADD_FAILURE() << "reload: calyx is not running or never became ready";
        return r;
    }
    const size_t from = calyx_->log().size();
    ::kill(calyx_->process().pid(), SIGHUP);
    const auto deadline = Clock::now() + kControl;
    std::string log;
    for (;;) {
        log = calyx_->log();
        const std::string_view tail = std::string_view(log).substr(std::min(from, log.size()));
        if (const size_t at = tail.find(kReloadedLine); at != std::string_view::npos) {
            const size_t eol = tail.find('\n', at);
            if (eol != std::string_view::npos) {
                r.answered = r.accepted = true;
                const size_t num = at + kReloadedLine.size();
                r.generation = to_u64(tail.substr(num, eol - num)).value_or(0);
                break;
            }
        }
        if (tail.find(kRejectedLine) != std::string_view::npos ||
            tail.find(kFailedLine) != std::string_view::npos) {
            r.answered = true;
            break;
        }
        if (!calyx_->running() || Clock::now() >= deadline) {
            ADD_FAILURE() << "calyx gave no verdict on SIGHUP within " << kControl.count() << " ms";
            r.output = log.substr(std::min(from, log.size()));
            return r;
        }
        std::this_thread::sleep_for(10ms);
    }
    // calyx prints the errors after the verdict line; it handles signals one at a time, so its
    // answer to SIGUSR1 comes after everything it printed for the reload.
    counters();
    log = calyx_->log();
    r.output = log.substr(std::min(from, log.size()));
    if (const size_t fence = r.output.find(kCountersHeader); fence != std::string::npos)
        r.output.resize(fence);
    return r;
}

void CalyxFixture::TearDown() {
    const bool died = calyx_ && !calyx_->running();
    if (died) ADD_FAILURE() << "calyx exited during the test";
    if (HasFailure()) {
        std::string peers;
        for (auto& [name, p] : peers_)
            if (p)
                peers += fmt::format("  {}: {} sent {} received {} skipped {}\n", name,
                                     p->attached() ? "attached" : "detached", p->sent(),
                                     p->received(), p->skipped());
        std::cerr << "---- VM peers:\n" << peers;
        // The counters (drop reasons per port) end up in calyx's output printed below.
        if (calyx_ && calyx_->running() && calyx_->log().find("calyx: ready") != std::string::npos)
            counters();
        if (calyx_) std::cerr << "---- " << calyx_->report() << "\n";
        if (!config_.empty())
            std::cerr << "---- config " << config_.string() << ":\n" << read_file(config_) << "\n";
    }
    for (auto& [name, p] : peers_)
        if (p) p->detach();
    peers_.clear();
    if (calyx_) calyx_->stop(5s);
    calyx_.reset();
    cleanup_eal_prefix();
}

void CalyxFixture::cleanup_eal_prefix() {
    if (identity_.eal_prefix.empty()) return;
    std::error_code ec;
    fs::remove_all(fs::path("/var/run/dpdk") / identity_.eal_prefix, ec);
}

int run_integration_tests(int argc, char** argv) {
    testing::InitGoogleTest(&argc, argv);
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a.starts_with("--calyx-bin="))
            set_calyx_binary(a.substr(12));
        else if (!a.starts_with("-"))
            set_calyx_binary(a);
    }
    std::cerr << "[calyx-it] calyx binary: " << calyx_binary() << "\n";
    VmPeerEal eal;
    return RUN_ALL_TESTS();
}

}  // namespace calyx::test
