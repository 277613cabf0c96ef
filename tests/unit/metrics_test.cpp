// The Prometheus endpoint: a scrape shows the sample's counters under the documented names.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "cp/metrics.hpp"

namespace calyx::cp {
namespace {

std::string http_get(uint16_t port, const std::string& path) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        ::close(fd);
        return {};
    }
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    (void)!::write(fd, req.data(), req.size());
    std::string out;
    char buf[4096];
    // Read until the body is complete (the server may keep the connection open a while).
    for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;) {
        out.append(buf, static_cast<size_t>(n));
        const size_t head_end = out.find("\r\n\r\n");
        const size_t cl = out.find("Content-Length: ");
        if (head_end != std::string::npos && cl != std::string::npos && cl < head_end &&
            out.size() >= head_end + 4 + std::stoul(out.substr(cl + 16)))
            break;
    }
    ::close(fd);
    return out;
}

RouterSample sample() {
    RouterSample s;
    RouterSample::Port web{"web-1", true, {}};
    web.counters.rx_packets = 42;
    web.counters.tx_bytes = 4200;
    web.counters.drops[static_cast<size_t>(DropReason::sg_no_ingress_rule)] = 7;
    s.ports.push_back(web);
    s.lcores.push_back({1, 100, 1000, 60, 4, 700});
    s.conntrack_entries = 3;
    s.conntrack_capacity = 1024;
    s.dhcp_replies = {1, 2, 3};
    s.config_generation = 5;
    s.reloads_failed = 1;
    return s;
}

TEST(Metrics, ScrapeShowsCountersUnderTheirDocumentedNames) {
    auto server = MetricsServer::start("127.0.0.1:0", sample);
    ASSERT_TRUE(server.has_value()) << server.error();
    const std::string body = http_get((*server)->port(), "/metrics");
    for (const char* line : {
             "calyx_port_rx_packets_total{port=\"web-1\"} 42",
             "calyx_port_tx_bytes_total{port=\"web-1\"} 4200",
             "calyx_port_drops_total{port=\"web-1\",reason=\"sg_no_ingress_rule\"} 7",
             "calyx_port_drops_total{port=\"web-1\",reason=\"no_route\"} 0",
             "calyx_port_up{port=\"web-1\"} 1",
             "calyx_lcore_busy_cycles_total{lcore=\"1\"} 100",
             "calyx_lcore_cycles_total{lcore=\"1\"} 1000",
             "calyx_lcore_io_cycles_total{lcore=\"1\"} 60",
             "calyx_lcore_packets_total{lcore=\"1\"} 4",
             "calyx_lcore_sleep_cycles_total{lcore=\"1\"} 700",
             "calyx_conntrack_entries 3",
             "calyx_conntrack_capacity 1024",
             "calyx_dhcp_replies_total{type=\"nak\"} 3",
             "calyx_config_generation 5",
             "calyx_config_reloads_total{result=\"failure\"} 1",
             "# TYPE calyx_port_rx_packets_total counter",
             "# TYPE calyx_conntrack_entries gauge",
         })
        EXPECT_NE(body.find(line), std::string::npos) << "missing: " << line << "\n" << body.substr(0, 2000);
}

TEST(Metrics, AnAddressInUseIsAnErrorNotACrash) {
    auto first = MetricsServer::start("127.0.0.1:0", sample);
    ASSERT_TRUE(first.has_value());
    auto second = MetricsServer::start("127.0.0.1:" + std::to_string((*first)->port()), sample);
    ASSERT_FALSE(second.has_value());
    EXPECT_NE(second.error().find("cannot listen"), std::string::npos) << second.error();
}

// Loopback stays quiet; any other address is warned about, saying what it gives away.
TEST(MetricsExposure, NonLoopbackListenAddressIsWarnedAboutWithWhatItReveals) {
    for (const char* quiet : {"127.0.0.1:9469", "127.0.0.53:9000", "localhost:9469"})
        EXPECT_FALSE(exposure_warning(quiet)) << quiet;
    for (const char* exposed : {"0.0.0.0:9469", "192.0.2.7:9469", "10.0.0.1:80"}) {
        const auto w = exposure_warning(exposed);
        ASSERT_TRUE(w) << exposed;
        EXPECT_NE(w->find(exposed), std::string::npos) << *w;
        for (const char* reveals : {"instance's name", "drop counters", "connection table", "NAT"})
            EXPECT_NE(w->find(reveals), std::string::npos) << reveals << " missing from: " << *w;
    }
}

}  // namespace
}  // namespace calyx::cp
