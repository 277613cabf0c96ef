// The connection table: every tracked connection once, shared by all workers.
//
// One rte_hash holds one canonical key per connection, the same for both directions (the two
// endpoints in a fixed order), so a packet in either direction finds its connection with one
// lookup and the table needs a single index slot per connection. The key's position in the
// hash indexes a preallocated array of 64-byte entries: no pointer per key, no allocation
// after start-up. Keys are hashed with a secret chosen at start (dp/keyed_hash.hpp), so
// nobody outside can choose keys that share a bucket.
//
// Concurrency: lookups are lock-free (RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF); inserts and
// deletes from several threads are serialised by the hash itself (MULTI_WRITER_ADD), which
// only new and removed connections pay. An entry's protocol state is updated under its own
// one-byte lock, because the two directions of a connection may arrive on different workers.
// Deleted keys' slots are freed only after an RCU grace period, so a worker that just found a
// key never sees its slot reused under it.
//
// Capacity: the table holds `capacity` keys, one per connection (a masqueraded connection's
// way back in is the NAT allocator's connection map, dp/nat.hpp), of which a 32nd is kept
// free, so that the cuckoo hash keeps room to move keys at full load. A worker
// finding the table full evicts a connection nobody answered (as Linux's early_drop: from the
// new key's own buckets when those are full, else the biggest holder's from a moving window)
// and inserts at once; the evicted key's slot serves again after a grace period, which the
// evicting worker checks without waiting (rte_rcu_qsbr tokens), so evictions are not bound to
// the control plane's tick. Who holds what is counted per instance (dp/limits.hpp).
//
// Endpoints carry a zone (the network the packet entered from), so equal addresses on
// different networks never meet in one connection.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "calyx/net.hpp"
#include "dp/conntrack_state.hpp"
#include "dp/keyed_hash.hpp"
#include "dp/limits.hpp"

struct rte_hash;
struct rte_rcu_qsbr;

namespace calyx::dp {

class NatPortAllocator;
struct NatEndpoint;

struct CtEndpoint {
    uint16_t zone;
    Ipv4Addr ip;
    uint16_t port;  // TCP/UDP port, ICMP echo identifier, 0 for other protocols
};

// Canonical connection key: endpoint 0 sorts before endpoint 1. 20 bytes.
struct CtKey {
    uint16_t zone[2];
    uint32_t ip[2];
    uint16_t port[2];
    uint8_t proto;
    uint8_t pad[3];
};
static_assert(sizeof(CtKey) == 20);

// A connection's key as the table keeps it beside its entry, written when the connection is
// created: the state file's copy (dp/state_file.hpp), from which a later process inserts it
// again, and what nat_in checks a masqueraded connection against. The protocol is the entry's
// (state.proto), and a check over the whole key is in the entry (CtEntry::key_check).
struct CtKeyRecord {
    uint32_t ip[2];
    uint16_t port[2];
    uint16_t zone[2];

    CtKey key(uint8_t proto) const noexcept {
        return {{zone[0], zone[1]}, {ip[0], ip[1]}, {port[0], port[1]}, proto, {}};
    }
    static CtKeyRecord of(const CtKey& k) noexcept {
        return {{k.ip[0], k.ip[1]}, {k.port[0], k.port[1]}, {k.zone[0], k.zone[1]}};
    }
    friend bool operator==(const CtKeyRecord&, const CtKeyRecord&) = default;
};
static_assert(sizeof(CtKeyRecord) == 16);
// Seven bits over a key, never 0: a zeroed entry never matches its record. Three independent
// multiplies folded (state file layout 3); a new connection computes it once.
uint8_t ct_key_check(const CtKey& key) noexcept;
// The check of layout-2 state files: FNV-1a over the key's 20 bytes (20 dependent multiplies,
// ~80 cycles per new connection). Only to restore such a file's connections.
uint8_t ct_key_check_v2(const CtKey& key) noexcept;

struct CtPacketKey {
    CtKey key;
    uint8_t src_side;  // which endpoint of `key` sent this packet
};

// Builds the canonical key of a packet from `src` to `dst`.
CtPacketKey make_ct_key(uint8_t proto, const CtEndpoint& src, const CtEndpoint& dst) noexcept;

struct alignas(64) CtEntry {
    static constexpr uint8_t kLocked = 0x01;
    // The key was deleted and the slot waits for its grace period: a worker whose insert
    // returned this position just before the delete must insert again.
    static constexpr uint8_t kRetired = 0x02;
    // The key holds one of the table's reserved keys (ConnTable::reserve), given back when it
    // is removed.
    static constexpr uint8_t kReserved = 0x04;

    ConnState state;             // dead when state.expires_s == 0
    uint32_t policy_generation;  // the snapshot whose rules last allowed this connection
    uint8_t lock;                // kLocked | kRetired | kReserved; see lock_entry()
    uint8_t orig_side : 1;       // the key endpoint that sent the first packet
    uint8_t key_check : 7;       // ct_key_check() of the key recorded for it (ConnTable::record_key)
    uint16_t account;            // the instance charged (dp/limits.hpp); kNoAccount: none
    uint64_t reserved64;  // the NAT binding (dp/nat.hpp), 0: not translated

    bool dead() const { return state.expires_s == 0; }
    bool locked() const { return (std::atomic_ref<const uint8_t>(lock).load(std::memory_order_relaxed) & kLocked) != 0; }
    bool retired() const { return (std::atomic_ref<const uint8_t>(lock).load(std::memory_order_relaxed) & kRetired) != 0; }
    Direction direction_of(uint8_t src_side) const {
        return src_side == orig_side ? Direction::original : Direction::reply;
    }
    void lock_entry() noexcept {
        std::atomic_ref<uint8_t> l(lock);
        while ((l.fetch_or(kLocked, std::memory_order_acquire) & kLocked) != 0)
            while ((l.load(std::memory_order_relaxed) & kLocked) != 0) __builtin_ia32_pause();
    }
    bool try_lock_entry() noexcept {
        return (std::atomic_ref<uint8_t>(lock).fetch_or(kLocked, std::memory_order_acquire) & kLocked) == 0;
    }
    // Sequentially consistent (on x86 the same locked instruction as a release): the change
    // map's mark after it (ConnTable::unlock) must not be seen before it (dp/live_restore.hpp).
    void unlock_entry() noexcept {
        std::atomic_ref<uint8_t>(lock).fetch_and(static_cast<uint8_t>(~kLocked), std::memory_order_seq_cst);
    }
};
static_assert(sizeof(CtEntry) == 64);

// Whether a connection may be evicted from a full table: nobody answered it (for TCP: the
// handshake has not completed, or a reset closed it), like the connections Linux has not
// marked assured.
bool ct_unanswered(const ConnState& st) noexcept;

// Where a table's entries and key records live: `slots` of each, zeroed, for the table's life
// (the state file, dp/state_file.hpp). Without it the entries are EAL memory and keys are not
// recorded.
struct CtStorage {
    CtEntry* entries = nullptr;
    CtKeyRecord* keys = nullptr;
    uint64_t* changes = nullptr;  // the change map, a bit per slot (optional)
};
using CtStorageFactory = std::function<std::expected<CtStorage, std::string>(size_t slots)>;

// What restoring one entry of a previous process's table came to.
enum class CtRestoreOutcome : uint8_t {
    none,         // nothing to restore: dead or retired
    restored,
    masqueraded,  // restored with its NAT binding and port
    torn,
    expired,
    unowned,
    full,
    nat_refused,
};

// What a restore found in a previous process's table (ConnTable::restore).
struct CtRestoreStats {
    uint32_t connections = 0;  // restored (masqueraded ones included)
    uint32_t masqueraded = 0;  // of which with their NAT binding and port
    uint32_t torn = 0;         // being written when the process stopped, or unreadable: skipped
    uint32_t expired = 0;      // over by now
    uint32_t unowned = 0;      // of an instance no longer configured
    uint32_t full = 0;         // no room in this table (smaller capacity)
    uint32_t nat_refused = 0;  // NAT port outside this uplink's range, or no uplink

    void count(CtRestoreOutcome outcome) noexcept;
};

struct CtRestoreSource {
    const CtEntry* entries = nullptr;
    const CtKeyRecord* keys = nullptr;
    size_t slots = 0;
    // Expiry times were written on a clock of `old_tsc_hz` (0: this process's).
    uint64_t old_tsc_hz = 0;
    uint64_t new_tsc_hz = 0;
    // The check its writer kept in each entry over the entry's key (StateFile::key_check()).
    uint8_t (*key_check)(const CtKey&) noexcept = ct_key_check;
};

class ConnTable {
public:
    // `capacity` keys, a 32nd of them kept for evictions; memory is allocated now (EAL memory
    // on `socket`, or what `storage` gives). `secret` keys the hash: random unless a test
    // fixes it.
    static std::expected<std::unique_ptr<ConnTable>, std::string> create(
        uint32_t capacity, int socket, uint64_t secret = random_secret(), const CtStorageFactory& storage = {});

    // Control plane, before any worker runs, on an empty table: inserts the connections of a
    // previous process's table that can be trusted (see dp/state_file.hpp) and whose account
    // `keep` accepts; their NAT ports are claimed again in the allocator (set_nat() first) and
    // their outside keys derived again. Restored connections carry policy generation 0, so
    // their next packet re-checks them against the rules in force (as after a reload), and
    // keep their protocol state (TCP windows go on being tracked).
    CtRestoreStats restore(const CtRestoreSource& from, uint64_t now_ns,
                           const std::function<bool(uint16_t account)>& keep);
    // The same for the previous table's entry at `position` alone, read once into a copy (its
    // process may still be changing it: dp/live_restore.hpp); where it went goes to `at`
    // (-1: nowhere).
    CtRestoreOutcome restore_position(const CtRestoreSource& from, size_t position, uint64_t now_ns,
                                      const std::function<bool(uint16_t account)>& keep, int32_t& at);
    // Control plane, no worker running: takes back a connection restore_position() put at
    // `at` (its outside key, NAT port and charge with it); its slots are free at once.
    void unrestore(int32_t at);
    ~ConnTable();
    ConnTable(const ConnTable&) = delete;
    ConnTable& operator=(const ConnTable&) = delete;

    // Data path. Positions < 0 are misses.
    // `hashes` (if given) receives each key's hash, for an insert of the same key later in the
    // burst (insert_evicting): a key is hashed once.
    void lookup_bulk(const CtKey** keys, uint32_t n, int32_t* positions, uint32_t* hashes = nullptr) const noexcept;
    int32_t lookup(const CtKey& key) const noexcept;
    // Room for `keys` new keys (one per new connection). When the table is full
    // an unanswered connection is evicted (expired ones first, then those of the instance
    // holding most connections, from a window of the table); false: full and none found.
    // Every reserved key is inserted or given back with unreserve().
    bool reserve(uint32_t keys, uint64_t now_ns) noexcept;
    void unreserve(uint32_t keys) noexcept;
    // Entry lock held, the entry of a key just inserted: it holds one reserved key until the
    // key is removed.
    static void hold_reserved(CtEntry& e) noexcept {
        std::atomic_ref<uint8_t>(e.lock).fetch_or(CtEntry::kReserved, std::memory_order_relaxed);
    }
    // Position of the new (or already present) key, or a negative errno (-ENOSPC: full).
    int32_t insert(const CtKey& key) noexcept { return insert(key, hash_of(key)); }
    int32_t insert(const CtKey& key, uint32_t hash) noexcept;
    // The same for a reserved key on the data path: when the key's buckets are full, an
    // unanswered connection in them is evicted to make room.
    int32_t insert_evicting(const CtKey& key, uint32_t hash, uint64_t now_ns) noexcept;
    CtEntry& entry(int32_t position) noexcept { return entries_[position]; }
    // Entry lock held, the entry dead (about to start a new connection under `key`): records
    // the key beside it, before the connection comes alive.
    void record_key(CtEntry& e, int32_t position, const CtKey& key) noexcept {
        keys_[position] = CtKeyRecord::of(key);
        e.key_check = ct_key_check(key) & 0x7f;
    }
    const CtKeyRecord& key_record(int32_t position) const noexcept { return keys_[position]; }
    // The masqueraded connection an inbound packet belongs to, found by its outside tuple: from
    // (remote, remote_port) to (external, external_port), IP protocol `proto` (ICMP echo: the
    // identifier as external_port). Three steps, so that a burst can prefetch between them:
    // outside_slot() starts loading the tuple's slot of the NAT allocator's connection map
    // (NatPortAllocator::kNoSlot: none), outside_candidate() reads the NAT allocator's connection map (-1: nothing bound),
    // outside_connection() checks the candidate against the tuple (the map's pools are shared)
    // and gives the instance's endpoint to translate to. Lock-free: any worker, without the
    // entry's lock.
    size_t outside_slot(uint8_t proto, Ipv4Addr remote, uint16_t remote_port,
                        uint16_t external_port) const noexcept;
    int32_t outside_candidate(size_t slot) const noexcept;
    int32_t outside_candidate(uint8_t proto, Ipv4Addr remote, uint16_t remote_port,
                              uint16_t external_port) const noexcept {
        return outside_candidate(outside_slot(proto, remote, remote_port, external_port));
    }
    bool outside_connection(int32_t candidate, uint8_t proto, Ipv4Addr remote, uint16_t remote_port,
                            Ipv4Addr external, uint16_t external_port, NatEndpoint& inside) const noexcept;
    // Releases the lock of the entry at `position`, then marks it changed in the change map
    // (with a state file), so that a successor restoring the table while this process runs
    // reads it again. Every writer of an entry unlocks it this way.
    void unlock(int32_t position) noexcept {
        entries_[position].unlock_entry();
        note_changed(position);
    }
    void note_changed(int32_t position) noexcept {
        if (!changes_) return;
        std::atomic_ref<uint64_t> word(changes_[static_cast<uint32_t>(position) / 64]);
        const uint64_t bit = uint64_t{1} << (static_cast<uint32_t>(position) % 64);
        // Read first: a set bit stays set (no write, the line stays shared). seq_cst: after the
        // unlock (see CtEntry::unlock_entry), a plain load on x86.
        if ((word.load(std::memory_order_seq_cst) & bit) == 0) word.fetch_or(bit, std::memory_order_seq_cst);
    }
    // Starts loading an entry into the cache (for a burst, before its first entry is read).
    void prefetch(int32_t position) const noexcept { __builtin_prefetch(&entries_[position], 1, 3); }
    void prefetch_key_record(int32_t position) const noexcept { __builtin_prefetch(&keys_[position], 0, 3); }
    // The same for a new connection's entry and key record, about to be written.
    void prefetch_for_write(int32_t position) const noexcept {
        prefetch(position);
        __builtin_prefetch(&keys_[position], 1, 3);
    }
    const CtEntry& entry(int32_t position) const noexcept { return entries_[position]; }

    // The masquerade port allocator, if connections may be translated: removing a translated
    // connection then also gives its port back, which unbinds it (dp/nat.hpp). Control plane,
    // before any worker runs.
    void set_nat(NatPortAllocator* nat) { nat_ = nat; }
    // The workers' RCU state, which evicted slots wait on (none: no concurrent readers, as
    // in tests). Control plane, before any worker runs.
    void set_grace(rte_rcu_qsbr* grace) { grace_ = grace; }
    // Who holds how many connections; removing a connection gives its charge back.
    InstanceAccounts& accounts() noexcept { return accounts_; }
    const InstanceAccounts& accounts() const noexcept { return accounts_; }

    // Control plane: deletes the expired connections among the next `budget` positions
    // (round robin over the table), waits one grace period on `grace`, then frees their
    // slots, and notes which instance holds most (evictions prefer its connections). Returns
    // how many it removed (evictions are counted by evicted()). Never pauses workers.
    uint32_t sweep(uint64_t now_ns, uint32_t budget, rte_rcu_qsbr* grace);
    // Removes every connection for which `cut` returns true (e.g. after a reload), the same
    // way as sweep.
    template <typename Pred>
    uint32_t remove_if(Pred cut, rte_rcu_qsbr* grace);

    // Keys in the table's slots (a few evicted ones among them until their slots are reused).
    uint32_t size() const;
    // Keys counted against the capacity: those of connections the data path created.
    uint32_t reserved() const { return reserved_.load(std::memory_order_relaxed); }
    // Keys admitted before the table counts as full (the eviction reserve excluded).
    uint32_t capacity() const { return capacity_; }
    // rte_hash's geometry (buckets of 8 keys; a key may live in two), for tests that build
    // bucket collisions.
    uint32_t buckets() const { return buckets_; }
    uint32_t slots() const { return static_cast<uint32_t>(slot_count_); }
    // Connections evicted from a full table since start.
    uint64_t evicted() const { return evicted_.load(std::memory_order_relaxed); }
    // Bytes taken by the index (rte_hash: key store, buckets, free-slot ring, lcore caches, as
    // EAL's heap counted them), the entries and the key records (wherever they live).
    size_t memory_bytes() const { return memory_bytes_; }
    // The keyed hash of a key (which bucket it goes to): tests.
    uint32_t hash_of(const CtKey& key) const noexcept;
    bool key_at(int32_t position, CtKey& key) const;

private:
    ConnTable() = default;
    // Entry lock held. Deletes the key, marks the entry dead and retired, and gives back its
    // charge and NAT port. False: the key was already gone. The caller frees the position after
    // a grace period.
    bool remove_locked(int32_t position);
    void retire(CtEntry& e) noexcept;
    // Eviction (see reserve()): the best candidate among some of the hash's bucket slots,
    // then its removal by the data path.
    struct Victim {
        int32_t position = -1;
        uint64_t rank = 0;  // UINT64_MAX: expired; else 1 + its instance's connections
        uint16_t account = kNoAccount;
    };
    void consider_slots(uint32_t first, uint32_t count, uint64_t now_ns, Victim& v) const noexcept;
    bool evict_one(uint64_t now_ns) noexcept;
    bool evict(const Victim& v, uint64_t now_ns) noexcept;
    // Resets a slot's entry and gives the slot back to the hash (its grace period passed).
    void free_slot(int32_t pos) noexcept;
    // restore() for one entry; false: skipped (counted in `stats`).
    CtRestoreOutcome restore_one(const CtEntry& old, const CtKey& key, uint64_t expires_s, uint64_t now_ns,
                                 int32_t& at) noexcept;

    // Positions one lcore evicted, with the grace token each waits for; only that lcore
    // touches its queue.
    static constexpr uint32_t kReclaimQueue = 128;
    struct alignas(64) LcoreReclaim {
        struct Item {
            uint64_t token;
            int32_t position;
        };
        std::array<Item, kReclaimQueue> items;
        uint32_t head = 0, tail = 0;
    };
    void free_after_grace(std::vector<int32_t>& positions, rte_rcu_qsbr* grace);

    rte_hash* hash_ = nullptr;
    const MultilinearHash<sizeof(CtKey) / 4>* hash_fn_ = nullptr;  // this table's keyed hash
    uint32_t hash_slot_ = 0;
    CtEntry* entries_ = nullptr;
    CtKeyRecord* keys_ = nullptr;
    bool own_entries_ = true;      // entries_ and keys_ are EAL memory (no state file)
    uint64_t* changes_ = nullptr;  // with a state file: its change map
    size_t slot_count_ = 0;
    uint32_t capacity_ = 0;
    uint32_t buckets_ = 0;
    alignas(64) std::atomic<uint32_t> reserved_{0};  // keys present or about to be inserted
    std::atomic<uint32_t> evict_cursor_{0};
    std::atomic<uint16_t> biggest_holder_{kNoAccount};  // the account holding most, at the last sweep
    std::atomic<uint64_t> evicted_{0};
    std::unique_ptr<LcoreReclaim[]> reclaim_;  // by lcore id
    rte_rcu_qsbr* grace_ = nullptr;
    uint32_t sweep_cursor_ = 0;
    size_t memory_bytes_ = 0;
    NatPortAllocator* nat_ = nullptr;
    InstanceAccounts accounts_;
};

template <typename Pred>
uint32_t ConnTable::remove_if(Pred cut, rte_rcu_qsbr* grace) {
    std::vector<int32_t> removed;
    uint32_t connections = 0;
    for (size_t pos = 0; pos < slot_count_; ++pos) {
        CtEntry& e = entries_[pos];
        if (e.dead()) continue;
        e.lock_entry();
        if (!e.dead() && cut(static_cast<int32_t>(pos), e) && remove_locked(static_cast<int32_t>(pos))) {
            removed.push_back(static_cast<int32_t>(pos));
            ++connections;
        }
        unlock(static_cast<int32_t>(pos));
    }
    free_after_grace(removed, grace);
    return connections;
}

}  // namespace calyx::dp
