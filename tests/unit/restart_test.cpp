// Restart without cutting connections (issue 17): the connection table lives in the state file,
// and a new table restored from it continues what the old one tracked, through the whole
// pipeline on byte buffers: masqueraded connections keep their port, TCP windows go on being
// tracked, the rules in force are checked again, torn entries and foreign files are refused.
#include <fcntl.h>
#include <linux/magic.h>
#include <signal.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <filesystem>
#include <fstream>

#include "calyx/headers.hpp"
#include "cp/control_commands.hpp"
#include "dp/conntrack.hpp"
#include "dp/live_restore.hpp"
#include "dp/nat.hpp"
#include "dp/state_file.hpp"
#include "uplink_fixture.hpp"

namespace calyx::test {
namespace {

namespace fs = std::filesystem;
constexpr uint8_t kSyn = TcpHdr::kSyn, kAck = TcpHdr::kAck;
constexpr uint64_t kSecret = 0x5eed;

// A site where web-1 and db-1 talk (open group) and app-1 is masqueraded to the Internet.
class Restart : public GatewayTest {
protected:
    void SetUp() override {
        dir_ = fs::path(fmt::format("/tmp/calyx-unit-restart-{}-{}", ::getpid(), counter_++));
        fs::create_directories(dir_);
        start_process();
    }
    void TearDown() override {
        snap_.reset();
        conntrack_.reset();
        state_.reset();
        fs::remove_all(dir_);
    }

    std::string path() const { return (dir_ / "calyx.state").string(); }

    // What Router::start does: the previous file (if any) restored into a new one, renamed over.
    dp::CtRestoreStats start_process(const std::string& yaml = uplink_site()) {
        snap_.reset();
        conntrack_.reset();
        nat_.reset();
        auto previous = dp::StateFile::open(path());
        EXPECT_TRUE(previous.has_value()) << previous.error();
        const dp::StateParams params{kSecret, kSecret, dp::NatPortAllocator::kDefaultPartitions, 0};
        auto table = dp::ConnTable::create(4096, -1, kSecret, [&](size_t slots) -> std::expected<dp::CtStorage, std::string> {
            auto f = dp::StateFile::create(dp::StateFile::temporary_path(path()), slots, params);
            if (!f) return std::unexpected(f.error());
            next_ = std::move(*f);
            return dp::CtStorage{next_->entries(), next_->keys(), next_->changes()};
        });
        EXPECT_TRUE(table.has_value()) << table.error();
        conntrack_ = std::move(*table);
        auto cfg = config::parse_config(yaml, "site.yaml");
        auto nat = dp::NatPortAllocator::create({cfg->uplink->nat_port_min, cfg->uplink->nat_port_max},
                                                dp::NatPortAllocator::kDefaultPartitions, kSecret);
        nat_ = std::make_unique<dp::NatPortAllocator>(std::move(*nat));
        conntrack_->set_nat(nat_.get());
        dp::CtRestoreStats stats;
        if (previous && *previous) {
            const dp::CtRestoreSource from = (*previous)->restore_source();
            stats = conntrack_->restore(from, ctx_.now_ns, [&](uint16_t account) { return account != dropped_account_; });
        }
        previous = nullptr;
        state_ = std::move(next_);
        EXPECT_TRUE(state_->rename_to(path()).has_value());
        // A new process: its first snapshot is generation 1 again.
        generation_ = 0;
        load(yaml);
        EXPECT_TRUE(neighbors_.learn(kUpstream, kUpstreamMac, ctx_.now_ns, true));
        return stats;
    }

    dp::PacketMeta tcp(const Inside& from, Ipv4Addr to, uint16_t sport, uint16_t dport, uint8_t flags, uint32_t seq,
                       uint32_t ack, TestFrame** out = nullptr) {
        frames_.push_back(std::make_unique<TestFrame>(FrameBuilder()
                                                          .eth(from.mac, kGatewayMac)
                                                          .ipv4(from.ip, to, ipproto::kTcp)
                                                          .tcp(sport, dport, flags, seq, ack)
                                                          .build()));
        if (out) *out = frames_.back().get();
        return run(*frames_.back(), from.port);
    }
    dp::PacketMeta tcp_in(Ipv4Addr from, Ipv4Addr to, uint16_t sport, uint16_t dport, uint8_t flags, uint32_t seq,
                          uint32_t ack, TestFrame** out = nullptr) {
        frames_.push_back(std::make_unique<TestFrame>(FrameBuilder()
                                                          .eth(kUpstreamMac, kUplinkMac)
                                                          .ipv4(from, to, ipproto::kTcp)
                                                          .tcp(sport, dport, flags, seq, ack)
                                                          .build()));
        if (out) *out = frames_.back().get();
        return run(*frames_.back(), kUplinkPort);
    }
    static uint16_t src_port(TestFrame& f) { return f.at<TcpHdr>(sizeof(EtherHdr) + sizeof(Ipv4Hdr))->src_port.host(); }

    // app-1 -> the Internet server, masqueraded and established; returns its external port.
    uint16_t masqueraded_connection(uint16_t sport) {
        TestFrame* out = nullptr;
        EXPECT_EQ(tcp(kApp, kServer, sport, 443, kSyn, 1000, 0, &out).verdict, dp::Verdict::forward);
        const uint16_t external = src_port(*out);
        EXPECT_EQ(tcp_in(kServer, kHostAddr, 443, external, kSyn | kAck, 5000, 1001).verdict, dp::Verdict::forward);
        EXPECT_EQ(tcp(kApp, kServer, sport, 443, kAck, 1001, 5001).verdict, dp::Verdict::forward);
        return external;
    }
    // web-1 -> db-1:5432, established.
    void instance_connection(uint16_t sport) {
        EXPECT_EQ(tcp(kWeb, kDbIp, sport, 5432, kSyn, 100, 0).verdict, dp::Verdict::forward);
        EXPECT_EQ(tcp(kDb, kWebIp, 5432, sport, kSyn | kAck, 900, 101).verdict, dp::Verdict::forward);
        EXPECT_EQ(tcp(kWeb, kDbIp, sport, 5432, kAck, 101, 901).verdict, dp::Verdict::forward);
    }

    static inline int counter_ = 0;
    fs::path dir_;
    std::unique_ptr<dp::StateFile> next_, state_;
    uint16_t dropped_account_ = dp::kNoAccount;
    std::vector<std::unique_ptr<TestFrame>> frames_;
};

TEST_F(Restart, EstablishedConnectionsContinueAndMasqueradedOnesKeepTheirPort) {
    const uint16_t external = masqueraded_connection(41000);
    instance_connection(50000);
    const auto stats = start_process();
    EXPECT_EQ(stats.connections, 2u);
    EXPECT_EQ(stats.masqueraded, 1u);
    EXPECT_EQ(stats.torn + stats.expired + stats.unowned + stats.full + stats.nat_refused, 0u);

    // No SYN: only a restored connection lets these through (a new table drops them as
    // ct_invalid_new).
    TestFrame* out = nullptr;
    const auto m = tcp(kApp, kServer, 41000, 443, kAck, 1001, 5001, &out);
    ASSERT_EQ(m.verdict, dp::Verdict::forward) << drop_reason_info(m.reason).name;
    EXPECT_EQ(src_port(*out), external) << "the same external port after the restart";
    TestFrame* back = nullptr;
    const auto r = tcp_in(kServer, kHostAddr, 443, external, kAck, 5001, 1001, &back);
    ASSERT_EQ(r.verdict, dp::Verdict::forward) << drop_reason_info(r.reason).name;
    EXPECT_EQ(r.out_port, kAppPort);
    EXPECT_EQ(nat_->in_use(ipproto::kTcp), 1u) << "the port is taken again in the rebuilt allocator";
    EXPECT_FALSE(nat_->claim(ipproto::kTcp, kServer, 443, external)) << "nobody else can get it";
    const auto w = tcp(kWeb, kDbIp, 50000, 5432, kAck, 101, 901);
    EXPECT_EQ(w.verdict, dp::Verdict::forward) << drop_reason_info(w.reason).name;
    EXPECT_EQ(tcp(kDb, kWebIp, 5432, 50000, kAck, 901, 101).verdict, dp::Verdict::forward);
}

TEST_F(Restart, WithoutTheStateFileTheSameSegmentsAreDropped) {
    // The control for the test above: what a restart did before issue 17.
    masqueraded_connection(41000);
    instance_connection(50000);
    fs::remove(path());
    start_process();
    const auto m = tcp(kApp, kServer, 41000, 443, kAck, 1001, 5001);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::ct_invalid_new);
}

TEST_F(Restart, WindowTrackingContinuesOutOfWindowSegmentsAreStillDropped) {
    instance_connection(50000);
    start_process();
    // Far beyond anything db-1 announced: dropped, as before the restart.
    const auto m = tcp(kWeb, kDbIp, 50000, 5432, kAck, 101 + 0x40000000, 901);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::ct_out_of_window) << drop_reason_info(m.reason).name;
    EXPECT_EQ(tcp(kWeb, kDbIp, 50000, 5432, kAck, 101, 901).verdict, dp::Verdict::forward);
}

TEST_F(Restart, RestoredConnectionsAreCheckedAgainstTheRulesInForce) {
    instance_connection(50000);
    // The new process starts with rules that no longer let web-1 reach db-1.
    std::string yaml = uplink_site();
    const std::string from = "security_groups: [everywhere],\n     port: {type: vhost-user, socket: /tmp/calyx-unit/db-1.sock}";
    ASSERT_NE(yaml.find(from), std::string::npos);
    yaml.replace(yaml.find(from), from.size(), "security_groups: [],\n     port: {type: vhost-user, socket: /tmp/calyx-unit/db-1.sock}");
    start_process(yaml);
    const auto m = tcp(kWeb, kDbIp, 50000, 5432, kAck, 101, 901);
    EXPECT_EQ(m.verdict, dp::Verdict::drop);
    EXPECT_EQ(m.reason, DropReason::sg_revoked) << drop_reason_info(m.reason).name;
}

TEST_F(Restart, AnEntryBeingWrittenWhenTheProcessDiedIsSkipped) {
    masqueraded_connection(41000);
    instance_connection(50000);
    // A worker held web-1's entry when the process died: its bytes cannot be trusted.
    const auto key = dp::make_ct_key(ipproto::kTcp, {zones_.at("public"), kWebIp, 50000}, {zones_.at("private"), kDbIp, 5432});
    const int32_t pos = conntrack_->lookup(key.key);
    ASSERT_GE(pos, 0);
    conntrack_->entry(pos).lock_entry();
    const auto stats = start_process();
    EXPECT_EQ(stats.torn, 1u);
    EXPECT_EQ(stats.connections, 1u) << "the other one is restored";
    EXPECT_EQ(tcp(kWeb, kDbIp, 50000, 5432, kAck, 101, 901).reason, DropReason::ct_invalid_new);
}

TEST_F(Restart, AKeyRecordThatDoesNotMatchItsEntrysCheckBitsIsSkipped) {
    instance_connection(50000);
    const auto key = dp::make_ct_key(ipproto::kTcp, {zones_.at("public"), kWebIp, 50000}, {zones_.at("private"), kDbIp, 5432});
    const int32_t pos = conntrack_->lookup(key.key);
    ASSERT_GE(pos, 0);
    state_->keys()[pos].port[0] ^= 1;  // half-written
    const auto stats = start_process();
    EXPECT_EQ(stats.torn, 1u);
    EXPECT_EQ(stats.connections, 0u);
}

// The same for a record torn in the top bit of its first address or of its second port (a
// port of 32768 or more against one below it): the entry's check covers every bit of the key.
TEST_F(Restart, AKeyRecordTornInTheTopBitOfAnAddressOrAPortIsSkipped) {
    instance_connection(50000);
    instance_connection(50001);
    const auto key_of = [&](uint16_t sport) {
        return dp::make_ct_key(ipproto::kTcp, {zones_.at("public"), kWebIp, sport}, {zones_.at("private"), kDbIp, 5432}).key;
    };
    const int32_t first = conntrack_->lookup(key_of(50000));
    const int32_t second = conntrack_->lookup(key_of(50001));
    ASSERT_GE(first, 0);
    ASSERT_GE(second, 0);
    state_->keys()[first].port[1] ^= 0x8000;  // half-written
    state_->keys()[second].ip[0] ^= 0x80000000u;
    const auto stats = start_process();
    EXPECT_EQ(stats.torn, 2u);
    EXPECT_EQ(stats.connections, 0u) << "a torn key record was believed: a connection restored under another key";
}

TEST_F(Restart, ConnectionsOfInstancesNoLongerConfiguredAreNotRestoredAndGiveTheirPortBack) {
    masqueraded_connection(41000);
    dropped_account_ = snap_->instances[kAppPort].account;
    const auto stats = start_process();
    EXPECT_EQ(stats.unowned, 1u);
    EXPECT_EQ(nat_->in_use(ipproto::kTcp), 0u);
}

TEST_F(Restart, ExpiredConnectionsAreNotRestored) {
    instance_connection(50000);
    ctx_.now_ns += 10ull * 24 * 3600 * 1'000'000'000;  // ten days later (established: five)
    const auto stats = start_process();
    EXPECT_EQ(stats.expired, 1u);
    EXPECT_EQ(stats.connections, 0u);
}

TEST_F(Restart, ANatPortOutsideTheNewRangeIsNotRestored) {
    masqueraded_connection(41000);
    const auto stats = start_process(uplink_site("20000-29999"));
    EXPECT_EQ(stats.nat_refused, 1u);
    EXPECT_EQ(stats.connections, 0u);
}

TEST_F(Restart, ExpiryTimesAreConvertedWhenTheTscFrequencyDiffers) {
    instance_connection(50000);
    const auto key = dp::make_ct_key(ipproto::kTcp, {zones_.at("public"), kWebIp, 50000}, {zones_.at("private"), kDbIp, 5432});
    const uint32_t before = conntrack_->entry(conntrack_->lookup(key.key)).state.expires_s;
    auto old = dp::StateFile::open(path());
    ASSERT_TRUE(old.has_value() && *old);
    auto table = dp::ConnTable::create(4096, -1, kSecret);
    ASSERT_TRUE(table.has_value());
    // The old process's TSC ran at 3 GHz by its count, ours at 2 GHz: its second is 1.5 of ours.
    const dp::CtRestoreSource from{(*old)->entries(), (*old)->keys(), (*old)->slots(), 3'000'000'000, 2'000'000'000};
    ASSERT_EQ((*table)->restore(from, ctx_.now_ns, [](uint16_t) { return true; }).connections, 1u);
    const uint32_t after = (*table)->entry((*table)->lookup(key.key)).state.expires_s;
    EXPECT_EQ(after, (uint64_t{before} * 3 + 1) / 2);
}

// ---- a successor restoring while this process still serves (dp/live_restore.hpp) ----

// A successor as Router::begin_restore makes it: the running file opened live, every entry
// restored into a table of its own, then catch-ups.
struct Successor {
    std::unique_ptr<dp::StateFile> previous, file;
    std::unique_ptr<dp::ConnTable> table;
    std::unique_ptr<dp::NatPortAllocator> nat;
    std::unique_ptr<dp::LiveRestore> restore;
    uint16_t refused_account = dp::kNoAccount;
    dp::LiveRestore::Keep keep() const {
        return [refused = refused_account](uint16_t account) { return account != refused; };
    }
};

class LiveRestoreTest : public Restart {
protected:
    std::unique_ptr<Successor> successor(uint16_t refused_account = dp::kNoAccount,
                                         const std::string& nat_ports = "20000-59999") {
        auto s = std::make_unique<Successor>();
        s->refused_account = refused_account;
        auto previous = dp::StateFile::open(path(), dp::StateFile::Access::live);
        EXPECT_TRUE(previous.has_value() && *previous);
        s->previous = std::move(*previous);
        EXPECT_NE(s->previous->changes(), nullptr);
        auto table = dp::ConnTable::create(4096, -1, kSecret, [&](size_t slots) -> std::expected<dp::CtStorage, std::string> {
            auto f = dp::StateFile::create(path() + ".next", slots, s->previous->params());
            if (!f) return std::unexpected(f.error());
            s->file = std::move(*f);
            return dp::CtStorage{s->file->entries(), s->file->keys(), s->file->changes()};
        });
        EXPECT_TRUE(table.has_value());
        s->table = std::move(*table);
        const auto range = config::parse_config(uplink_site(nat_ports), "site.yaml")->uplink;
        auto nat = dp::NatPortAllocator::create({range->nat_port_min, range->nat_port_max},
                                                dp::NatPortAllocator::kDefaultPartitions, kSecret);
        s->nat = std::make_unique<dp::NatPortAllocator>(std::move(*nat));
        s->table->set_nat(s->nat.get());
        const dp::CtRestoreSource from = s->previous->restore_source();
        s->restore = std::make_unique<dp::LiveRestore>(*s->table, from, s->previous->changes());
        s->restore->restore_all(ctx_.now_ns, s->keep());
        return s;
    }
    size_t catch_up(Successor& s) { return s.restore->catch_up(ctx_.now_ns, s.keep()); }

    // The successor's table holds exactly this process's connections: every key once, with the
    // same protocol state, binding and account, and the same NAT ports taken.
    void expect_same_connections(const Successor& s) {
        size_t connections = 0;
        for (uint32_t pos = 0; pos < conntrack_->slots(); ++pos) {
            const dp::CtEntry& e = conntrack_->entry(static_cast<int32_t>(pos));
            if (e.dead()) continue;
            ++connections;
            dp::CtKey key;
            ASSERT_TRUE(conntrack_->key_at(static_cast<int32_t>(pos), key));
            const int32_t at = s.table->lookup(key);
            ASSERT_GE(at, 0) << "connection at " << pos << " lost";
            const dp::CtEntry& r = s.table->entry(at);
            EXPECT_EQ(std::memcmp(&r.state, &e.state, sizeof(e.state)), 0) << "a stale state for the entry at " << pos;
            EXPECT_EQ(r.account, e.account);
            EXPECT_EQ(r.orig_side, e.orig_side);
            EXPECT_EQ(dp::load_nat_binding(r).port, dp::load_nat_binding(e).port);
        }
        EXPECT_EQ(s.table->size(), conntrack_->size()) << "keys doubled or missing";
        EXPECT_EQ(s.restore->stats().connections, connections);
        EXPECT_EQ(s.nat->in_use(ipproto::kTcp), nat_->in_use(ipproto::kTcp));
    }
    int32_t position_of(const dp::CtKey& key) const { return conntrack_->lookup(key); }
    // `count` established web-1 -> db-1 connections (ports 10000 on) written straight into the
    // table, as a worker leaves them; their positions to `positions`.
    void established_web_db(uint32_t count, std::vector<int32_t>* positions = nullptr) {
        const uint16_t web = snap_->instances[kWebPort].account;
        for (uint32_t i = 0; i < count; ++i) {
            const dp::CtKey key = web_db_key(static_cast<uint16_t>(10000 + i));
            ASSERT_TRUE(conntrack_->reserve(1, ctx_.now_ns));
            const int32_t pos = conntrack_->insert(key);
            ASSERT_GE(pos, 0);
            dp::CtEntry& e = conntrack_->entry(pos);
            e.lock_entry();
            dp::ConnTable::hold_reserved(e);
            conntrack_->record_key(e, pos, key);
            e.state.proto = ipproto::kTcp;
            e.state.tcp_state = dp::TcpCtState::established;
            e.state.expires_s = static_cast<uint32_t>(ctx_.now_ns / 1'000'000'000 + 3600);
            e.orig_side = 0;
            e.account = web;
            conntrack_->unlock(pos);
            if (positions) positions->push_back(pos);
        }
    }
    dp::CtKey web_db_key(uint16_t sport) const {
        return dp::make_ct_key(ipproto::kTcp, {zones_.at("public"), kWebIp, sport}, {zones_.at("private"), kDbIp, 5432}).key;
    }
};

TEST_F(LiveRestoreTest, AConnectionChangedAfterThePreRestoreIsNeverBelievedStale) {
    instance_connection(50000);
    auto s = successor();
    // The old process goes on: data, then web-1 closes (FIN): the window and the state move.
    ASSERT_EQ(tcp(kWeb, kDbIp, 50000, 5432, kAck, 101, 901).verdict, dp::Verdict::forward);
    ASSERT_EQ(tcp(kDb, kWebIp, 5432, 50000, kAck, 901, 101).verdict, dp::Verdict::forward);
    ASSERT_EQ(tcp(kWeb, kDbIp, 50000, 5432, kAck | TcpHdr::kFin, 101, 901).verdict, dp::Verdict::forward);
    const dp::CtEntry& now = conntrack_->entry(position_of(web_db_key(50000)));
    const dp::CtEntry& copy = s->table->entry(s->table->lookup(web_db_key(50000)));
    ASSERT_NE(std::memcmp(&copy.state, &now.state, sizeof(now.state)), 0) << "the test needs a change after the copy";
    EXPECT_EQ(catch_up(*s), 1u);
    expect_same_connections(*s);
    EXPECT_EQ(s->table->entry(s->table->lookup(web_db_key(50000))).state.tcp_state, now.state.tcp_state);
}

TEST_F(LiveRestoreTest, AConnectionRemovedAfterThePreRestoreIsGoneWithItsPort) {
    masqueraded_connection(41000);
    instance_connection(50000);
    auto s = successor();
    ASSERT_EQ(s->nat->in_use(ipproto::kTcp), 1u);
    const uint16_t app = snap_->instances[kAppPort].account;
    ASSERT_EQ(conntrack_->remove_if([&](int32_t, const dp::CtEntry& e) { return e.account == app; }, nullptr), 1u);
    catch_up(*s);
    expect_same_connections(*s);
    EXPECT_EQ(s->nat->in_use(ipproto::kTcp), 0u) << "the removed connection's port is free again";
    EXPECT_EQ(s->table->accounts().connections(app), 0u) << "and its instance no longer charged";
}

TEST_F(LiveRestoreTest, AConnectionOpenedInTheWindowSurvives) {
    instance_connection(50000);
    auto s = successor();
    instance_connection(50001);
    masqueraded_connection(41000);
    ASSERT_LT(s->table->lookup(web_db_key(50001)), 0);
    catch_up(*s);
    expect_same_connections(*s);
    EXPECT_GE(s->table->lookup(web_db_key(50001)), 0);
}

TEST_F(LiveRestoreTest, ANatPortThatMovedToAnotherConnectionIsNeverLostOrDoubled) {
    // Every port of the range held by app-1's connections to the server: a new one can only
    // get the first one's, once that is removed. Its entry lands in a lower slot than the
    // first's (freed slots are reused last-in first-out), so a catch-up that restored slot by
    // slot would find the port still held by the first connection's stale copy and lose it.
    const std::string range = "20000-20063";
    start_process(uplink_site(range));
    instance_connection(50000);
    for (uint16_t sport = 41000; sport < 41064; ++sport) masqueraded_connection(sport);
    ASSERT_EQ(nat_->in_use(ipproto::kTcp), 64u);
    auto s = successor(dp::kNoAccount, range);
    // The first: the one in the highest slot.
    dp::CtKey first{};
    int32_t first_at = -1;
    for (uint16_t sport = 41000; sport < 41064; ++sport) {
        const auto key = dp::make_ct_key(ipproto::kTcp, {zones_.at("nat"), kAppIp, sport}, {0, kServer, 443}).key;
        if (position_of(key) > first_at) first = key, first_at = position_of(key);
    }
    const uint16_t external = dp::load_nat_binding(conntrack_->entry(first_at)).port;
    ASSERT_EQ(conntrack_->remove_if([&](int32_t pos, const dp::CtEntry&) { return pos == first_at; }, nullptr), 1u);
    const uint16_t web = snap_->instances[kWebPort].account;
    ASSERT_EQ(conntrack_->remove_if([&](int32_t, const dp::CtEntry& e) { return e.account == web; }, nullptr), 1u);
    EXPECT_EQ(masqueraded_connection(42000), external);
    const auto second = dp::make_ct_key(ipproto::kTcp, {zones_.at("nat"), kAppIp, 42000}, {0, kServer, 443}).key;
    ASSERT_LT(position_of(second), first_at) << "the test needs the second connection in a lower slot";
    catch_up(*s);
    expect_same_connections(*s);
    EXPECT_GE(s->table->lookup(second), 0) << "the connection that holds the port now";
    EXPECT_LT(s->table->lookup(first), 0);
    EXPECT_FALSE(s->nat->claim(ipproto::kTcp, kServer, 443, external)) << "taken once, by the second";
}

TEST_F(LiveRestoreTest, AnEntryLockedDuringThePreRestoreIsReadOnceItsWriterIsDone) {
    instance_connection(50000);
    const int32_t pos = position_of(web_db_key(50000));
    conntrack_->entry(pos).lock_entry();  // a worker is changing it
    auto s = successor();
    EXPECT_EQ(s->restore->stats().torn, 1u);
    EXPECT_LT(s->table->lookup(web_db_key(50000)), 0);
    conntrack_->entry(pos).state.tcp.peer[0].end += 10;  // what the worker wrote
    conntrack_->unlock(pos);
    catch_up(*s);
    expect_same_connections(*s);
    EXPECT_EQ(s->restore->stats().torn, 0u);
}

// Review: a reader that takes an entry's lock without changing it never marks the change map.
// `calyxctl conntrack` / `calyxctl nat` do exactly that in the running calyx
// (cp/control_commands.cpp copy_entry: lock_entry, copy, unlock_entry). A pre-restore that
// reads the entry in that instant finds it locked (torn); nothing ever sets its bit, a torn slot
// is not tried again (LiveRestore::catch_up retries only full and nat_refused), so the
// connection is lost by the successor although it never changed.
TEST_F(LiveRestoreTest, AnEntryOnlyReadUnderItsLockDuringThePreRestoreIsNotLost) {
    instance_connection(50000);
    const int32_t pos = position_of(web_db_key(50000));
    conntrack_->entry(pos).lock_entry();  // copy_entry(), control_commands.cpp:266
    auto s = successor();
    conntrack_->entry(pos).unlock_entry();  // control_commands.cpp:268: no change, no mark
    catch_up(*s);  // the old process stopped: the last catch-up
    expect_same_connections(*s);
    EXPECT_EQ(s->restore->stats().torn, 0u);
}

// The same through the real listing: `calyxctl conntrack` running in the old process while the
// successor pre-restores. Passes of the pre-restore (each reading every slot again) run until
// one found an entry the listing held; the listing stops, the last catch-up runs: every
// connection must be there.
TEST_F(LiveRestoreTest, CalyxctlConntrackDuringThePreRestoreLosesNoConnection) {
    constexpr uint32_t kConnections = 512;
    ASSERT_NO_FATAL_FAILURE(established_web_db(kConnections));
    std::atomic<bool> stop{false};
    std::thread lister([&] {
        cp::ConntrackQuery q;
        q.limit = 0;  // count only: the listing is its lock-copy-unlock per entry
        while (!stop.load(std::memory_order_relaxed)) (void)cp::conntrack_result(*snap_, *conntrack_, q, ctx_.now_ns);
    });
    auto s = successor();
    for (int pass = 0; pass < 5000 && s->restore->stats().torn == 0; ++pass) {
        s->restore->mark_all_changed();
        catch_up(*s);
    }
    stop = true;
    lister.join();
    const uint32_t torn_while_listing = s->restore->stats().torn;
    catch_up(*s);  // the old process stopped
    expect_same_connections(*s);
    EXPECT_EQ(s->restore->stats().torn, 0u) << torn_while_listing << " entries found held by the listing";
}

TEST_F(LiveRestoreTest, AfterARenumberingReloadEverythingIsReadAgain) {
    masqueraded_connection(41000);
    instance_connection(50000);
    const uint16_t app = snap_->instances[kAppPort].account;
    auto s = successor(app);  // app-1 was not configured when the successor read the names
    EXPECT_EQ(s->restore->stats().unowned, 1u);
    s->refused_account = dp::kNoAccount;  // ... and is in the names read after the stop
    s->restore->mark_all_changed();
    catch_up(*s);
    expect_same_connections(*s);
}

TEST_F(LiveRestoreTest, AnInstanceAddedMeanwhileHasOnlyItsRefusedConnectionsReadAgain) {
    masqueraded_connection(41000);
    instance_connection(50000);
    const uint16_t app = snap_->instances[kAppPort].account;
    auto s = successor(app);  // app-1 was not in the successor's configuration at its pre-restore
    EXPECT_EQ(s->restore->stats().unowned, 1u);
    s->refused_account = dp::kNoAccount;  // ... and is in the one it finishes with
    s->restore->retry_unowned();
    EXPECT_EQ(catch_up(*s), 0u) << "no slot changed: only the refused one is retried";
    expect_same_connections(*s);
    EXPECT_EQ(s->restore->stats().unowned, 0u);
}

TEST_F(LiveRestoreTest, WritersRacingTheRestoreLeaveNoStaleOrTornCopy) {
    // Worker threads keep rewriting entries (every word of a connection's state from one
    // counter, so a torn copy shows) while the successor restores and catches up; then they
    // stop, and one last catch-up must leave the successor with exactly their final content.
    constexpr uint32_t kConnections = 512;
    std::vector<int32_t> positions;
    ASSERT_NO_FATAL_FAILURE(established_web_db(kConnections, &positions));
    std::atomic<bool> stop{false};
    const auto writer = [&](uint32_t first) {
        for (uint32_t round = 1; !stop.load(std::memory_order_relaxed); ++round)
            for (uint32_t k = first; k < kConnections; k += 2) {
                dp::CtEntry& e = conntrack_->entry(positions[k]);
                e.lock_entry();
                for (auto& peer : e.state.tcp.peer) peer.end = peer.maxend = peer.maxwin = round;
                conntrack_->unlock(positions[k]);
            }
    };
    std::thread a(writer, 0), b(writer, 1);
    auto s = successor();
    for (int pass = 0; pass < 20; ++pass) catch_up(*s);
    stop = true;
    a.join();
    b.join();
    catch_up(*s);
    expect_same_connections(*s);
    for (uint32_t i = 0; i < kConnections; ++i) {
        const dp::CtEntry& r = s->table->entry(s->table->lookup(web_db_key(static_cast<uint16_t>(10000 + i))));
        EXPECT_EQ(r.state.tcp.peer[0].end, r.state.tcp.peer[1].maxwin) << "a torn copy";
    }
}

// ---- the file itself ----

// A table whose slot count is not a multiple of 64 ends its change map in a partial word: a
// change marked there is read again like any other.
TEST(LiveRestoreChangeMap, AChangeInThePartialLastWordIsReadAgain) {
    auto table = dp::ConnTable::create(1024, -1);
    ASSERT_TRUE(table.has_value()) << table.error();
    constexpr size_t kSlots = 65;  // one whole word and one bit
    std::vector<dp::CtEntry> entries(kSlots);  // all dead: nothing to restore
    std::vector<dp::CtKeyRecord> keys(kSlots);
    uint64_t changes[2] = {};
    const dp::LiveRestore::Keep keep = [](uint16_t) { return true; };
    dp::LiveRestore restore(**table, {entries.data(), keys.data(), kSlots, 0, 0}, changes);
    restore.restore_all(1'000'000'000, keep);
    changes[1] = 1;  // slot 64 was written after the copy
    EXPECT_EQ(restore.catch_up(1'000'000'000, keep), 1u);
    EXPECT_EQ(changes[1], 0u) << "its bit is taken";
}

TEST_F(Restart, TheChangeMapHasABitPerSlotWhateverTheSlotCount) {
    // 64 slots fill one word exactly, 65 need a second; the file opens with a map of that size.
    const dp::StateParams params{1, 2, 3, 4};
    for (const uint64_t slots : {64u, 65u, 128u}) {
        const std::string file = path() + std::to_string(slots);
        auto made = dp::StateFile::create(file, slots, params);
        ASSERT_TRUE(made.has_value()) << made.error();
        made->reset();
        auto opened = dp::StateFile::open(file);
        ASSERT_TRUE(opened.has_value()) << slots << " slots: " << opened.error();
        ASSERT_TRUE(*opened);
        ASSERT_NE((*opened)->changes(), nullptr);
        // Every slot's bit is in the map: the last one can be set and read back.
        uint64_t* map = (*opened)->changes();
        EXPECT_EQ(map[(slots - 1) / 64] & (uint64_t{1} << ((slots - 1) % 64)), 0u);
    }
}

// A calyx that starts while a successor pre-restores (after a crash and a restart meanwhile),
// or the reverse, restores into a temporary of its own: neither unlinks nor renames the other's
// (with one shared name, the second to start unlinked the first's file, and the first renamed
// the second's over the state file while it ran on an unlinked one).
TEST_F(Restart, TwoProcessesRestoringAtOnceKeepTheirOwnTemporaries) {
    const dp::StateParams params{1, 2, 3, 4};
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t other = ::fork();
    ASSERT_GE(other, 0);
    if (other == 0) {  // the other process: creates its temporary, then waits
        auto f = dp::StateFile::create(dp::StateFile::temporary_path(path()), 64, params);
        const char c = f ? 'y' : 'n';
        if (::write(ready[1], &c, 1) != 1) ::_exit(1);
        ::pause();
        ::_exit(0);
    }
    struct Reaped {  // the other process ends with the test, whatever fails first
        pid_t pid;
        void end() {
            if (pid > 0) ::kill(pid, SIGKILL), ::waitpid(pid, nullptr, 0);
            pid = 0;
        }
        ~Reaped() { end(); }
    } reaped{other};
    char c = 0;
    ASSERT_EQ(::read(ready[0], &c, 1), 1);
    ::close(ready[0]);
    ::close(ready[1]);
    ASSERT_EQ(c, 'y');
    const std::string theirs = fmt::format("{}.new-{}", path(), other);
    ASSERT_TRUE(fs::exists(theirs));
    std::ofstream(path() + ".new") << "left by a calyx before 2026-12-06";
    // This process starts meanwhile: it removes what is abandoned, creates its own and renames it.
    EXPECT_EQ(dp::StateFile::remove_abandoned_temporaries(path()), 1u) << "only the old-style one";
    auto mine = dp::StateFile::create(dp::StateFile::temporary_path(path()), 64, params);
    ASSERT_TRUE(mine.has_value()) << mine.error();
    ASSERT_TRUE((*mine)->rename_to(path()).has_value());
    EXPECT_TRUE(fs::exists(theirs)) << "the other process's temporary is untouched";
    // Once the other process is gone its temporary is abandoned: the next start removes it.
    reaped.end();
    EXPECT_EQ(dp::StateFile::remove_abandoned_temporaries(path()), 1u);
    EXPECT_FALSE(fs::exists(theirs));
    EXPECT_TRUE(fs::exists(path())) << "the state file itself stays";
}

// A temporary whose process is gone is abandoned even when its pid now names another process
// (pids are reused): nothing holds it, and left there it keeps a whole table's memory (tmpfs or
// hugepages) until that unrelated process ends.
TEST_F(Restart, ATemporaryOfAGoneProcessIsRemovedEvenIfItsPidWasReused) {
    const pid_t unrelated = ::fork();  // plays the process that got the dead calyx's pid
    ASSERT_GE(unrelated, 0);
    if (unrelated == 0) {
        ::pause();
        ::_exit(0);
    }
    struct Reaped {
        pid_t pid;
        ~Reaped() { ::kill(pid, SIGKILL), ::waitpid(pid, nullptr, 0); }
    } reaped{unrelated};
    // What a calyx of that pid left when it died in its restore (or was refused a take-over).
    const std::string left = fmt::format("{}.new-{}", path(), unrelated);
    {
        const dp::StateParams params{1, 2, 3, 4};
        auto f = dp::StateFile::create(left, 64, params);
        ASSERT_TRUE(f.has_value()) << f.error();
    }  // closed and unmapped: no process has it any more
    EXPECT_EQ(dp::StateFile::remove_abandoned_temporaries(path()), 1u);
    EXPECT_FALSE(fs::exists(left)) << "kept for as long as an unrelated process has the pid";
}

TEST_F(Restart, AFileIsInMemoryOnTmpfsAndNotOnADisk) {
    const dp::StateParams params{1, 2, 3, 4};
    const std::string shm = fmt::format("/dev/shm/calyx-unit-restart-{}.state", ::getpid());
    auto in_shm = dp::StateFile::create(shm, 64, params);
    ASSERT_TRUE(in_shm.has_value()) << in_shm.error();
    EXPECT_TRUE((*in_shm)->in_memory());
    in_shm->reset();
    fs::remove(shm);
    // This test's directory: in memory exactly when it is not on a disk's file system (CI's
    // /tmp is ext4).
    struct statfs st{};
    ASSERT_EQ(::statfs(dir_.c_str(), &st), 0);
    const bool disk = st.f_type == EXT4_SUPER_MAGIC || st.f_type == XFS_SUPER_MAGIC || st.f_type == BTRFS_SUPER_MAGIC;
    auto here = dp::StateFile::create(path(), 64, params);
    ASSERT_TRUE(here.has_value()) << here.error();
    EXPECT_EQ((*here)->in_memory(), !disk);
}

TEST_F(Restart, NamesSurviveAndATornCopyIsNotBelieved) {
    dp::StateNames names{{{"public", 1}, {"nat", 2}}, {{"web-1", 0}, {"app-1", 7}}};
    ASSERT_TRUE(state_->write_names(names).has_value());
    EXPECT_EQ(state_->names(), names);
    dp::StateNames newer = names;
    newer.accounts["db-1"] = 3;
    ASSERT_TRUE(state_->write_names(newer).has_value());
    EXPECT_EQ(state_->names(), newer);
    // A crash in the middle of the next write leaves the copy it wrote without a valid check.
    dp::StateNames third = newer;
    third.accounts["x"] = 9;
    ASSERT_TRUE(state_->write_names(third).has_value());
    auto reopened = dp::StateFile::open(path());
    ASSERT_TRUE(reopened.has_value() && *reopened);
    EXPECT_EQ((*reopened)->names(), third);
    {
        // Flip a byte of the newest copy's text: the reader falls back to the one before.
        const int fd = ::open(path().c_str(), O_RDWR);
        ASSERT_GE(fd, 0);
        char c;
        // The copies alternate: the third write went into the first copy (at 4096).
        ASSERT_EQ(::pread(fd, &c, 1, 4096), 1);
        c ^= 0x20;
        ASSERT_EQ(::pwrite(fd, &c, 1, 4096), 1);
        ::close(fd);
    }
    EXPECT_EQ((*reopened)->names(), newer);
}

TEST_F(Restart, AFileOfAnotherLayoutVersionIsRefusedWithAClearError) {
    instance_connection(50000);
    state_.reset();
    snap_.reset();
    conntrack_.reset();
    // Version 1 is the layout before the compact one (32-byte key records, a second entry per
    // masqueraded connection): a calyx of today must not read it as its own; nor a newer one.
    for (const uint32_t version : {1u, dp::kStateLayoutVersion + 1}) {
        const int fd = ::open(path().c_str(), O_RDWR);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::pwrite(fd, &version, sizeof(version), 8), 4);
        if (version == 1) {  // its key records' size, as a version-1 file has it
            const uint32_t key_bytes = 32;
            ASSERT_EQ(::pwrite(fd, &key_bytes, sizeof(key_bytes), 8 + 4 * 3), 4);
        }
        ::close(fd);
        auto opened = dp::StateFile::open(path());
        ASSERT_FALSE(opened.has_value());
        EXPECT_NE(opened.error().find(fmt::format("layout version {}, this calyx reads versions 2 to {} only", version,
                                                  dp::kStateLayoutVersion)),
                  std::string::npos)
            << opened.error();
        EXPECT_NE(opened.error().find("it is not read"), std::string::npos) << opened.error();
    }
    EXPECT_EQ(dp::kStateLayoutVersion, 3u);
}

// Layout 2 is layout 3 with another entry check over the key (FNV-1a): a calyx of today
// restores such a file's connections with that check (an upgrade from it cuts nothing), and
// never takes one check for the other.
TEST_F(Restart, AFileOfLayoutVersion2IsRestoredWithItsOwnEntryCheck) {
    // A connection whose two checks differ (they are 7 bits: one key in 128 has the same).
    uint16_t sport = 50000;
    const auto key_of = [&](uint16_t port) {
        return dp::make_ct_key(ipproto::kTcp, {zones_.at("public"), kWebIp, port}, {zones_.at("private"), kDbIp, 5432}).key;
    };
    while (dp::ct_key_check_v2(key_of(sport)) == dp::ct_key_check(key_of(sport))) ++sport;
    instance_connection(sport);
    const int32_t pos = conntrack_->lookup(key_of(sport));
    ASSERT_GE(pos, 0);
    // As a calyx of layout 2 wrote it: its check, its version.
    state_->entries()[pos].key_check = dp::ct_key_check_v2(key_of(sport)) & 0x7f;
    const auto write_version = [&](uint32_t version) {
        const int fd = ::open(path().c_str(), O_RDWR);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::pwrite(fd, &version, sizeof(version), 8), 4);
        ::close(fd);
    };
    write_version(2);
    {
        auto opened = dp::StateFile::open(path());
        ASSERT_TRUE(opened.has_value() && *opened) << (opened ? "" : opened.error());
        EXPECT_EQ((*opened)->layout_version(), 2u);
    }
    const auto stats = start_process();
    EXPECT_EQ(stats.connections, 1u);
    EXPECT_EQ(stats.torn, 0u);
    EXPECT_EQ(tcp(kWeb, kDbIp, sport, 5432, kAck, 101, 901).verdict, dp::Verdict::forward) << "it continues";
    // The restored file is layout 3, its entries checked as layout 3.
    auto reopened = dp::StateFile::open(path());
    ASSERT_TRUE(reopened.has_value() && *reopened);
    EXPECT_EQ((*reopened)->layout_version(), dp::kStateLayoutVersion);
    reopened->reset();

    // The same layout-2 check in a file that says layout 3: not this entry's check, not restored.
    const int32_t now_at = conntrack_->lookup(key_of(sport));
    ASSERT_GE(now_at, 0);
    state_->entries()[now_at].key_check = dp::ct_key_check_v2(key_of(sport)) & 0x7f;
    const auto again = start_process();
    EXPECT_EQ(again.torn, 1u);
    EXPECT_EQ(again.connections, 0u);
}

TEST_F(Restart, AFileThatIsNotAStateFileIsRefused) {
    state_.reset();
    snap_.reset();
    conntrack_.reset();
    std::ofstream(path()) << std::string(8192, 'x');
    auto opened = dp::StateFile::open(path());
    ASSERT_FALSE(opened.has_value());
    EXPECT_NE(opened.error().find("not a calyx state file"), std::string::npos) << opened.error();
    std::ofstream(path(), std::ios::trunc) << "short";
    EXPECT_FALSE(dp::StateFile::open(path()).has_value());
}

TEST_F(Restart, NoFileIsAFreshStart) {
    fs::remove(path());
    auto opened = dp::StateFile::open(path());
    ASSERT_TRUE(opened.has_value());
    EXPECT_EQ(*opened, nullptr);
}

}  // namespace
}  // namespace calyx::test
