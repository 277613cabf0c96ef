#include "etcd_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace calyx::test {

using namespace std::chrono_literals;

uint16_t free_loopback_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
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

std::expected<std::unique_ptr<EtcdServer>, std::string> EtcdServer::start(const fs::path& dir) {
    std::unique_ptr<EtcdServer> s(new EtcdServer());
    s->dir_ = dir;
    s->client_port_ = free_loopback_port();
    s->peer_port_ = free_loopback_port();
    s->url_ = fmt::format("http://127.0.0.1:{}", s->client_port_);
    s->client_ = std::make_unique<cp::datastore::EtcdClient>(cp::datastore::EtcdClient::Options{
        .endpoints = {s->url_}, .connect_timeout = 500ms, .timeout = 5s});
    if (auto ok = s->launch(); !ok) return std::unexpected(ok.error());
    return s;
}

EtcdServer::~EtcdServer() {
    if (process_) process_->stop(2s);
}

std::expected<void, std::string> EtcdServer::launch() {
    const std::string peer = fmt::format("http://127.0.0.1:{}", peer_port_);
    auto p = ChildProcess::spawn({"/usr/bin/etcd", "--name", "calyx-test", "--data-dir", (dir_ / "etcd-data").string(),
                                  "--listen-client-urls", url_, "--advertise-client-urls", url_, "--listen-peer-urls",
                                  peer, "--initial-advertise-peer-urls", peer, "--initial-cluster",
                                  "calyx-test=" + peer, "--log-level", "warn"},
                                 dir_ / "etcd.log");
    if (!p) return std::unexpected("cannot start etcd: " + p.error());
    process_ = std::move(*p);
    for (const auto deadline = std::chrono::steady_clock::now() + 15s; std::chrono::steady_clock::now() < deadline;) {
        if (client_->revision()) return {};
        if (!process_->running()) break;
        std::this_thread::sleep_for(100ms);
    }
    return std::unexpected("etcd did not answer:\n" + log());
}

std::expected<int64_t, std::string> EtcdServer::put(const std::string& key, const std::string& value) {
    const auto r = client_->put(key, value);
    if (!r) return std::unexpected(fmt::format("put {}: {}", key, r.error().message));
    return *r;
}

std::expected<int64_t, std::string> EtcdServer::remove(const std::string& key) {
    const auto r = client_->remove(key);
    if (!r) return std::unexpected(fmt::format("delete {}: {}", key, r.error().message));
    return *r;
}

std::expected<int64_t, std::string> EtcdServer::put_all(const std::vector<std::pair<std::string, std::string>>& kvs) {
    int64_t revision = 0;
    for (size_t at = 0; at < kvs.size(); at += 128) {
        nlohmann::json txn{{"success", nlohmann::json::array()}};
        for (size_t i = at; i < std::min(kvs.size(), at + 128); ++i)
            txn["success"].push_back({{"request_put",
                                       {{"key", cp::datastore::base64_encode(kvs[i].first)},
                                        {"value", cp::datastore::base64_encode(kvs[i].second)}}}});
        const auto body = client_->post("/v3/kv/txn", txn.dump());
        if (!body) return std::unexpected(body.error().message);
        const auto r = cp::datastore::parse_header_revision(*body);
        if (!r) return std::unexpected(r.error().message);
        revision = *r;
    }
    return revision;
}

std::expected<void, std::string> EtcdServer::compact(int64_t revision) {
    const auto body = client_->post("/v3/kv/compaction", fmt::format(R"({{"revision":"{}","physical":true}})", revision));
    if (!body) return std::unexpected(body.error().message);
    if (const auto r = cp::datastore::parse_header_revision(*body); !r) return std::unexpected(r.error().message);
    return {};
}

int64_t EtcdServer::revision() { return client_->revision().value_or(0); }

void EtcdServer::kill() {
    if (process_) process_->kill();
}

std::expected<void, std::string> EtcdServer::start_again() { return launch(); }

std::string EtcdServer::log() const { return read_file(dir_ / "etcd.log"); }

}  // namespace calyx::test
