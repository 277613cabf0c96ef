// An etcd v3 client over etcd's JSON gateway (grpc-gateway: POST /v3/kv/range, /v3/watch, ...;
// keys and values in base64, 64-bit numbers in strings), with libcurl and nlohmann-json from
// Debian. It is the API networking-calico itself uses (etcd3gw); doc/datastore.md says why not
// gRPC.
//
// Requests and their answers are plain functions of JSON text (request_* and parse_*), tested
// without etcd; EtcdClient sends them. Unary calls block for at most the timeout; a watch runs
// on curl's multi interface so that one thread drives several watches (WatchSet) and stops
// them at once. Everything here runs on the datastore's own thread, never on a worker.
#pragma once

#include <chrono>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace calyx::cp::datastore {

std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text);

struct EtcdError {
    enum class Kind {
        unreachable,  // no answer: connection refused, timeout, no endpoint left
        compacted,    // the revision asked for is gone (list again at the current one)
        refused,      // etcd answered with an error
    };
    Kind kind = Kind::unreachable;
    std::string message;
};

struct EtcdKv {
    std::string key;
    std::string value;
    int64_t create_revision = 0;
    int64_t mod_revision = 0;
};

// One page of a range: at most `limit` keys from `key` on.
struct RangePage {
    std::vector<EtcdKv> kvs;
    bool more = false;
    int64_t revision = 0;  // the store's revision the page was read at
};

// One message of a watch stream.
struct WatchMessage {
    struct Event {
        bool deleted = false;
        EtcdKv kv;  // a deletion has the key and its mod_revision
    };
    int64_t revision = 0;  // header.revision
    bool created = false;
    bool canceled = false;
    int64_t compact_revision = 0;  // canceled because the start revision was compacted
    std::string cancel_reason;
    std::vector<Event> events;
};

// Request bodies.
std::string request_range(std::string_view key, std::string_view range_end, int64_t limit, int64_t revision);
std::string request_put(std::string_view key, std::string_view value, int64_t lease = 0);
std::string request_delete(std::string_view key, std::string_view range_end = {});
std::string request_watch(std::string_view key, std::string_view range_end, int64_t start_revision);
std::string request_lease_grant(int64_t ttl_seconds);

// Answers: etcd's error answers ({"error": ..., "code": 11}) become EtcdError.
std::expected<RangePage, EtcdError> parse_range(std::string_view body);
std::expected<int64_t, EtcdError> parse_header_revision(std::string_view body);  // put, delete, status
std::expected<int64_t, EtcdError> parse_lease_grant(std::string_view body);      // the lease id
std::expected<WatchMessage, EtcdError> parse_watch_message(std::string_view line);

class EtcdClient {
  public:
    struct Options {
        std::vector<std::string> endpoints;  // client URLs, tried in turn when one fails
        std::chrono::milliseconds connect_timeout{2000};
        std::chrono::milliseconds timeout{10000};  // a unary call, whole
    };
    explicit EtcdClient(Options options);
    ~EtcdClient();
    EtcdClient(const EtcdClient&) = delete;
    EtcdClient& operator=(const EtcdClient&) = delete;

    std::expected<RangePage, EtcdError> range(std::string_view key, std::string_view range_end, int64_t limit,
                                              int64_t revision = 0);
    std::expected<int64_t, EtcdError> put(std::string_view key, std::string_view value, int64_t lease = 0);
    std::expected<int64_t, EtcdError> remove(std::string_view key, std::string_view range_end = {});
    std::expected<int64_t, EtcdError> lease_grant(int64_t ttl_seconds);
    // The store's current revision (maintenance/status): proof that etcd answers.
    std::expected<int64_t, EtcdError> revision();
    // The endpoint the last call used.
    const std::string& endpoint() const;

    // POST `path` with `body` to the current endpoint, moving on to the next one when it cannot
    // be reached. The answer's body, or why there is none.
    std::expected<std::string, EtcdError> post(std::string_view path, const std::string& body);

  private:
    friend class WatchSet;
    Options options_;
    size_t current_ = 0;  // index into endpoints
    void* curl_ = nullptr;  // CURL*, kept for connection reuse
};

// Watches over one endpoint, driven together by poll(). A watch ends when its stream does (a
// cancel, an error, the endpoint going away): poll() then reports it in `ended`.
class WatchSet {
  public:
    using OnMessage = std::function<void(size_t watch, WatchMessage message)>;

    WatchSet(EtcdClient& client, OnMessage on_message);
    ~WatchSet();
    WatchSet(const WatchSet&) = delete;
    WatchSet& operator=(const WatchSet&) = delete;

    // Starts watching [key, range_end) from start_revision; returns its index for on_message.
    size_t add(std::string_view key, std::string_view range_end, int64_t start_revision);
    // Moves the streams for at most `wait`, calling on_message for each message received.
    // Returns the watches whose streams ended since the last call, with why.
    std::vector<std::pair<size_t, EtcdError>> poll(std::chrono::milliseconds wait);
    size_t active() const;

  private:
    struct Stream;
    EtcdClient& client_;
    OnMessage on_message_;
    void* multi_ = nullptr;  // CURLM*
    std::vector<std::unique_ptr<Stream>> streams_;
};

}  // namespace calyx::cp::datastore
