// Differential test: calyx's connection tracking against the Linux kernel's, packet for packet.
//
// The same scenarios (scenarios.hpp: TCP, UDP, ICMP echo and errors, 4 to 12 packets each)
// go through the real calyx, between two virtio-user VMs (web-1 the client, db-1 the server),
// and through a Linux router in network namespaces (linux_router.hpp) with the equivalent
// policy. Every packet's verdict (forwarded or dropped) must be the same on both, or be one of
// the documented differences (known_differences.hpp). calyx's own pipeline runs beside it in
// the test process (calyx_model.hpp) to name the drop reason of each calyx drop, and must
// agree with the real calyx on every packet (else a frame was lost and the run is void).
//
// Scenarios run concurrently in batches, one round per packet position: round k sends the
// k-th packet of every scenario of the batch to both routers, then waits for what comes out.
// Flows never meet (each scenario has its own ports and echo identifier), so a batch is as
// good as running its scenarios one by one.
//
//   conntrack_linux_test [--seed=N] [--count=N] [--first=N] [--batch=N] [--round-ms=N]
//                        [--report=FILE] [--no-allowlist] [--show=N] [--list] [gtest flags] [calyx]
// --report writes every scenario with both verdicts; --no-allowlist counts every difference
// as unexplained (the raw agreement rate); --list prints the scenarios and runs nothing.
#include <algorithm>
#include <cctype>
#include <fstream>
#include <sys/utsname.h>
#include <map>
#include <set>
#include <tuple>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "calyx_model.hpp"
#include "integration/calyx_fixture.hpp"
#include "known_differences.hpp"
#include "linux_router.hpp"
#include "scenarios.hpp"

namespace calyx::difftest {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Options {
    uint64_t seed = 14;
    uint32_t first = 0;
    uint32_t count = 500;
    uint32_t batch = 125;
    std::chrono::milliseconds round{120};
    std::string report;
    bool allowlist = true;
    uint32_t show = 12;  // unexplained scenarios printed in full
};
Options g_options;

struct Verdicts {
    bool linux_passed = false;
    bool calyx_passed = false;
    ModelVerdict model;
};

struct Tally {
    uint64_t scenarios = 0, packets = 0, agree = 0, linux_passed = 0, calyx_passed = 0;
    uint64_t model_mismatch = 0, stray = 0;
    std::map<std::string, uint64_t> known;           // class -> packets
    std::map<std::string, uint64_t> unexplained;     // "linux pass, calyx drop (reason)" -> packets
    std::vector<std::string> shown;
};

test::SecurityPolicy policy() {
    const auto open = [](const char* proto, PortRange r, Ipv4Addr from) {
        return fmt::format("{{direction: ingress, protocol: {}, ports: \"{}-{}\", remote: {}/32}}", proto, r.first, r.last,
                           from.to_string());
    };
    const auto ping = [](Ipv4Addr from) {
        return fmt::format("{{direction: ingress, protocol: icmp, icmp_type: 8, remote: {}/32}}", from.to_string());
    };
    const std::string egress = "{direction: egress, protocol: any, remote: 0.0.0.0/0}";
    test::SecurityPolicy p;
    p.group("diff-client", {egress, open("tcp", kClientPorts, kServerIp), open("udp", kClientPorts, kServerIp), ping(kServerIp)});
    p.group("diff-server", {egress, open("tcp", kServerPorts, kClientIp), open("udp", kServerPorts, kClientIp), ping(kClientIp)});
    p.member(test::kWeb, {"diff-client"}).member(test::kDb, {"diff-server"});
    return p;
}

const test::Vm& vm_of(Side s) { return s == Side::client ? test::kWeb : test::kDb; }

uint16_t ip_id_of(const Bytes& ip) { return static_cast<uint16_t>(ip[4] << 8 | ip[5]); }

class ConntrackAgainstLinux : public test::CalyxFixture {
protected:
    void SetUp() override {
        auto router = LinuxRouter::create(fmt::format("cxd{}", ::getpid() % 100000));
        ASSERT_TRUE(router) << router.error();
        router_ = std::move(*router);
        ASSERT_NO_FATAL_FAILURE(start_all({.security = policy()}));
        restart_model();
    }
    void TearDown() override {
        if (HasFailure() && router_) std::cerr << "---- Linux router:\n" << router_->diagnostics();
        CalyxFixture::TearDown();
        router_.reset();
    }

    void restart_model() {
        auto model = CalyxModel::create(test::read_file(config_));
        ASSERT_TRUE(model) << model.error();
        model_ = std::move(*model);
    }

    // Flows repeat after kDistinctFlows scenarios: both routers start afresh.
    void new_epoch() {
        ASSERT_TRUE(router_->flush_conntrack());
        for (auto& [name, p] : peers_) p->detach();
        peers_.clear();
        calyx_->stop(5s);
        ASSERT_NO_FATAL_FAILURE(start_all({.security = policy()}));
        restart_model();
    }

    // Takes whatever both routers delivered and marks it passed.
    void collect(std::chrono::milliseconds window) {
        const auto deadline = Clock::now() + window;
        do {
            for (Side at : {Side::client, Side::server}) {
                for (const Bytes& frame : vm(vm_of(at)).receive_all(1ms))
                    if (frame.size() >= 14 + 20 && frame[12] == 0x08 && frame[13] == 0x00)
                        mark(at, Bytes(frame.begin() + 14, frame.end()), &Verdicts::calyx_passed);
                std::vector<Bytes> got;
                router_->receive(at, got);
                for (const Bytes& ip : got) mark(at, ip, &Verdicts::linux_passed);
            }
        } while (Clock::now() < deadline);
    }

    void mark(Side at, const Bytes& ip, bool Verdicts::*which) {
        const auto it = in_flight_.find(ip_id_of(ip));
        if (it == in_flight_.end()) {
            ++tally_.stray;
            return;
        }
        const auto [s, p] = it->second;
        const Packet& sent = batch_[s].packets[p];
        // The datagram must be the one sent, from its sender to `at`, routed (TTL - 1).
        if (sent.from == at || ip.size() != sent.ip.size() || !std::equal(ip.begin() + 12, ip.begin() + 20, sent.ip.begin() + 12)) {
            ++tally_.stray;
            return;
        }
        verdicts_[s][p].*which = true;
    }

    void run_batch(uint32_t first, uint32_t count) {
        batch_.clear();
        verdicts_.clear();
        in_flight_.clear();
        size_t rounds = 0;
        uint16_t id = 0;
        for (uint32_t i = 0; i < count; ++i) {
            batch_.push_back(make_scenario(g_options.seed, first + i));
            Scenario& sc = batch_.back();
            for (size_t p = 0; p < sc.packets.size(); ++p) {
                set_ip_id(sc.packets[p].ip, ++id);
                in_flight_[id] = {i, static_cast<uint32_t>(p)};
            }
            verdicts_.emplace_back(sc.packets.size());
            rounds = std::max(rounds, sc.packets.size());
        }
        constexpr size_t kChunk = 24;  // frames sent before the receivers are polled again
        for (size_t r = 0; r < rounds; ++r) {
            size_t sent = 0;
            for (uint32_t s = 0; s < batch_.size(); ++s) {
                if (r >= batch_[s].packets.size()) continue;
                const Packet& p = batch_[s].packets[r];
                Bytes frame;
                frame.reserve(14 + p.ip.size());
                frame.insert(frame.end(), test::kGatewayMac.bytes.begin(), test::kGatewayMac.bytes.end());
                frame.insert(frame.end(), vm_of(p.from).mac.bytes.begin(), vm_of(p.from).mac.bytes.end());
                frame.insert(frame.end(), {0x08, 0x00});
                frame.insert(frame.end(), p.ip.begin(), p.ip.end());
                ASSERT_TRUE(vm(vm_of(p.from)).send(frame)) << "calyx: cannot send";
                ASSERT_TRUE(router_->send(p.from, p.ip)) << "Linux: cannot send";
                const uint64_t now = static_cast<uint64_t>(Clock::now().time_since_epoch().count());
                verdicts_[s][r].model = model_->run(p.from, p.ip, now);
                if (++sent % kChunk == 0) collect(1ms);
            }
            collect(g_options.round);
        }
        collect(g_options.round);
        for (uint32_t s = 0; s < batch_.size(); ++s) account(batch_[s], verdicts_[s]);
    }

    void account(const Scenario& sc, const std::vector<Verdicts>& v) {
        ++tally_.scenarios;
        bool unexplained = false;
        for (size_t p = 0; p < v.size(); ++p) {
            ++tally_.packets;
            tally_.linux_passed += v[p].linux_passed;
            tally_.calyx_passed += v[p].calyx_passed;
            if (v[p].model.forwarded != v[p].calyx_passed) ++tally_.model_mismatch;
            if (v[p].linux_passed == v[p].calyx_passed) {
                ++tally_.agree;
                continue;
            }
            const auto known = g_options.allowlist ? explain(difference(sc, p, v[p])) : std::nullopt;
            if (known) {
                ++tally_.known[std::string(*known)];
                continue;
            }
            unexplained = true;
            // Grouped by what the packet was meant to be, numbers left out.
            std::string what = sc.packets[p].what;
            std::replace_if(what.begin(), what.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }, '#');
            what.erase(std::unique(what.begin(), what.end(), [](char a, char b) { return a == '#' && b == '#'; }), what.end());
            ++tally_.unexplained[fmt::format("{}: {}: {} ({})", sc.kind, what,
                                             v[p].linux_passed ? "Linux passes, calyx drops" : "calyx passes, Linux drops",
                                             v[p].calyx_passed ? "-" : drop_reason_info(v[p].model.reason).name)];
        }
        if (unexplained && tally_.shown.size() < g_options.show) tally_.shown.push_back(render(sc, v));
        if (report_) *report_ << render(sc, v);
    }

    static Difference difference(const Scenario& sc, size_t p, const Verdicts& v) {
        return {sc, p, v.linux_passed, v.calyx_passed, v.model.reason};
    }

    static std::string render(const Scenario& sc, const std::vector<Verdicts>& v) {
        std::string s = fmt::format("scenario {} ({}), seed {}\n", sc.index, sc.kind, g_options.seed);
        for (size_t p = 0; p < v.size(); ++p) {
            const bool differs = v[p].linux_passed != v[p].calyx_passed;
            const auto known = differs ? explain(difference(sc, p, v[p])) : std::nullopt;
            s += fmt::format("  {:2} {} linux={} calyx={}{}{}  {}\n", p, differs ? (known ? "~" : "!") : " ",
                             v[p].linux_passed ? "pass" : "drop", v[p].calyx_passed ? "pass" : "drop",
                             v[p].calyx_passed ? "" : fmt::format(" ({})", drop_reason_info(v[p].model.reason).name),
                             known ? fmt::format(" [{}]", *known) : "", describe(sc.packets[p]));
        }
        return s;
    }

    std::unique_ptr<LinuxRouter> router_;
    std::unique_ptr<CalyxModel> model_;
    std::vector<Scenario> batch_;
    std::vector<std::vector<Verdicts>> verdicts_;
    std::map<uint16_t, std::pair<uint32_t, uint32_t>> in_flight_;  // IP ID -> scenario, packet
    std::unique_ptr<std::ofstream> report_;
    Tally tally_;
};

// The generator's promises, which the concurrent rounds rely on: the same seed builds the same
// bytes, scenarios have 4 to 12 packets, every template occurs, and no two scenarios share a
// flow (a TCP/UDP port pair, an echo identifier, or the flow an ICMP error quotes).
TEST(Scenarios, AreDeterministicAndNeverShareAFlow) {
    std::map<std::tuple<uint8_t, uint16_t, uint16_t>, uint32_t> owner;
    std::set<std::string> kinds;
    const auto flow_of = [](const Bytes& ip, size_t at, bool from_client) {
        const uint8_t proto = ip[at + 9];
        const size_t l4 = at + size_t{ip[at] & 0x0fu} * 4;
        const auto u16 = [&](size_t o) { return static_cast<uint16_t>(ip[o] << 8 | ip[o + 1]); };
        if (proto == 1) return std::tuple<uint8_t, uint16_t, uint16_t>{proto, u16(l4 + 4), 0};
        return from_client ? std::tuple{proto, u16(l4), u16(l4 + 2)} : std::tuple{proto, u16(l4 + 2), u16(l4)};
    };
    for (uint32_t i = 0; i < 4000; ++i) {
        const Scenario a = make_scenario(14, i), b = make_scenario(14, i);
        ASSERT_EQ(a.packets.size(), b.packets.size());
        ASSERT_GE(a.packets.size(), 4u);
        ASSERT_LE(a.packets.size(), 12u);
        kinds.insert(a.kind);
        for (size_t p = 0; p < a.packets.size(); ++p) {
            ASSERT_EQ(a.packets[p].ip, b.packets[p].ip) << "scenario " << i << " packet " << p;
            const Bytes& ip = a.packets[p].ip;
            const bool client = a.packets[p].from == Side::client;
            const bool error = ip[9] == 1 && (ip[20] == 3 || ip[20] == 4 || ip[20] == 5 || ip[20] == 11 || ip[20] == 12);
            if (error && (ip.size() < 48 || ip.size() < 28 + size_t{ip[28] & 0x0fu} * 4 + 8)) continue;  // quotes no ports
            // An error quotes a datagram of the other direction (or, deliberately, its own).
            const auto f = error ? flow_of(ip, 28, ip[40] == ip[12] ? client : !client) : flow_of(ip, 0, client);
            if (std::get<1>(f) >= kStrayFirst || std::get<2>(f) >= kStrayFirst) continue;  // no flow's
            const auto [it, fresh] = owner.emplace(f, i);
            ASSERT_TRUE(fresh || it->second == i) << "scenarios " << it->second << " and " << i << " share a flow";
        }
    }
    EXPECT_EQ(kinds.size(), 17u) << fmt::format("{}", fmt::join(kinds, " "));
}

TEST_F(ConntrackAgainstLinux, EveryPacketGetsLinuxsVerdictOrADocumentedDifference) {
    const Options& o = g_options;
    if (!o.report.empty()) report_ = std::make_unique<std::ofstream>(o.report);
    const auto started = Clock::now();
    for (uint32_t done = 0; done < o.count;) {
        const uint32_t first = o.first + done;
        if (done > 0 && first % kDistinctFlows == 0) {
            ASSERT_NO_FATAL_FAILURE(new_epoch());
        }
        // A batch never spans two epochs.
        const uint32_t n = std::min({o.batch, o.count - done, kDistinctFlows - first % kDistinctFlows});
        ASSERT_NO_FATAL_FAILURE(run_batch(first, n));
        done += n;
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - started).count();

    const Tally& t = tally_;
    uint64_t known = 0, unexplained = 0;
    for (const auto& [name, n] : t.known) known += n;
    for (const auto& [what, n] : t.unexplained) unexplained += n;
    utsname kernel{};
    ::uname(&kernel);
    std::string summary = fmt::format(
        "Linux {} against calyx; seed {}, scenarios {}-{} ({}), packets {}, {:.1f} s\n"
        "agreement: {} of {} packets ({:.2f} %); Linux passed {}, calyx passed {}\n"
        "differences: {} documented, {} unexplained{}\n",
        kernel.release, o.seed, o.first, o.first + o.count - 1, t.scenarios, t.packets, seconds, t.agree, t.packets,
        100.0 * static_cast<double>(t.agree) / static_cast<double>(std::max<uint64_t>(t.packets, 1)), t.linux_passed, t.calyx_passed,
        known, unexplained, o.allowlist ? "" : " (allowlist off)");
    for (const auto& [name, n] : t.known) summary += fmt::format("  documented {:5}  {}\n", n, name);
    for (const auto& [what, n] : t.unexplained) summary += fmt::format("  UNEXPLAINED {:4}  {}\n", n, what);
    std::cout << summary;
    for (const auto& s : t.shown) std::cout << s;
    if (report_) *report_ << summary;

    // The comparison means something only if both routers forwarded and dropped plenty.
    EXPECT_GT(t.linux_passed, t.packets / 4) << "Linux forwarded almost nothing: is the router up?";
    EXPECT_GT(t.packets - t.linux_passed, t.packets / 20) << "Linux dropped almost nothing: are its rules loaded?";
    EXPECT_EQ(t.model_mismatch, 0u) << "calyx and its in-process model disagreed: frames were lost in the harness";
    EXPECT_EQ(unexplained, 0u) << "packets whose verdict differs from Linux's without a documented reason (above)";
}

}  // namespace
}  // namespace calyx::difftest

int main(int argc, char** argv) {
    using calyx::difftest::g_options;
    std::vector<char*> rest;
    bool list = false;
    for (int i = 0; i < argc; ++i) {
        const std::string_view a = argv[i];
        const auto value = [&](std::string_view flag) -> std::optional<std::string> {
            if (!a.starts_with(flag)) return std::nullopt;
            return std::string(a.substr(flag.size()));
        };
        if (auto v = value("--seed=")) {
            g_options.seed = std::stoull(*v);
        } else if (auto v = value("--count=")) {
            g_options.count = static_cast<uint32_t>(std::stoul(*v));
        } else if (auto v = value("--first=")) {
            g_options.first = static_cast<uint32_t>(std::stoul(*v));
        } else if (auto v = value("--batch=")) {
            g_options.batch = std::max(1u, static_cast<uint32_t>(std::stoul(*v)));
        } else if (auto v = value("--round-ms=")) {
            g_options.round = std::chrono::milliseconds(std::stoul(*v));
        } else if (auto v = value("--report=")) {
            g_options.report = *v;
        } else if (auto v = value("--show=")) {
            g_options.show = static_cast<uint32_t>(std::stoul(*v));
        } else if (a == "--no-allowlist") {
            g_options.allowlist = false;
        } else if (a == "--list") {
            list = true;
        } else {
            rest.push_back(argv[i]);
        }
    }
    if (list) {  // the scenarios only, without running anything
        for (uint32_t i = 0; i < g_options.count; ++i) {
            const auto sc = calyx::difftest::make_scenario(g_options.seed, g_options.first + i);
            std::cout << fmt::format("scenario {} ({})\n", sc.index, sc.kind);
            for (const auto& p : sc.packets) std::cout << "  " << calyx::difftest::describe(p) << "\n";
        }
        return 0;
    }
    int n = static_cast<int>(rest.size());
    return calyx::test::run_integration_tests(n, rest.data());
}
