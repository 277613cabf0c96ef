// The shared connection table: one key per connection found from both directions, zones
// keep networks apart, a full table refuses only new connections, expiry frees slots.
#include <gtest/gtest.h>

#include <unistd.h>
#include <rte_memory.h>

#include <cstddef>
#include <fstream>
#include <vector>

#include "dp/conntrack.hpp"
#include "dp/nat.hpp"

namespace calyx::dp {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;

CtEndpoint ep(uint16_t zone, uint8_t last_octet, uint16_t port) {
    return {zone, Ipv4Addr::from_octets(10, 0, 0, last_octet), port};
}

ConnState udp_state(uint64_t now_ns, uint32_t timeout_s) {
    ConnState s{};
    s.proto = ipproto::kUdp;
    s.expires_s = static_cast<uint32_t>(now_ns / kSecond + timeout_s);
    return s;
}

TEST(ConnTable, BothDirectionsShareOneCanonicalKey) {
    const auto out = make_ct_key(ipproto::kTcp, ep(1, 5, 40000), ep(2, 7, 443));
    const auto back = make_ct_key(ipproto::kTcp, ep(2, 7, 443), ep(1, 5, 40000));
    EXPECT_EQ(std::memcmp(&out.key, &back.key, sizeof(CtKey)), 0);
    EXPECT_NE(out.src_side, back.src_side);
}

TEST(ConnTable, ZonesSeparateEqualAddresses) {
    const auto a = make_ct_key(ipproto::kUdp, ep(1, 5, 1000), ep(1, 7, 53));
    const auto b = make_ct_key(ipproto::kUdp, ep(3, 5, 1000), ep(3, 7, 53));
    EXPECT_NE(std::memcmp(&a.key, &b.key, sizeof(CtKey)), 0);
}

TEST(ConnTable, InsertedConnectionIsFoundFromEitherDirection) {
    auto table = ConnTable::create(1024, SOCKET_ID_ANY);
    ASSERT_TRUE(table.has_value()) << table.error();
    const auto out = make_ct_key(ipproto::kUdp, ep(1, 5, 1000), ep(2, 7, 53));
    const int32_t pos = (*table)->insert(out.key);
    ASSERT_GE(pos, 0);
    CtEntry& e = (*table)->entry(pos);
    e.state = udp_state(0, 30);
    e.orig_side = out.src_side;
    const auto back = make_ct_key(ipproto::kUdp, ep(2, 7, 53), ep(1, 5, 1000));
    EXPECT_EQ((*table)->lookup(back.key), pos);
    EXPECT_EQ(e.direction_of(back.src_side), Direction::reply);
    EXPECT_EQ(e.direction_of(out.src_side), Direction::original);
    EXPECT_LT((*table)->lookup(make_ct_key(ipproto::kTcp, ep(1, 5, 1000), ep(2, 7, 53)).key), 0)
        << "another protocol is another connection";
}

// The entry's key check (CtEntry::key_check) is how a restore tells a key record torn or
// rewritten apart from its entry's: a record that differs from the written key in any one bit
// must change the check, but for the one key in 128 whose seven bits collide. Every bit of the
// key counts, the top bit of each word the check reads the key in as much as any other.
TEST(ConnTable, TheEntrysKeyCheckChangesWithEveryBitOfTheKey) {
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    const auto next = [&] {  // splitmix64: the same keys on every run
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    };
    constexpr int kKeys = 512;
    // The key's bytes before its padding: zones, addresses, ports, protocol.
    for (size_t bit = 0; bit < offsetof(CtKey, pad) * 8; ++bit) {
        int same = 0;
        for (int k = 0; k < kKeys; ++k) {
            const uint64_t r = next(), s = next();
            const CtKey key = make_ct_key(ipproto::kTcp,
                                          {static_cast<uint16_t>(r), Ipv4Addr{static_cast<uint32_t>(r >> 16)},
                                           static_cast<uint16_t>(r >> 48)},
                                          {static_cast<uint16_t>(s), Ipv4Addr{static_cast<uint32_t>(s >> 16)},
                                           static_cast<uint16_t>(s >> 48)})
                                  .key;
            CtKey torn = key;
            reinterpret_cast<uint8_t*>(&torn)[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
            if (ct_key_check(torn) == ct_key_check(key)) ++same;
        }
        EXPECT_LE(same, kKeys / 16) << "a change of the key's bit " << bit << " (byte " << bit / 8 << ") left the check as it was for "
                                    << same << " keys in " << kKeys;
    }
}

// key_at reads a position's key back (calyxctl lists connections by position and skips the
// positions that hold no key).
TEST(ConnTable, KeyAtGivesALivePositionsKeyAndNothingForAFreePosition) {
    auto table = ConnTable::create(1024, SOCKET_ID_ANY);
    ASSERT_TRUE(table.has_value()) << table.error();
    ConnTable& t = **table;
    const auto k = make_ct_key(ipproto::kUdp, ep(1, 5, 1000), ep(2, 7, 53));
    const int32_t pos = t.insert(k.key);
    ASSERT_GE(pos, 0);
    CtKey read{};
    ASSERT_TRUE(t.key_at(pos, read));
    EXPECT_EQ(std::memcmp(&read, &k.key, sizeof(CtKey)), 0);
    const auto free_pos = static_cast<int32_t>((static_cast<uint32_t>(pos) + 1) % t.slots());
    CtKey none{};
    EXPECT_FALSE(t.key_at(free_pos, none));
}

TEST(ConnTable, FullTableRefusesNewConnectionsAndKeepsExistingOnes) {
    auto table = ConnTable::create(256, SOCKET_ID_ANY);
    ASSERT_TRUE(table.has_value());
    std::vector<CtKey> keys;
    int32_t last = 0;
    uint16_t port = 1;
    // rte_hash may hold a little more than asked (free-slot caches); fill until it refuses.
    while ((last = (*table)->insert(make_ct_key(ipproto::kUdp, ep(1, 5, port), ep(2, 7, 53)).key)) >= 0) {
        keys.push_back(make_ct_key(ipproto::kUdp, ep(1, 5, port), ep(2, 7, 53)).key);
        ++port;
        ASSERT_LT(port, 20000);
    }
    EXPECT_EQ(last, -ENOSPC);
    // At least what the table admits (a 32nd below the hash's size: at 100% load a cuckoo
    // hash with random bucket choices may already fail).
    EXPECT_GE(keys.size(), (*table)->capacity());
    for (const auto& k : keys) EXPECT_GE((*table)->lookup(k), 0);
}

TEST(ConnTable, SweepRemovesOnlyExpiredConnectionsAndFreesTheirSlots) {
    auto table = ConnTable::create(512, SOCKET_ID_ANY);
    ASSERT_TRUE(table.has_value());
    ConnTable& t = **table;
    for (uint16_t p = 1; p <= 100; ++p) {
        const int32_t pos = t.insert(make_ct_key(ipproto::kUdp, ep(1, 5, p), ep(2, 7, 53)).key);
        ASSERT_GE(pos, 0);
        t.entry(pos).state = udp_state(0, p <= 40 ? 30 : 120);
    }
    EXPECT_EQ(t.size(), 100u);
    EXPECT_EQ(t.sweep(29 * kSecond, t.slots(), nullptr), 0u);
    EXPECT_EQ(t.sweep(31 * kSecond, t.slots(), nullptr), 40u);
    EXPECT_EQ(t.size(), 60u);
    EXPECT_LT(t.lookup(make_ct_key(ipproto::kUdp, ep(1, 5, 1), ep(2, 7, 53)).key), 0);
    EXPECT_GE(t.lookup(make_ct_key(ipproto::kUdp, ep(1, 5, 41), ep(2, 7, 53)).key), 0);
    // The freed slots are usable again.
    for (uint16_t p = 1000; p < 1040; ++p)
        EXPECT_GE(t.insert(make_ct_key(ipproto::kUdp, ep(1, 5, p), ep(2, 7, 53)).key), 0);
}

TEST(ConnTable, RemoveIfCutsChosenConnections) {
    auto table = ConnTable::create(512, SOCKET_ID_ANY);
    ASSERT_TRUE(table.has_value());
    ConnTable& t = **table;
    for (uint16_t p = 1; p <= 10; ++p) {
        const int32_t pos = t.insert(make_ct_key(ipproto::kUdp, ep(1, 5, p), ep(2, 7, 53)).key);
        t.entry(pos).state = udp_state(0, 30);
    }
    const uint32_t cut = t.remove_if(
        [&](int32_t pos, const CtEntry&) {
            // Zone 1 sorts first, so port[0] is the client port.
            CtKey k;
            return t.key_at(pos, k) && k.port[0] % 2 == 0;
        },
        nullptr);
    EXPECT_EQ(cut, 5u);
    EXPECT_EQ(t.size(), 5u);
}

// The budgets (18): at most 128 bytes per tracked connection and 160 per masqueraded
// one, all in: the index (rte_hash's key store, buckets, free-slot ring and lcore caches, as
// EAL's heap counts them), the 64-byte entries, the key records, and for masquerade the NAT
// allocator (bitmaps, quota counters, the connection map: the way back in, as the process's
// mapped memory grows by them; they are mappings of their own, dp/table_memory.hpp). At the default capacity (2^20 keys), filled with masqueraded connections, which must
// all fit and all be found from outside.
TEST(ConnTable, AMillionMasqueradedConnectionsTakeAtMost160BytesEach) {
    constexpr uint32_t kKeys = 1u << 20;  // conntrack.capacity's default
    auto table = ConnTable::create(kKeys, SOCKET_ID_ANY, 0x5eed);
    ASSERT_TRUE(table.has_value()) << table.error();
    ConnTable& t = **table;
    const auto mapped = [] {  // the process's virtual size (/proc/self/statm's first field)
        size_t pages = 0;
        std::ifstream("/proc/self/statm") >> pages;
        return pages * static_cast<size_t>(::sysconf(_SC_PAGESIZE));
    };
    const size_t mapped_before = mapped();
    auto nat = NatPortAllocator::create({}, NatPortAllocator::kDefaultPartitions, 0x5eed);
    ASSERT_TRUE(nat.has_value()) << nat.error();
    const size_t nat_bytes = mapped() - mapped_before;
    EXPECT_GE(nat_bytes, nat->memory_bytes()) << "the allocator's own count is what it allocates";
    t.set_nat(&*nat);

    const uint32_t connections = t.capacity();
    ASSERT_GE(connections, 1'000'000u);
    const Ipv4Addr external = Ipv4Addr::from_octets(198, 51, 100, 10);
    // Instance i: 10.x.y.z:1024+ in zone 1; remotes: 4096 DNS servers, each its pool's share.
    const auto inside = [](uint32_t i) { return CtEndpoint{1, Ipv4Addr{0x0a000000u + i / 50000}, uint16_t(1024 + i % 50000)}; };
    const auto remote = [](uint32_t i) { return CtEndpoint{0, Ipv4Addr{0xc6120000u + i % 4096}, 53}; };
    std::vector<uint16_t> ports(connections);
    for (uint32_t i = 0; i < connections; ++i) {
        ASSERT_TRUE(t.reserve(1, 0)) << i;
        const CtPacketKey k = make_ct_key(ipproto::kUdp, inside(i), remote(i));
        const int32_t pos = t.insert(k.key);
        ASSERT_GE(pos, 0) << "connection " << i << " did not fit";
        CtEntry& e = t.entry(pos);
        e.lock_entry();
        ConnTable::hold_reserved(e);
        t.record_key(e, pos, k.key);
        e.state = udp_state(0, 30);
        e.orig_side = k.src_side;
        const auto port = nat->allocate(ipproto::kUdp, remote(i).ip, 53, inside(i).port, i);
        ASSERT_TRUE(port.has_value()) << i;
        ports[i] = *port;
        store_nat_binding(e, NatBinding{external, *port, NatRole::primary});
        nat->bind(ipproto::kUdp, remote(i).ip, 53, *port, pos);
        e.unlock_entry();
    }
    EXPECT_FALSE(t.reserve(1, 0)) << "the table admits no more than its capacity";
    // Every connection is found from outside, with its instance's endpoint.
    for (uint32_t i = 0; i < connections; i += 997) {
        NatEndpoint in;
        const int32_t c = t.outside_candidate(ipproto::kUdp, remote(i).ip, 53, ports[i]);
        ASSERT_TRUE(t.outside_connection(c, ipproto::kUdp, remote(i).ip, 53, external, ports[i], in)) << i;
        EXPECT_EQ(in, (NatEndpoint{inside(i).ip, inside(i).port}));
    }

    const double tracked = static_cast<double>(t.memory_bytes()) / connections;
    const double masqueraded = static_cast<double>(t.memory_bytes() + nat_bytes) / connections;
    // The earlier budget (128) counted the index and the entries, before the state file added
    // key records: the same measure here.
    const double index_and_entry =
        static_cast<double>(t.memory_bytes() - size_t{t.slots()} * sizeof(CtKeyRecord)) / connections;
    RecordProperty("bytes_per_connection", std::to_string(tracked));
    RecordProperty("bytes_per_masqueraded_connection", std::to_string(masqueraded));
    std::printf("%u connections in a table of %u keys: %.1f bytes each all in (table %.1f MB; index and entry "
                "%.1f), %.1f masqueraded (NAT allocator %.1f MB)\n",
                connections, kKeys, tracked, t.memory_bytes() / 1e6, index_and_entry, masqueraded, nat_bytes / 1e6);
    EXPECT_LE(index_and_entry, 128.0);
    EXPECT_LE(masqueraded, 160.0);
    // Measured, not assumed: at least the entries and key records themselves.
    EXPECT_GE(tracked, static_cast<double>(sizeof(CtEntry) + sizeof(CtKeyRecord))) << "the measurement saw no allocation";
}

}  // namespace
}  // namespace calyx::dp
