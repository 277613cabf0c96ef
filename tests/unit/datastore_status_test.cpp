// What operators see of the datastore: calyxctl status's datastore object and the
// calyx_datastore_* metrics, with etcd up, with etcd away, and without a datastore.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "cp/control_commands.hpp"
#include "cp/metrics.hpp"

namespace calyx::cp {
namespace {

std::string scrape(uint16_t port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        ::close(fd);
        return {};
    }
    const std::string req = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    (void)!::write(fd, req.data(), req.size());
    std::string out;
    char buf[4096];
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

DatastoreSample etcd_down() {
    DatastoreSample d;
    d.type = "etcd";
    d.endpoint = "http://127.0.0.1:2379";
    d.up = false;
    d.revision = 4711;
    d.last_sync_age_s = 12.34;
    d.keys = 9;
    d.problems = 1;
    d.endpoints = 4;
    d.local_endpoints = 3;
    d.policies = 3;
    d.subnets = 2;
    d.lists_total = 2;
    d.applies_total = 5;
    d.apply_failures_total = 1;
    d.last_error = "http://127.0.0.1:2379/v3/maintenance/status: Couldn't connect to server";
    d.first_problems = {"/calico/resources/v3/projectcalico.org/networkpolicies/openstack/allow-ssh: policy "
                        "'allow-ssh' is not a security group of networking-calico; the key is left out"};
    return d;
}

TEST(DatastoreStatus, StatusShowsTheDatastoreItsRevisionAndSyncLag) {
    config::Config cfg;
    dp::Snapshot snap;
    RouterSample s;
    s.datastore = etcd_down();
    const Json j = status_result(cfg, snap, s, {"9.9", 1, {}}, {});
    const Json& d = j["datastore"];
    EXPECT_EQ(d["type"], "etcd");
    EXPECT_EQ(d["up"], false);
    EXPECT_EQ(d["revision"], 4711);
    EXPECT_DOUBLE_EQ(d["sync_lag_s"].get<double>(), 12.3);
    EXPECT_EQ(d["problems"], 1);
    EXPECT_EQ(d["first_problems"].size(), 1u);
    EXPECT_EQ(d["local_endpoints"], 3);
    EXPECT_EQ(d["applies"], 5);
    EXPECT_EQ(d["last_error"], "http://127.0.0.1:2379/v3/maintenance/status: Couldn't connect to server");
    // Without a datastore: null.
    EXPECT_TRUE(status_result(cfg, snap, RouterSample{}, {"9.9", 1, {}}, {})["datastore"].is_null());
}

TEST(DatastoreStatus, MetricsSayWhetherEtcdIsFollowedAndSinceWhen) {
    auto server = MetricsServer::start("127.0.0.1:0", [] {
        RouterSample s;
        s.datastore = etcd_down();
        return s;
    });
    ASSERT_TRUE(server) << server.error();
    const std::string text = scrape((*server)->port());
    for (const char* line : {"calyx_datastore_up{type=\"etcd\"} 0", "calyx_datastore_sync_age_seconds{type=\"etcd\"} 12.34",
                             "calyx_datastore_revision{type=\"etcd\"} 4711", "calyx_datastore_keys{type=\"etcd\"} 9",
                             "calyx_datastore_refused_keys{type=\"etcd\"} 1", "calyx_datastore_lists_total{type=\"etcd\"} 2",
                             "calyx_datastore_applies_total{type=\"etcd\",result=\"success\"} 5",
                             "calyx_datastore_applies_total{type=\"etcd\",result=\"failure\"} 1"})
        EXPECT_NE(text.find(line), std::string::npos) << line << "\n" << text;
}

TEST(DatastoreStatus, WithoutADatastoreTheFileIsTheSiteAndAlwaysUp) {
    auto server = MetricsServer::start("127.0.0.1:0", [] { return RouterSample{}; });
    ASSERT_TRUE(server) << server.error();
    const std::string text = scrape((*server)->port());
    EXPECT_NE(text.find("calyx_datastore_up{type=\"none\"} 1"), std::string::npos) << text;
    EXPECT_NE(text.find("calyx_datastore_sync_age_seconds{type=\"none\"} 0"), std::string::npos) << text;
}

}  // namespace
}  // namespace calyx::cp
