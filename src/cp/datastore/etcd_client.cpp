#include "cp/datastore/etcd_client.hpp"

#include <array>
#include <charconv>
#include <mutex>

#include <curl/curl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace calyx::cp::datastore {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void global_init() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// grpc-gateway writes int64 fields as strings, and leaves out those that are zero.
int64_t int64_of(const Json& j, std::string_view key) {
    const auto it = j.find(key);
    if (it == j.end()) return 0;
    if (it->is_number_integer()) return it->get<int64_t>();
    if (!it->is_string()) return 0;
    const std::string& s = it->get_ref<const std::string&>();
    int64_t v = 0;
    std::from_chars(s.data(), s.data() + s.size(), v);
    return v;
}

// An error answer: {"error": "...", "code": N, "message": "..."} from a unary call, or
// {"error": {"grpc_code": N, "message": "..."}} in a stream.
std::optional<EtcdError> error_of(const Json& j) {
    const auto it = j.find("error");
    if (it == j.end()) return std::nullopt;
    std::string message = it->is_string() ? it->get<std::string>() : it->is_object() ? it->value("message", it->dump()) : it->dump();
    if (j.contains("message") && j["message"].is_string()) message = j["message"].get<std::string>();
    const bool compacted = message.find("compacted") != std::string::npos;
    return EtcdError{compacted ? EtcdError::Kind::compacted : EtcdError::Kind::refused, "etcd: " + message};
}

std::expected<Json, EtcdError> parse_object(std::string_view body) {
    Json j = Json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        return std::unexpected(EtcdError{EtcdError::Kind::refused,
                                         fmt::format("etcd answered what is not JSON: {}", body.substr(0, 200))});
    if (auto e = error_of(j)) return std::unexpected(*e);
    return j;
}

std::optional<EtcdKv> kv_of(const Json& j) {
    EtcdKv kv;
    const auto key = base64_decode(j.value("key", ""));
    const auto value = base64_decode(j.value("value", ""));
    if (!key || !value) return std::nullopt;
    kv.key = std::move(*key);
    kv.value = std::move(*value);
    kv.create_revision = int64_of(j, "create_revision");
    kv.mod_revision = int64_of(j, "mod_revision");
    return kv;
}

size_t append_to_string(char* data, size_t size, size_t count, void* out) {
    static_cast<std::string*>(out)->append(data, size * count);
    return size * count;
}

std::string url_of(std::string_view endpoint, std::string_view path) {
    if (endpoint.ends_with('/')) endpoint.remove_suffix(1);
    return fmt::format("{}{}", endpoint, path);
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 2 < bytes.size(); i += 3) {
        const uint32_t n = uint32_t(uint8_t(bytes[i])) << 16 | uint32_t(uint8_t(bytes[i + 1])) << 8 | uint8_t(bytes[i + 2]);
        for (int shift : {18, 12, 6, 0}) out += kAlphabet[(n >> shift) & 63];
    }
    if (const size_t rest = bytes.size() - i; rest > 0) {
        uint32_t n = uint32_t(uint8_t(bytes[i])) << 16;
        if (rest == 2) n |= uint32_t(uint8_t(bytes[i + 1])) << 8;
        out += kAlphabet[(n >> 18) & 63];
        out += kAlphabet[(n >> 12) & 63];
        out += rest == 2 ? kAlphabet[(n >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
    if (text.size() % 4 != 0) return std::nullopt;
    std::string out;
    out.reserve(text.size() / 4 * 3);
    for (size_t i = 0; i < text.size(); i += 4) {
        uint32_t n = 0;
        int pad = 0;
        for (size_t k = 0; k < 4; ++k) {
            const char c = text[i + k];
            uint32_t v = 0;
            if (c == '=' && i + 4 == text.size() && k >= 2) {
                ++pad;
            } else if (pad > 0) {
                return std::nullopt;  // data after padding
            } else {
                const size_t at = kAlphabet.find(c);
                if (at == std::string_view::npos) return std::nullopt;
                v = static_cast<uint32_t>(at);
            }
            n = n << 6 | v;
        }
        out += static_cast<char>(n >> 16);
        if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
        if (pad < 1) out += static_cast<char>(n & 0xff);
    }
    return out;
}

// --- Requests and answers ---------------------------------------------------------------------

std::string request_range(std::string_view key, std::string_view range_end, int64_t limit, int64_t revision) {
    Json j{{"key", base64_encode(key)}, {"range_end", base64_encode(range_end)}};
    if (limit > 0) j["limit"] = std::to_string(limit);
    if (revision > 0) j["revision"] = std::to_string(revision);
    return j.dump();
}

std::string request_put(std::string_view key, std::string_view value, int64_t lease) {
    Json j{{"key", base64_encode(key)}, {"value", base64_encode(value)}};
    if (lease) j["lease"] = std::to_string(lease);
    return j.dump();
}

std::string request_delete(std::string_view key, std::string_view range_end) {
    Json j{{"key", base64_encode(key)}};
    if (!range_end.empty()) j["range_end"] = base64_encode(range_end);
    return j.dump();
}

std::string request_watch(std::string_view key, std::string_view range_end, int64_t start_revision) {
    return Json{{"create_request",
                 {{"key", base64_encode(key)},
                  {"range_end", base64_encode(range_end)},
                  {"start_revision", std::to_string(start_revision)}}}}
        .dump();
}

std::string request_lease_grant(int64_t ttl_seconds) { return Json{{"TTL", std::to_string(ttl_seconds)}}.dump(); }

std::expected<RangePage, EtcdError> parse_range(std::string_view body) {
    auto j = parse_object(body);
    if (!j) return std::unexpected(j.error());
    RangePage page;
    page.revision = j->contains("header") ? int64_of((*j)["header"], "revision") : 0;
    page.more = j->value("more", false);
    if (const auto it = j->find("kvs"); it != j->end() && it->is_array()) {
        for (const Json& k : *it) {
            auto kv = kv_of(k);
            if (!kv) return std::unexpected(EtcdError{EtcdError::Kind::refused, "etcd answered a key that is not base64"});
            page.kvs.push_back(std::move(*kv));
        }
    }
    return page;
}

std::expected<int64_t, EtcdError> parse_header_revision(std::string_view body) {
    auto j = parse_object(body);
    if (!j) return std::unexpected(j.error());
    if (!j->contains("header")) return std::unexpected(EtcdError{EtcdError::Kind::refused, "etcd answered no header"});
    return int64_of((*j)["header"], "revision");
}

std::expected<int64_t, EtcdError> parse_lease_grant(std::string_view body) {
    auto j = parse_object(body);
    if (!j) return std::unexpected(j.error());
    const int64_t id = int64_of(*j, "ID");
    if (id == 0) return std::unexpected(EtcdError{EtcdError::Kind::refused, "etcd granted no lease"});
    return id;
}

std::expected<WatchMessage, EtcdError> parse_watch_message(std::string_view line) {
    auto j = parse_object(line);
    if (!j) return std::unexpected(j.error());
    const auto result = j->find("result");
    if (result == j->end() || !result->is_object())
        return std::unexpected(EtcdError{EtcdError::Kind::refused, "etcd's watch answered no result"});
    WatchMessage m;
    m.revision = result->contains("header") ? int64_of((*result)["header"], "revision") : 0;
    m.created = result->value("created", false);
    m.canceled = result->value("canceled", false);
    m.compact_revision = int64_of(*result, "compact_revision");
    m.cancel_reason = result->value("cancel_reason", "");
    if (const auto events = result->find("events"); events != result->end() && events->is_array()) {
        for (const Json& e : *events) {
            WatchMessage::Event event;
            event.deleted = e.value("type", "PUT") == "DELETE";
            const auto kv = e.contains("kv") ? kv_of(e["kv"]) : std::nullopt;
            if (!kv) return std::unexpected(EtcdError{EtcdError::Kind::refused, "etcd's watch answered a bad event"});
            event.kv = std::move(*kv);
            m.events.push_back(std::move(event));
        }
    }
    return m;
}

// --- EtcdClient -------------------------------------------------------------------------------

EtcdClient::EtcdClient(Options options) : options_(std::move(options)) {
    global_init();
    curl_ = curl_easy_init();
}

EtcdClient::~EtcdClient() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

const std::string& EtcdClient::endpoint() const { return options_.endpoints.at(current_); }

std::expected<std::string, EtcdError> EtcdClient::post(std::string_view path, const std::string& body) {
    CURL* curl = static_cast<CURL*>(curl_);
    if (!curl || options_.endpoints.empty()) return std::unexpected(EtcdError{EtcdError::Kind::unreachable, "no etcd client"});
    curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
    std::string last_error;
    for (size_t tries = 0; tries < options_.endpoints.size(); ++tries) {
        std::string answer;
        const std::string url = url_of(options_.endpoints[current_], path);
        curl_easy_reset(curl);
        curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.c_str());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_to_string);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.connect_timeout.count()));
        curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout.count()));
        const CURLcode rc = curl_easy_perform(curl);
        if (rc == CURLE_OK) {
            curl_slist_free_all(headers);
            return answer;
        }
        last_error = fmt::format("{}: {}", url, curl_easy_strerror(rc));
        current_ = (current_ + 1) % options_.endpoints.size();
    }
    curl_slist_free_all(headers);
    return std::unexpected(EtcdError{EtcdError::Kind::unreachable, last_error});
}

std::expected<RangePage, EtcdError> EtcdClient::range(std::string_view key, std::string_view range_end, int64_t limit,
                                                      int64_t revision) {
    auto body = post("/v3/kv/range", request_range(key, range_end, limit, revision));
    if (!body) return std::unexpected(body.error());
    return parse_range(*body);
}

std::expected<int64_t, EtcdError> EtcdClient::put(std::string_view key, std::string_view value, int64_t lease) {
    auto body = post("/v3/kv/put", request_put(key, value, lease));
    if (!body) return std::unexpected(body.error());
    return parse_header_revision(*body);
}

std::expected<int64_t, EtcdError> EtcdClient::remove(std::string_view key, std::string_view range_end) {
    auto body = post("/v3/kv/deleterange", request_delete(key, range_end));
    if (!body) return std::unexpected(body.error());
    return parse_header_revision(*body);
}

std::expected<int64_t, EtcdError> EtcdClient::lease_grant(int64_t ttl_seconds) {
    auto body = post("/v3/lease/grant", request_lease_grant(ttl_seconds));
    if (!body) return std::unexpected(body.error());
    return parse_lease_grant(*body);
}

std::expected<int64_t, EtcdError> EtcdClient::revision() {
    auto body = post("/v3/maintenance/status", "{}");
    if (!body) return std::unexpected(body.error());
    return parse_header_revision(*body);
}

// --- WatchSet ---------------------------------------------------------------------------------

struct WatchSet::Stream {
    WatchSet* owner = nullptr;
    size_t index = 0;
    CURL* curl = nullptr;
    curl_slist* headers = nullptr;
    std::string url, body, buffer;
    std::optional<EtcdError> ended;  // set by the write callback when it stops the stream

    ~Stream() {
        curl_easy_cleanup(curl);
        curl_slist_free_all(headers);
    }

    // Each message is one JSON object on its own line.
    static size_t on_data(char* data, size_t size, size_t count, void* self) {
        auto* s = static_cast<Stream*>(self);
        s->buffer.append(data, size * count);
        size_t start = 0;
        for (size_t nl; (nl = s->buffer.find('\n', start)) != std::string::npos; start = nl + 1) {
            const std::string_view line{s->buffer.data() + start, nl - start};
            if (line.find_first_not_of(" \r\t") == std::string_view::npos) continue;
            auto message = parse_watch_message(line);
            if (!message) {
                s->ended = message.error();
                return 0;  // stops the transfer
            }
            const bool canceled = message->canceled;
            const int64_t compacted = message->compact_revision;
            const std::string reason = message->cancel_reason;
            s->owner->on_message_(s->index, std::move(*message));
            if (canceled) {
                s->ended = EtcdError{compacted ? EtcdError::Kind::compacted : EtcdError::Kind::refused,
                                     compacted ? fmt::format("etcd: watch canceled, revision compacted to {}", compacted)
                                               : fmt::format("etcd: watch canceled: {}", reason)};
                return 0;
            }
        }
        s->buffer.erase(0, start);
        return size * count;
    }
};

WatchSet::WatchSet(EtcdClient& client, OnMessage on_message) : client_(client), on_message_(std::move(on_message)) {
    global_init();
    multi_ = curl_multi_init();
}

WatchSet::~WatchSet() {
    for (auto& s : streams_)
        if (s) curl_multi_remove_handle(static_cast<CURLM*>(multi_), s->curl);
    streams_.clear();
    curl_multi_cleanup(static_cast<CURLM*>(multi_));
}

size_t WatchSet::add(std::string_view key, std::string_view range_end, int64_t start_revision) {
    auto s = std::make_unique<Stream>();
    s->owner = this;
    s->index = streams_.size();
    s->url = url_of(client_.endpoint(), "/v3/watch");
    s->body = request_watch(key, range_end, start_revision);
    s->curl = curl_easy_init();
    s->headers = curl_slist_append(nullptr, "Content-Type: application/json");
    CURL* c = s->curl;
    curl_easy_setopt(c, CURLOPT_URL, s->url.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, s->body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(s->body.size()));
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &Stream::on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s.get());
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(client_.options_.connect_timeout.count()));
    // A watch has no end of its own; the datastore's liveness check notices a silent etcd.
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_multi_add_handle(static_cast<CURLM*>(multi_), c);
    streams_.push_back(std::move(s));
    return streams_.size() - 1;
}

size_t WatchSet::active() const {
    size_t n = 0;
    for (const auto& s : streams_) n += s ? 1 : 0;
    return n;
}

std::vector<std::pair<size_t, EtcdError>> WatchSet::poll(std::chrono::milliseconds wait) {
    CURLM* multi = static_cast<CURLM*>(multi_);
    int running = 0;
    curl_multi_perform(multi, &running);
    if (running > 0) curl_multi_poll(multi, nullptr, 0, static_cast<int>(wait.count()), nullptr);
    curl_multi_perform(multi, &running);
    std::vector<std::pair<size_t, EtcdError>> ended;
    int queued = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &queued)) {
        if (msg->msg != CURLMSG_DONE) continue;
        for (auto& s : streams_) {
            if (!s || s->curl != msg->easy_handle) continue;
            if (!s->ended && !s->buffer.empty())  // an error answer without a newline
                if (auto last = parse_watch_message(s->buffer); !last) s->ended = last.error();
            EtcdError why = s->ended.value_or(EtcdError{
                EtcdError::Kind::unreachable,
                msg->data.result == CURLE_OK ? fmt::format("{}: the watch stream ended", s->url)
                                             : fmt::format("{}: {}", s->url, curl_easy_strerror(msg->data.result))});
            ended.emplace_back(s->index, std::move(why));
            curl_multi_remove_handle(multi, s->curl);
            s.reset();
            break;
        }
    }
    return ended;
}

}  // namespace calyx::cp::datastore
