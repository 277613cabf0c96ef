// The etcd client's requests and its reading of etcd's answers, on the exact text etcd 3.4's
// JSON gateway sends (captured from Debian's etcd-server 3.4.23).
#include <gtest/gtest.h>

#include "cp/datastore/etcd_client.hpp"

namespace calyx::cp::datastore {
namespace {

TEST(EtcdClient, Base64IsRfc4648) {
    // RFC 4648 section 10.
    const std::pair<std::string, std::string> vectors[] = {{"", ""},           {"f", "Zg=="},         {"fo", "Zm8="},
                                                           {"foo", "Zm9v"},    {"foob", "Zm9vYg=="},  {"fooba", "Zm9vYmE="},
                                                           {"foobar", "Zm9vYmFy"}};
    for (const auto& [plain, encoded] : vectors) {
        EXPECT_EQ(base64_encode(plain), encoded);
        EXPECT_EQ(base64_decode(encoded), plain);
    }
    const std::string binary("\x00\xff\xfe/\x80", 5);
    EXPECT_EQ(base64_decode(base64_encode(binary)), binary);
    for (const char* bad : {"Zg=", "Z===", "Zg=a", "Zm9v!A==", "=Zm9"}) EXPECT_FALSE(base64_decode(bad)) << bad;
}

TEST(EtcdClient, RequestsAreTheGatewaysJson) {
    EXPECT_EQ(request_range("/calico/a", "/calico/b", 500, 42),
              R"({"key":"L2NhbGljby9h","limit":"500","range_end":"L2NhbGljby9i","revision":"42"})");
    EXPECT_EQ(request_range("/k", "/l", 0, 0), R"({"key":"L2s=","range_end":"L2w="})");
    EXPECT_EQ(request_put("/k", "v", 7), R"({"key":"L2s=","lease":"7","value":"dg=="})");
    EXPECT_EQ(request_put("/k", ""), R"({"key":"L2s=","value":""})");
    EXPECT_EQ(request_delete("/k"), R"({"key":"L2s="})");
    EXPECT_EQ(request_watch("/a/", "/a0", 5),
              R"({"create_request":{"key":"L2Ev","range_end":"L2Ew","start_revision":"5"}})");
    EXPECT_EQ(request_lease_grant(90), R"({"TTL":"90"})");
}

TEST(EtcdClient, ARangePageHasItsKeysRevisionsAndWhetherMoreFollow) {
    const auto page = parse_range(
        R"({"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"3",)"
        R"("raft_term":"2"},"kvs":[{"key":"L2NhbGljby9h","create_revision":"2","mod_revision":"2","version":"1",)"
        R"("value":"aGVsbG8="}],"more":true,"count":"2"})");
    ASSERT_TRUE(page);
    EXPECT_EQ(page->revision, 3);
    EXPECT_TRUE(page->more);
    ASSERT_EQ(page->kvs.size(), 1u);
    EXPECT_EQ(page->kvs[0].key, "/calico/a");
    EXPECT_EQ(page->kvs[0].value, "hello");
    EXPECT_EQ(page->kvs[0].create_revision, 2);
    EXPECT_EQ(page->kvs[0].mod_revision, 2);
    // No keys: no "kvs", no "more".
    const auto empty = parse_range(R"({"header":{"revision":"9"}})");
    ASSERT_TRUE(empty);
    EXPECT_TRUE(empty->kvs.empty());
    EXPECT_FALSE(empty->more);
    EXPECT_EQ(empty->revision, 9);
}

TEST(EtcdClient, ACompactedRevisionIsToldApartFromOtherErrors) {
    const auto compacted = parse_range(
        R"({"error":"etcdserver: mvcc: required revision has been compacted","message":"etcdserver: mvcc: required )"
        R"(revision has been compacted","code":11})");
    ASSERT_FALSE(compacted);
    EXPECT_EQ(compacted.error().kind, EtcdError::Kind::compacted);
    const auto other = parse_header_revision(R"({"error":"etcdserver: too many requests","code":14})");
    ASSERT_FALSE(other);
    EXPECT_EQ(other.error().kind, EtcdError::Kind::refused);
    EXPECT_EQ(other.error().message, "etcd: etcdserver: too many requests");
    EXPECT_FALSE(parse_range("404 page not found"));
}

TEST(EtcdClient, WatchMessagesCarryPutsDeletesAndCancels) {
    const auto created = parse_watch_message(
        R"({"result":{"header":{"cluster_id":"1","member_id":"2","revision":"3","raft_term":"2"},"created":true}})");
    ASSERT_TRUE(created);
    EXPECT_TRUE(created->created);
    EXPECT_TRUE(created->events.empty());

    const auto events = parse_watch_message(
        R"({"result":{"header":{"revision":"4"},"events":[{"kv":{"key":"L2NhbGljby9h","create_revision":"2",)"
        R"("mod_revision":"2","version":"1","value":"aGVsbG8="}},{"type":"DELETE","kv":{"key":"L2NhbGljby9i",)"
        R"("mod_revision":"4"}}]}})");
    ASSERT_TRUE(events);
    EXPECT_EQ(events->revision, 4);
    ASSERT_EQ(events->events.size(), 2u);
    EXPECT_FALSE(events->events[0].deleted);
    EXPECT_EQ(events->events[0].kv.value, "hello");
    EXPECT_TRUE(events->events[1].deleted);
    EXPECT_EQ(events->events[1].kv.key, "/calico/b");
    EXPECT_EQ(events->events[1].kv.mod_revision, 4);

    const auto canceled = parse_watch_message(
        R"({"result":{"header":{"cluster_id":"1","member_id":"2","raft_term":"2"},"canceled":true,)"
        R"("compact_revision":"4"}})");
    ASSERT_TRUE(canceled);
    EXPECT_TRUE(canceled->canceled);
    EXPECT_EQ(canceled->compact_revision, 4);

    const auto error = parse_watch_message(
        R"({"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}})");
    ASSERT_FALSE(error);
    EXPECT_EQ(error.error().message, "etcd: etcdserver: no leader");
}

TEST(EtcdClient, NoEndpointAnsweringIsUnreachable) {
    // A port nothing listens on (the discard port of loopback; connection refused at once).
    EtcdClient client({.endpoints = {"http://127.0.0.1:9", "http://127.0.0.1:9/"},
                       .connect_timeout = std::chrono::milliseconds(500),
                       .timeout = std::chrono::milliseconds(1000)});
    const auto revision = client.revision();
    ASSERT_FALSE(revision);
    EXPECT_EQ(revision.error().kind, EtcdError::Kind::unreachable);
    EXPECT_NE(revision.error().message.find("http://127.0.0.1:9"), std::string::npos) << revision.error().message;
}

}  // namespace
}  // namespace calyx::cp::datastore
