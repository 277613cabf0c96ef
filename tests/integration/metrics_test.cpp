// The Prometheus endpoint of the real calyx (issue #5), end to end:
//
//  1. A scrape of `metrics.listen` passes `promtool check metrics` (format and lint), and its
//     counters are exactly the traffic the VMs sent: packets and bytes per port, the drop
//     reason of denied packets, nothing anywhere else.
//  2. A real Prometheus server, started by the test with its own config, storage and listen
//     address, scrapes calyx every second; PromQL sees the exact counter values and a
//     rate(calyx_port_rx_packets_total[...]) that matches the rate the test sent at.
//  3. Every query of the Grafana dashboard (doc/grafana-dashboard.json) runs on that Prometheus
//     and returns series: the dashboard cannot drift from the metrics calyx serves.
//
// Needs prometheus and promtool (Debian package `prometheus`, installed by scripts/setup.sh);
// meson passes their paths in $PROMETHEUS_BIN and $PROMTOOL_BIN and the dashboard's in
// $CALYX_DASHBOARD. A missing tool fails the test: skipping would hide that it never ran.
//
// Usage: metrics_test [gtest flags] [--calyx-bin=PATH | PATH]; $CALYX_BIN wins (meson sets it).
// CALYX_IT_KEEP=1 keeps the temp dirs (calyx's and Prometheus's configs, logs and TSDB).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <expected>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "calyx/drop_reason.hpp"
#include "calyx_fixture.hpp"
#include "calyx_process.hpp"
#include "test_frames.hpp"
#include "vm_peer.hpp"

namespace calyx::test {
namespace {

using Json = nlohmann::json;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// "" when meson did not find the program: the test then fails and says what to install.
std::string env_or_empty(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
}

// ------------------------------------------------------------------------------------------
// HTTP: a plain GET over a loopback socket (calyx's civetweb and Prometheus's Go server).
// HTTP/1.0 so that neither answers with chunked encoding nor keeps the connection open: the
// body is what arrives until the server closes the connection.

struct HttpResponse {
    std::string error;  // non-empty: no (complete) response
    int status = 0;
    std::string headers;  // status line and headers, as received
    std::string body;
};

HttpResponse http_get(uint16_t port, const std::string& target, milliseconds timeout = 5s) {
    HttpResponse r;
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        r.error = fmt::format("socket: {}", std::strerror(errno));
        return r;
    }
    // Every blocking call is bounded: a server that hangs fails the test instead of stalling it.
    timeval tv{.tv_sec = static_cast<time_t>(timeout.count() / 1000),
               .tv_usec = static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        r.error = fmt::format("connect 127.0.0.1:{}: {}", port, std::strerror(errno));
        ::close(fd);
        return r;
    }
    const std::string req =
        fmt::format("GET {} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nAccept: */*\r\n\r\n", target, port);
    if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
        r.error = fmt::format("send to 127.0.0.1:{}: {}", port, std::strerror(errno));
        ::close(fd);
        return r;
    }
    // Read until the server closes. Closing first would leave this side's port in TIME_WAIT
    // for a minute, and that port is from the ephemeral range, which the fixture's metrics
    // ports (20000 + pid-derived) overlap: the next calyx could fail to bind it.
    std::string raw;
    char buf[16384];
    const auto deadline = Clock::now() + timeout;
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            r.error = fmt::format("recv from 127.0.0.1:{}: {}", port, std::strerror(errno));
            break;
        }
        if (n == 0) break;
        raw.append(buf, static_cast<size_t>(n));
        if (Clock::now() >= deadline) {
            r.error = fmt::format("127.0.0.1:{}: connection still open after {} ms", port,
                                  timeout.count());
            break;
        }
    }
    if (!r.error.empty()) {
        // No TIME_WAIT on an abandoned connection either: reset it.
        const linger reset{.l_onoff = 1, .l_linger = 0};
        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
    }
    ::close(fd);
    const size_t end = raw.find("\r\n\r\n");
    if (r.error.empty() && (end == std::string::npos || !raw.starts_with("HTTP/1.")))
        r.error = fmt::format("127.0.0.1:{}: not an HTTP response: {:?}", port, raw.substr(0, 200));
    if (!r.error.empty()) return r;
    r.headers = raw.substr(0, end);
    r.body = raw.substr(end + 4);
    static const std::regex cl(R"(\r\n[Cc]ontent-[Ll]ength:\s*(\d+))");
    std::smatch m;
    if (std::regex_search(r.headers, m, cl) && std::stoul(m[1]) != r.body.size()) {
        r.error = fmt::format("127.0.0.1:{}: Content-Length {} but {} bytes of body", port,
                              m[1].str(), r.body.size());
        return r;
    }
    r.status = std::atoi(raw.c_str() + raw.find(' ') + 1);
    return r;
}

std::string url_encode(std::string_view s) {
    std::string out;
    for (const unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
            out += static_cast<char>(c);
        else
            out += fmt::format("%{:02X}", c);
    }
    return out;
}

// A port nobody listens on right now (the kernel's choice). Prometheus needs its listen
// address up front; PrometheusServer retries should another process take it meanwhile.
uint16_t free_loopback_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    uint16_t port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
        port = ntohs(addr.sin_port);
    ::close(fd);
    return port;
}

double unix_now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

// ------------------------------------------------------------------------------------------
// The text exposition format, parsed: one sample per series, looked up by name and exact
// label set.

using Labels = std::map<std::string, std::string>;

struct Scrape {
    std::string text;
    std::map<std::pair<std::string, Labels>, double> samples;

    std::optional<double> get(const std::string& name, const Labels& labels = {}) const {
        auto it = samples.find({name, labels});
        if (it == samples.end()) return std::nullopt;
        return it->second;
    }
    // The value, or NaN (which no expectation equals) with a test failure naming the series.
    double at(const std::string& name, const Labels& labels = {}) const {
        if (auto v = get(name, labels)) return *v;
        std::string l;
        for (const auto& [k, v] : labels)
            l += fmt::format("{}{}=\"{}\"", l.empty() ? "" : ",", k, v);
        ADD_FAILURE() << "the scrape has no series " << name << "{" << l << "}";
        return std::nan("");
    }
    // Every series of `name`.
    std::vector<std::pair<Labels, double>> all(const std::string& name) const {
        std::vector<std::pair<Labels, double>> out;
        for (const auto& [key, v] : samples)
            if (key.first == name) out.push_back({key.second, v});
        return out;
    }
};

// Parses the lines a scrape consists of; nullopt (with the offending line) if one is not a
// sample as the format defines it. promtool checks the format too; this parser only has to be
// right for what it accepts.
std::expected<Scrape, std::string> parse_scrape(std::string text) {
    Scrape s;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t eol = text.find('\n', pos);
        if (eol == std::string::npos) eol = text.size();
        const std::string line = text.substr(pos, eol - pos);
        pos = eol + 1;
        if (line.empty() || line[0] == '#') continue;
        size_t i = line.find_first_of("{ ");
        if (i == std::string::npos) return std::unexpected("no value: " + line);
        const std::string name = line.substr(0, i);
        Labels labels;
        if (line[i] == '{') {
            ++i;
            while (i < line.size() && line[i] != '}') {
                const size_t eq = line.find("=\"", i);
                if (eq == std::string::npos) return std::unexpected("bad label: " + line);
                const std::string key = line.substr(i, eq - i);
                std::string value;
                for (i = eq + 2; i < line.size() && line[i] != '"'; ++i) {
                    if (line[i] == '\\' && i + 1 < line.size()) {
                        ++i;
                        value += line[i] == 'n' ? '\n' : line[i];
                    } else {
                        value += line[i];
                    }
                }
                if (i >= line.size()) return std::unexpected("unterminated label: " + line);
                labels[key] = value;
                ++i;  // closing quote
                if (i < line.size() && line[i] == ',') ++i;
            }
            if (i >= line.size()) return std::unexpected("unterminated labels: " + line);
            ++i;  // '}'
        }
        // "<value>" or "<value> <timestamp>"
        const std::string rest = line.substr(i);
        char* end = nullptr;
        const double v = std::strtod(rest.c_str(), &end);
        if (end == rest.c_str()) return std::unexpected("bad value: " + line);
        if (!s.samples.emplace(std::make_pair(name, labels), v).second)
            return std::unexpected("duplicate series: " + line);
    }
    s.text = std::move(text);
    return s;
}

// ------------------------------------------------------------------------------------------
// A Prometheus server of the test's own: its config, TSDB and log in a temp dir, listening on
// a free loopback port. The destructor kills it (ChildProcess) before the directory goes
// (members are destroyed in reverse order), on every exit path of a test.

class PrometheusServer {
  public:
    static std::expected<std::unique_ptr<PrometheusServer>, std::string> start(
        const std::string& binary, unsigned scrape_port) {
        std::unique_ptr<PrometheusServer> p(new PrometheusServer());
        // A 1 s interval: the test waits a few seconds, not minutes. The timeout must not
        // exceed the interval.
        const auto config = p->dir_.write("prometheus.yml", fmt::format(R"(global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: calyx
    static_configs:
      - targets: ['127.0.0.1:{}']
)",
                                                                        scrape_port));
        std::string last_error;
        // Another process may take the free port between our probe and Prometheus's bind.
        for (int attempt = 0; attempt < 3; ++attempt) {
            p->port_ = free_loopback_port();
            auto child = ChildProcess::spawn(
                {binary, "--config.file=" + config.string(),
                 "--storage.tsdb.path=" + (p->dir_ / "data").string(),
                 fmt::format("--web.listen-address=127.0.0.1:{}", p->port_), "--log.level=info"},
                p->dir_ / "prometheus.log");
            if (!child) return std::unexpected(child.error());
            p->child_ = std::move(*child);
            const auto deadline = Clock::now() + 20s;
            while (p->child_->running() && Clock::now() < deadline) {
                if (http_get(p->port_, "/-/ready", 1s).status == 200) return p;
                std::this_thread::sleep_for(100ms);
            }
            if (p->child_->running()) {
                p->child_->kill();
                return std::unexpected("Prometheus not ready within 20 s:\n" + p->log());
            }
            last_error = fmt::format("Prometheus {}:\n{}",
                                     describe_status(p->child_->status().value_or(-1)), p->log());
            if (last_error.find("address already in use") == std::string::npos) break;
        }
        return std::unexpected(last_error);
    }

    uint16_t port() const { return port_; }
    std::string log() const { return read_file(dir_ / "prometheus.log"); }
    bool running() { return child_ && child_->running(); }

    // GET /api/v1/query: the "result" array of a successful instant query, evaluated at
    // `time` (unix seconds) or now; otherwise what went wrong, with Prometheus's answer.
    std::expected<Json, std::string> query(const std::string& promql,
                                           std::optional<double> time = std::nullopt) const {
        std::string target = "/api/v1/query?query=" + url_encode(promql);
        if (time) target += fmt::format("&time={:.3f}", *time);
        const HttpResponse r = http_get(port_, target);
        if (!r.error.empty()) return std::unexpected(r.error);
        Json j = Json::parse(r.body, nullptr, false);
        if (j.is_discarded() || !j.is_object())
            return std::unexpected(fmt::format("HTTP {}, not JSON: {}", r.status, r.body));
        if (r.status != 200 || j.value("status", "") != "success" || !j.contains("data") ||
            !j["data"].contains("result"))
            return std::unexpected(
                fmt::format("query {:?}: HTTP {}: {}", promql, r.status, r.body));
        return j["data"]["result"];
    }

    // The value of a query that must return exactly one series; an error otherwise.
    std::expected<double, std::string> scalar(const std::string& promql,
                                              std::optional<double> time = std::nullopt) const {
        auto result = query(promql, time);
        if (!result) return std::unexpected(result.error());
        if (!result->is_array() || result->size() != 1)
            return std::unexpected(
                fmt::format("query {:?}: expected one series, got {}", promql, result->dump()));
        const Json& value = (*result)[0]["value"];
        if (!value.is_array() || value.size() != 2 || !value[1].is_string())
            return std::unexpected(fmt::format("query {:?}: odd sample {}", promql, value.dump()));
        return std::stod(value[1].get<std::string>());
    }

  private:
    PrometheusServer() = default;
    TempDir dir_{"calyx-prom"};
    uint16_t port_ = 0;
    std::unique_ptr<ChildProcess> child_;
};

// ------------------------------------------------------------------------------------------
// The fixture: calyx with web-1 and app-1 open to each other, db-1 in a group with no ingress
// rule, so that web-1 -> db-1 is dropped as sg_no_ingress_rule (a denied packet with a known
// reason, counted at web-1, the port it came in on).

constexpr uint16_t kPingId = 0x500;    // web-1 -> app-1, answered
constexpr uint16_t kDeniedId = 0x501;  // web-1 -> db-1, dropped
constexpr const char* kDeniedReason = "sg_no_ingress_rule";

SecurityPolicy metrics_policy() {
    SecurityPolicy p;
    p.group("open", {"{direction: ingress, protocol: any}", "{direction: egress, protocol: any}"});
    p.group("egress-only", {"{direction: egress, protocol: any}"});
    p.member(kWeb, {"open"}).member(kApp, {"open"}).member(kDb, {"egress-only"});
    return p;
}

class MetricsTest : public CalyxFixture {
  protected:
    void SetUp() override {
        prometheus_bin_ = env_or_empty("PROMETHEUS_BIN");
        promtool_bin_ = env_or_empty("PROMTOOL_BIN");
        // Fail, not skip: scripts/setup.sh installs them, so their absence is a broken setup.
        for (const auto& [bin, name] :
             {std::pair{prometheus_bin_, "prometheus"}, std::pair{promtool_bin_, "promtool"}})
            ASSERT_TRUE(!bin.empty() && ::access(bin.c_str(), X_OK) == 0)
                << name << " not found (" << (bin.empty() ? "meson did not find it" : bin)
                << "): apt-get install prometheus (scripts/setup.sh does), then reconfigure "
                   "the build directory";
        ASSERT_NO_FATAL_FAILURE(start_all({.security = metrics_policy()}));
    }

    void TearDown() override {
        if (prometheus_ && HasFailure())
            std::cerr << "---- Prometheus log:\n" << prometheus_->log() << "\n";
        // calyx goes first: the server closing leaves TIME_WAIT on calyx's metrics port, which
        // a later listener may reuse; Prometheus closing its scrape connection first would
        // leave it on an ephemeral port, which a later test's metrics port may be.
        CalyxFixture::TearDown();
        prometheus_.reset();  // kills it and removes its directory
    }

    // GET /metrics from calyx; a test failure (and nullopt) if that or parsing fails.
    std::optional<Scrape> scrape() {
        const HttpResponse r = http_get(static_cast<uint16_t>(identity_.metrics_port), "/metrics");
        if (!r.error.empty() || r.status != 200) {
            ADD_FAILURE() << "scrape of 127.0.0.1:" << identity_.metrics_port << "/metrics: "
                          << (r.error.empty() ? fmt::format("HTTP {}\n{}", r.status, r.headers)
                                              : r.error);
            return std::nullopt;
        }
        // Prometheus picks its parser by this header: text/plain is the text format (the
        // `version=0.0.4` parameter the format's spec names is optional to Prometheus 2 and 3,
        // and prometheus-cpp 1.1 does not send it).
        EXPECT_NE(r.headers.find("\r\nContent-Type: text/plain"), std::string::npos) << r.headers;
        auto s = parse_scrape(r.body);
        if (!s) {
            ADD_FAILURE() << "unparsable scrape: " << s.error() << "\n" << r.body;
            return std::nullopt;
        }
        return std::move(*s);
    }

    // Scrape until `done` holds for a scrape or `timeout` passes; returns the last scrape.
    // For packets calyx drops nothing arrives that would tell the test they were counted: the
    // worker counts them some time after the VM's send returned.
    template <typename Pred>
    std::optional<Scrape> scrape_until(Pred done, milliseconds timeout = kReply) {
        const auto deadline = Clock::now() + timeout;
        for (;;) {
            auto s = scrape();
            if (!s || done(*s) || Clock::now() >= deadline) return s;
            std::this_thread::sleep_for(20ms);
        }
    }

    // One answered ping web-1 -> app-1 (request forwarded, reply comes back); the request
    // frame's size, or 0 after a test failure.
    size_t ping_app(uint16_t seq) {
        const Bytes req = ping_frame(kWeb, kApp.ip, kPingId, seq);
        if (!vm(kWeb).send(req)) {
            ADD_FAILURE() << "web-1 could not send ping " << seq;
            return 0;
        }
        if (!vm(kApp).receive(kReply, is_echo_request(kPingId, seq))) {
            ADD_FAILURE() << "ping " << seq << " did not arrive at app-1";
            return 0;
        }
        if (!vm(kApp).send(echo_reply(kApp.mac, kGatewayMac, kApp.ip, kWeb.ip, kPingId, seq))) {
            ADD_FAILURE() << "app-1 could not send reply " << seq;
            return 0;
        }
        if (!vm(kWeb).receive(kReply, is_echo_reply(kPingId, seq))) {
            ADD_FAILURE() << "reply " << seq << " did not come back to web-1";
            return 0;
        }
        return req.size();
    }

    // A ping web-1 -> db-1, which calyx drops (db-1 allows no ingress); the frame's size.
    size_t ping_db_denied(uint16_t seq) {
        const Bytes req = ping_frame(kWeb, kDb.ip, kDeniedId, seq);
        EXPECT_TRUE(vm(kWeb).send(req)) << "web-1 could not send denied ping " << seq;
        return req.size();
    }

    std::unique_ptr<PrometheusServer> start_prometheus() {
        auto p = PrometheusServer::start(prometheus_bin_, identity_.metrics_port);
        if (!p) {
            ADD_FAILURE() << "cannot start Prometheus: " << p.error();
            return nullptr;
        }
        return std::move(*p);
    }

    // Until Prometheus has scraped calyx successfully: up{job="calyx"} == 1.
    void wait_target_up(const PrometheusServer& p) {
        const auto deadline = Clock::now() + 20s;
        std::string last;
        while (Clock::now() < deadline) {
            auto up = p.scalar(R"(up{job="calyx"})");
            if (up && *up == 1) return;
            last = up ? fmt::format("up = {}", *up) : up.error();
            std::this_thread::sleep_for(200ms);
        }
        FAIL() << "Prometheus did not scrape calyx within 20 s; last answer: " << last;
    }

    std::string prometheus_bin_, promtool_bin_;
    std::unique_ptr<PrometheusServer> prometheus_;
};

// ------------------------------------------------------------------------------------------

TEST_F(MetricsTest, ScrapePassesPromtoolAndCountsExactlyTheTrafficSent) {
    // The baseline includes the warm-up (ARP requests, retried until answered): only the
    // difference to it is the traffic below.
    const auto before = scrape();
    ASSERT_TRUE(before);

    constexpr int kPings = 20, kDenied = 5;
    uint64_t ping_bytes = 0, denied_bytes = 0;
    for (uint16_t seq = 1; seq <= kPings; ++seq) {
        const size_t n = ping_app(seq);
        ASSERT_NE(n, 0u);
        ping_bytes += n;
    }
    for (uint16_t seq = 1; seq <= kDenied; ++seq) denied_bytes += ping_db_denied(seq);
    expect_nothing(
        kDb, [](const Bytes& f) { return is_icmp(f) && icmp_of(f).id.host() == kDeniedId; },
        "web-1 -> db-1 must be denied");

    const Labels web{{"port", "web-1"}}, app{{"port", "app-1"}}, db{{"port", "db-1"}};
    const Labels denied{{"port", "web-1"}, {"reason", kDeniedReason}};
    const double drops_before = before->at("calyx_port_drops_total", denied);
    const auto after = scrape_until([&](const Scrape& s) {
        return s.get("calyx_port_drops_total", denied).value_or(0) >= drops_before + kDenied;
    });
    ASSERT_TRUE(after);
    const auto delta = [&](const std::string& name, const Labels& l) {
        return after->at(name, l) - before->at(name, l);
    };

    // promtool: the exposition format and Prometheus's naming lint. Any complaint fails the
    // test: none is accepted on purpose.
    {
        const fs::path input = dir_.write("scrape.txt", after->text);
        const fs::path out = dir_ / "promtool.out";
        // promtool reads the metrics only from stdin; the shell only redirects ($0 and $1 are
        // the arguments, nothing is interpolated).
        auto child = ChildProcess::spawn(
            {"/bin/sh", "-c", "exec \"$0\" check metrics < \"$1\"", promtool_bin_, input.string()},
            out);
        ASSERT_TRUE(child) << child.error();
        const auto status = (*child)->wait(30s);
        ASSERT_TRUE(status) << "promtool did not finish within 30 s";
        const std::string said = read_file(out);
        EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
            << "promtool check metrics " << describe_status(*status) << ":\n"
            << said << "\n---- the scrape:\n"
            << after->text;
        EXPECT_EQ(said, "") << "promtool check metrics complained:\n" << said;
    }

    // web-1 received exactly the echo requests (to app-1 and to db-1), byte for byte (frame
    // length without FCS), and sent out exactly the replies.
    EXPECT_EQ(delta("calyx_port_rx_packets_total", web), kPings + kDenied);
    EXPECT_EQ(delta("calyx_port_rx_bytes_total", web), ping_bytes + denied_bytes);
    EXPECT_EQ(delta("calyx_port_tx_packets_total", web), kPings);
    // app-1 got the requests and sent the replies; db-1 saw nothing.
    EXPECT_EQ(delta("calyx_port_tx_packets_total", app), kPings);
    EXPECT_EQ(delta("calyx_port_rx_packets_total", app), kPings);
    EXPECT_EQ(delta("calyx_port_tx_packets_total", db), 0);
    EXPECT_EQ(delta("calyx_port_rx_packets_total", db), 0);

    // Every denied packet under its reason, and no drop anywhere else.
    EXPECT_EQ(delta("calyx_port_drops_total", denied), kDenied);
    for (const auto& [labels, v] : after->all("calyx_port_drops_total")) {
        const double was = before->get("calyx_port_drops_total", labels).value_or(0);
        if (labels != denied) {
            EXPECT_EQ(v, was) << "unexpected drops: port " << labels.at("port") << " reason "
                              << labels.at("reason");
        }
    }
    // Every reason of every port is served, zero or not (dashboards and alerts see zeros, not
    // missing series), and nothing else.
    EXPECT_EQ(after->all("calyx_port_drops_total").size(), 3 * kDropReasonCount);
    for (const char* p : {"web-1", "app-1", "db-1"})
        for (const auto& reason : kDropReasons)
            EXPECT_TRUE(after->get("calyx_port_drops_total",
                                   {{"port", p}, {"reason", std::string(reason.name)}}))
                << "no drop counter for port " << p << " reason " << reason.name;

    // The answered pings are one ICMP connection (web-1's echo id); the denied ones none.
    EXPECT_EQ(
        after->at("calyx_conntrack_created_total") - before->at("calyx_conntrack_created_total"),
        1);
    EXPECT_GE(after->at("calyx_conntrack_entries"), 1);
    // The config's capacity less the 32nd kept free for evictions.
    EXPECT_EQ(after->at("calyx_conntrack_capacity"), 65536 - 65536 / 32);
    // Routed pings are not gateway replies.
    EXPECT_EQ(after->at("calyx_icmp_echo_replies_total"),
              before->at("calyx_icmp_echo_replies_total"));
    EXPECT_EQ(after->at("calyx_icmp_errors_total", {{"result", "sent"}}),
              before->at("calyx_icmp_errors_total", {{"result", "sent"}}));

    for (const char* p : {"web-1", "app-1", "db-1"})
        EXPECT_EQ(after->at("calyx_port_up", {{"port", p}}), 1) << p;
    // The warm-up's ARP requests were answered by proxy-ARP, once per VM at least.
    EXPECT_GE(after->at("calyx_arp_replies_total"), 3);
    // One worker (dataplane.workers: [1]), which spent cycles and moved packets.
    const auto busy = after->all("calyx_lcore_busy_cycles_total");
    ASSERT_EQ(busy.size(), 1u) << after->text;
    EXPECT_EQ(busy[0].first, (Labels{{"lcore", "1"}}));
    const double total = after->at("calyx_lcore_cycles_total", {{"lcore", "1"}});
    EXPECT_GT(busy[0].second, before->at("calyx_lcore_busy_cycles_total", {{"lcore", "1"}}));
    EXPECT_LE(busy[0].second, total);
    EXPECT_EQ(after->at("calyx_config_generation"), 1);
    EXPECT_EQ(after->at("calyx_config_reloads_total", {{"result", "success"}}), 0);
    EXPECT_EQ(after->at("calyx_config_reloads_total", {{"result", "failure"}}), 0);
    // No uplink: masquerade serves zeros rather than nothing.
    for (const char* proto : {"tcp", "udp", "icmp"})
        EXPECT_EQ(after->at("calyx_nat_ports_in_use", {{"protocol", proto}}), 0) << proto;
    EXPECT_EQ(after->at("calyx_nat_port_range_size"), 0);

    // The same counters as calyx prints on SIGUSR1 (no traffic in between).
    const auto c = counters();
    ASSERT_TRUE(c);
    for (const char* p : {"web-1", "app-1", "db-1"}) {
        ASSERT_TRUE(c->ports.contains(p)) << c->text;
        EXPECT_EQ(c->ports.at(p).rx_packets,
                  after->at("calyx_port_rx_packets_total", {{"port", p}}))
            << p;
        EXPECT_EQ(c->ports.at(p).tx_packets,
                  after->at("calyx_port_tx_packets_total", {{"port", p}}))
            << p;
    }
    EXPECT_EQ(c->drops("web-1", kDeniedReason), after->at("calyx_port_drops_total", denied));
}

// A real Prometheus scrapes calyx every second; the rate PromQL computes is the rate the test
// sent at.
TEST_F(MetricsTest, PrometheusScrapesCalyxAndSeesTheTrafficRate) {
    const auto t0 = Clock::now();
    prometheus_ = start_prometheus();
    ASSERT_TRUE(prometheus_);
    ASSERT_NO_FATAL_FAILURE(wait_target_up(*prometheus_));
    std::cerr << fmt::format("[metrics] Prometheus up and scraping calyx after {} ms\n",
                             std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count());

    // Round trips web-1 -> app-1 at a steady 50 per second for 8 s. Each request's send time
    // (wall clock: Prometheus's timestamps are wall clock too) is kept, so the expected rate
    // in any window is what was actually sent in it, even if pacing hiccupped.
    constexpr auto kInterval = 20ms;
    constexpr auto kDuration = 8s;
    // What calyx and Prometheus hold before the traffic (Prometheus has at least one sample).
    const auto direct_before = scrape();
    ASSERT_TRUE(direct_before);
    const double served_before =
        direct_before->at("calyx_port_rx_packets_total", {{"port", "web-1"}});
    const double before = unix_now();
    // A sample is stamped with its scrape's start, calyx reads its counters a little later: a
    // pause keeps a scrape that started just before `before` from seeing the first requests.
    std::this_thread::sleep_for(200ms);
    std::vector<double> sent_at;
    const auto begin = Clock::now();
    for (uint16_t seq = 1; Clock::now() - begin < kDuration; ++seq) {
        std::this_thread::sleep_until(begin + (seq - 1) * kInterval);
        sent_at.push_back(unix_now());
        ASSERT_NE(ping_app(seq), 0u);
    }
    const double end = unix_now();
    const double send_rate = static_cast<double>(sent_at.size()) / (end - sent_at.front());

    // Prometheus holds exactly the value calyx serves, once it scraped after the traffic.
    const auto direct = scrape();
    ASSERT_TRUE(direct);
    const double served = direct->at("calyx_port_rx_packets_total", {{"port", "web-1"}});
    double stored = -1;
    for (const auto deadline = Clock::now() + 5s; Clock::now() < deadline;) {
        auto v = prometheus_->scalar(R"(calyx_port_rx_packets_total{port="web-1"})");
        ASSERT_TRUE(v) << v.error();
        stored = *v;
        if (stored == served) break;
        std::this_thread::sleep_for(200ms);
    }
    EXPECT_EQ(stored, served) << "Prometheus's latest sample of web-1's rx counter";

    // rate() over a 4 s window that ends 1 s before the traffic did, so it lies inside the
    // traffic: at a 1 s scrape interval it spans 4 or 5 samples. Tolerance 20%: the samples'
    // timestamps are Prometheus's scrape start, not the moment calyx read its counters, and
    // rate() extrapolates to the window's edges.
    const double at = end - 1.0;
    const double window = 4.0;
    const auto in_window =
        std::ranges::count_if(sent_at, [&](double t) { return t > at - window && t <= at; });
    const double expected = static_cast<double>(in_window) / window;
    std::cerr << fmt::format(
        "[metrics] sent {} requests in {:.2f} s ({:.1f}/s); {} in the window ({:.1f}/s)\n",
        sent_at.size(), end - sent_at.front(), send_rate, in_window, expected);
    for (const char* query : {R"(rate(calyx_port_rx_packets_total{port="web-1"}[4s]))",
                              R"(rate(calyx_port_tx_packets_total{port="app-1"}[4s]))"}) {
        auto rate = prometheus_->scalar(query, at);
        ASSERT_TRUE(rate) << rate.error();
        std::cerr << fmt::format("[metrics] Prometheus: {} = {:.2f}\n", query, *rate);
        EXPECT_NEAR(*rate, expected, expected * 0.2)
            << query << " at " << fmt::format("{:.3f}", at) << "; the test sent " << in_window
            << " requests in that window";
    }
    // The whole run, exactly: the counter Prometheus stored before the traffic (its latest
    // sample at `before`) and after it differ by the number of requests sent. (increase() over
    // the run would extrapolate to the window's edges and only come close.)
    const std::string counter = R"(calyx_port_rx_packets_total{port="web-1"})";
    auto first = prometheus_->scalar(counter, before);
    ASSERT_TRUE(first) << first.error();
    EXPECT_EQ(*first, served_before) << "Prometheus's sample before the traffic";
    EXPECT_EQ(stored - *first, static_cast<double>(sent_at.size()))
        << counter << " at the end minus at the start";
    std::cerr << fmt::format("[metrics] Prometheus: {} = {} before, {} after (calyx served {})\n",
                             counter, *first, stored, served);
}

// ------------------------------------------------------------------------------------------
// The Grafana dashboard against the real metrics: every query must be valid PromQL and return
// series. (tests/integration/check_dashboard.py checks the names statically as well.)

// The dashboard's template variables, as Grafana would fill them in for "All".
std::expected<std::string, std::string> fill_variables(std::string expr) {
    static const std::vector<std::pair<std::string, std::string>> kValues{
        {"$__rate_interval", "5s"},  // >= 4 scrape intervals, as Grafana chooses it
        {"$__range", "1h"},          // the dashboard's time range (default: last hour)
        {"${instance}", ".*"},      {"$instance", ".*"}, {"${port}", ".*"}, {"$port", ".*"},
    };
    for (const auto& [var, value] : kValues)
        for (size_t at; (at = expr.find(var)) != std::string::npos;)
            expr.replace(at, var.size(), value);
    if (expr.find('$') != std::string::npos)
        return std::unexpected("a variable the test does not know: " + expr);
    return expr;
}

TEST_F(MetricsTest, EveryDashboardQueryReturnsSeries) {
    const std::string path = env_or_empty("CALYX_DASHBOARD");
    ASSERT_FALSE(path.empty()) << "$CALYX_DASHBOARD is not set (meson sets it)";
    const Json dashboard = Json::parse(read_file(path), nullptr, false);
    ASSERT_FALSE(dashboard.is_discarded()) << path << " is not valid JSON";
    std::vector<std::pair<std::string, std::string>> queries;  // panel title, expr
    for (const Json& panel : dashboard.value("panels", Json::array()))
        for (const Json& target : panel.value("targets", Json::array()))
            if (target.contains("expr"))
                queries.emplace_back(panel.value("title", "?"), target["expr"].get<std::string>());
    ASSERT_GE(queries.size(), 10u) << path << ": fewer queries than panels asked for";

    const auto t0 = Clock::now();
    prometheus_ = start_prometheus();
    ASSERT_TRUE(prometheus_);
    ASSERT_NO_FATAL_FAILURE(wait_target_up(*prometheus_));
    std::cerr << fmt::format("[metrics] Prometheus up and scraping calyx after {} ms\n",
                             std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count());
    // Traffic and drops, so that rate queries and the drop panels' "> 0" filters have
    // something to show: a few answered and denied pings per second for 3 s.
    for (uint16_t seq = 1; seq <= 15; ++seq) {
        ASSERT_NE(ping_app(seq), 0u);
        ping_db_denied(seq);
        std::this_thread::sleep_for(200ms);
    }
    // Evaluate everything at one instant at which Prometheus has the last drops (so every
    // rate window of 5 s holds samples before and after them).
    const std::string drops_query =
        fmt::format(R"(calyx_port_drops_total{{port="web-1",reason="{}"}})", kDeniedReason);
    double at = 0;
    for (const auto deadline = Clock::now() + 5s; Clock::now() < deadline && at == 0;) {
        auto v = prometheus_->scalar(drops_query);
        ASSERT_TRUE(v) << v.error();
        if (*v == 15) at = unix_now();
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_NE(at, 0) << "Prometheus never saw the 15 denied pings: " << drops_query;

    std::set<std::string> names;
    static const std::regex metric_name(R"(\bcalyx_[a-z0-9_]+\b)");
    for (const auto& [title, expr] : queries) {
        SCOPED_TRACE(fmt::format("panel {:?}: {}", title, expr));
        for (auto it = std::sregex_iterator(expr.begin(), expr.end(), metric_name);
             it != std::sregex_iterator(); ++it)
            names.insert(it->str());
        const auto promql = fill_variables(expr);
        ASSERT_TRUE(promql) << promql.error();
        const auto result = prometheus_->query(*promql, at);
        ASSERT_TRUE(result) << result.error();
        EXPECT_FALSE(result->empty()) << "no series for " << *promql;
    }
    // Each metric the dashboard names is one Prometheus has from calyx.
    for (const auto& name : names) {
        const auto result = prometheus_->query(name, at);
        ASSERT_TRUE(result) << result.error();
        EXPECT_FALSE(result->empty()) << name << ": the dashboard uses it, calyx does not serve it";
    }
}

}  // namespace
}  // namespace calyx::test

int main(int argc, char** argv) {
    return calyx::test::run_integration_tests(argc, argv);
}
