// Debian's etcd-server for the datastore tests: one etcd on loopback per test, with its own data
// directory and free ports, started, killed and restarted by the test. Keys are written with
// calyx's own etcd client (the JSON gateway networking-calico uses too); its requests and
// answers are checked on their own in tests/unit/etcd_client_test.cpp.
#pragma once

#include <chrono>
#include <expected>
#include <memory>
#include <string>

#include "calyx_process.hpp"
#include "cp/datastore/etcd_client.hpp"

namespace calyx::test {

class EtcdServer {
  public:
    // Starts `etcd` (from PATH; scripts/setup.sh installs etcd-server) with its data in `dir`
    // and waits until it answers.
    static std::expected<std::unique_ptr<EtcdServer>, std::string> start(const fs::path& dir);
    ~EtcdServer();

    const std::string& url() const { return url_; }
    cp::datastore::EtcdClient& client() { return *client_; }

    // Writes and deletes, returning etcd's revision after them.
    std::expected<int64_t, std::string> put(const std::string& key, const std::string& value);
    std::expected<int64_t, std::string> put(const std::pair<std::string, std::string>& kv) {
        return put(kv.first, kv.second);
    }
    std::expected<int64_t, std::string> remove(const std::string& key);
    // Many puts in transactions of at most 128 (etcd's --max-txn-ops), for large sites.
    std::expected<int64_t, std::string> put_all(const std::vector<std::pair<std::string, std::string>>& kvs);
    // Compacts the history up to `revision` (physically: the revisions are gone).
    std::expected<void, std::string> compact(int64_t revision);
    int64_t revision();

    // SIGKILL: etcd disappears as in a crash. start_again() brings it back on the same data
    // and ports.
    void kill();
    std::expected<void, std::string> start_again();
    std::string log() const;

  private:
    EtcdServer() = default;
    std::expected<void, std::string> launch();

    fs::path dir_;
    uint16_t client_port_ = 0, peer_port_ = 0;
    std::string url_;
    std::unique_ptr<ChildProcess> process_;
    std::unique_ptr<cp::datastore::EtcdClient> client_;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
uint16_t free_loopback_port();

}  // namespace calyx::test
