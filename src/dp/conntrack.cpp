#include "dp/conntrack.hpp"

#include <array>
#include <atomic>
#include <bit>
#include <optional>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <rte_errno.h>
#include <rte_common.h>
#include <rte_hash.h>
#include <rte_malloc.h>
#include <rte_memory.h>
#include <rte_rcu_qsbr.h>
#include <rte_lcore.h>

#include "calyx/headers.hpp"
#include "dp/nat.hpp"

namespace calyx::dp {

CtPacketKey make_ct_key(uint8_t proto, const CtEndpoint& src, const CtEndpoint& dst) noexcept {
    CtPacketKey k{};
    const auto rank = [](const CtEndpoint& e) {
        return (uint64_t{e.zone} << 48) | (uint64_t{e.ip.value} << 16) | e.port;
    };
    const bool src_first = rank(src) <= rank(dst);
    const CtEndpoint& a = src_first ? src : dst;
    const CtEndpoint& b = src_first ? dst : src;
    k.key.zone[0] = a.zone;
    k.key.zone[1] = b.zone;
    k.key.ip[0] = a.ip.value;
    k.key.ip[1] = b.ip.value;
    k.key.port[0] = a.port;
    k.key.port[1] = b.port;
    k.key.proto = proto;
    k.src_side = src_first ? 0 : 1;
    return k;
}

namespace {

// rte_hash compares keys of 16, 32, 48... bytes with vector code and any other length with
// memcmp() through the PLT; a CtKey is 20 bytes. Equality only (0: equal), as rte_hash asks.
int ct_key_equal(const void* a, const void* b, size_t) {
    uint64_t a0, a1, b0, b1;
    uint32_t a2, b2;
    std::memcpy(&a0, a, 8), std::memcpy(&a1, static_cast<const char*>(a) + 8, 8);
    std::memcpy(&a2, static_cast<const char*>(a) + 16, 4);
    std::memcpy(&b0, b, 8), std::memcpy(&b1, static_cast<const char*>(b) + 8, 8);
    std::memcpy(&b2, static_cast<const char*>(b) + 16, 4);
    return ((a0 ^ b0) | (a1 ^ b1) | (a2 ^ b2)) != 0;
}
static_assert(sizeof(CtKey) == 20, "ct_key_equal compares exactly 20 bytes");

// Room kept free for evictions, whose slots wait for a grace period (about 100 ms, the
// sweep's tick) before they serve again: a 32nd of the table, 300 000 evictions a second
// for a million keys. Inside the configured capacity: rte_hash sizes its buckets to a power
// of two, so room beyond a power-of-two capacity would double the bucket array.
uint32_t eviction_reserve(uint32_t capacity) { return std::max<uint32_t>(64, capacity / 32); }

// The entries rte_hash is asked for. It keeps key slots for the lcores' free-slot caches on top
// (rte_hash_max_key_id(): (RTE_MAX_LCORE - 1) x 63 of them, rte_cuckoo_hash.c's
// LCORE_CACHE_SIZE - 1 each) and sizes its free-slot ring to the power of two above the total:
// for a power-of-two capacity that doubles the ring (8 bytes a key instead of 4). Asking for
// that many fewer entries keeps the key store and the ring at the capacity, with the same
// buckets (a power of two above the entries); the table still admits the same connections,
// since the eviction reserve (which keeps the buckets at most 31/32 full) is larger than the
// slots given up from 2^19 keys on.
uint32_t hash_entries(uint32_t capacity) {
    constexpr uint32_t kCacheSlots = (RTE_MAX_LCORE - 1) * (64 - 1) + 1;
    if (!std::has_single_bit(capacity) || eviction_reserve(capacity) < 2 * kCacheSlots) return capacity;
    return capacity - kCacheSlots;
}
// What a worker looks at for an eviction victim: windows of 64 of the hash's bucket slots
// (the keys in them; a full table's buckets are nearly full, while its key positions may be
// sparse: rte_hash reuses freed slots first and keeps thousands in per-lcore caches); a few
// more windows when they hold no candidate.
constexpr uint32_t kEvictWindow = 64;
constexpr uint32_t kBucketEntries = 8;  // RTE_HASH_BUCKET_ENTRIES, private to rte_hash
constexpr uint32_t kEvictWindowsPreferred = 4;
constexpr uint32_t kEvictWindowsMax = 16;

// rte_hash hands its hash function only the key and one 32-bit value, and checks positions
// (rte_hash_get_key_with_position) with that function: the value picks the table's keyed hash
// here. The data path computes the same hash inline and passes it (*_with_hash).
using CtHash = MultilinearHash<sizeof(CtKey) / 4>;
constexpr uint32_t kMaxTables = 64;
std::array<CtHash, kMaxTables> g_table_hash;
std::atomic<uint64_t> g_tables_used{0};  // bit t: g_table_hash[t] belongs to a live table

uint32_t keyed_ct_hash(const void* key, uint32_t, uint32_t table) {
    std::array<uint32_t, sizeof(CtKey) / 4> words;
    std::memcpy(words.data(), key, sizeof(CtKey));
    return g_table_hash[table](words);
}

std::optional<uint32_t> claim_table_hash(uint64_t secret) {
    uint64_t used = g_tables_used.load();
    for (;;) {
        if (~used == 0) return std::nullopt;
        const auto t = static_cast<uint32_t>(std::countr_one(used));
        if (!g_tables_used.compare_exchange_weak(used, used | uint64_t{1} << t)) continue;
        g_table_hash[t] = CtHash(secret);
        return t;
    }
}

}  // namespace

uint8_t ct_key_check(const CtKey& key) noexcept {
    // The key's 20 bytes as two 64-bit words and a 32-bit one (padding is zero in every key
    // make_ct_key and CtKeyRecord::key build), each multiplied by an odd constant, xored and
    // every bit of it folded into seven: the multiplies run in parallel.
    uint64_t a, b;
    uint32_t c;
    std::memcpy(&a, &key, 8);
    std::memcpy(&b, reinterpret_cast<const char*>(&key) + 8, 8);
    std::memcpy(&c, reinterpret_cast<const char*>(&key) + 16, 4);
    uint64_t h = a * 0x9e3779b97f4a7c15ull ^ b * 0xc2b2ae3d27d4eb4full ^ uint64_t{c} * 0x165667b19e3779f9ull;
    h ^= h >> 32;
    h ^= h >> 16;
    h ^= h >> 8;
    // Eight bits to seven, the eighth folded in: bits 7, 15, ..., 63 of the products (the top
    // bit of a word moves only bit 63) count like the others.
    h &= 0xff;
    const auto check = static_cast<uint8_t>((h ^ h >> 7) & 0x7f);
    return check == 0 ? 1 : check;
}

uint8_t ct_key_check_v2(const CtKey& key) noexcept {
    // FNV-1a over the key's bytes, folded to seven bits.
    uint32_t h = 2166136261u;
    const auto* p = reinterpret_cast<const uint8_t*>(&key);
    for (size_t i = 0; i < sizeof(key); ++i) h = (h ^ p[i]) * 16777619u;
    h ^= h >> 16;
    h ^= h >> 8;
    const auto check = static_cast<uint8_t>(h & 0x7f);
    return check == 0 ? 1 : check;
}

bool ct_unanswered(const ConnState& st) noexcept {
    if (st.proto != ipproto::kTcp) return !st.replied();
    switch (st.tcp_state) {
        case TcpCtState::none:
        case TcpCtState::syn_sent:
        case TcpCtState::syn_recv:
        case TcpCtState::syn_sent2:
        case TcpCtState::close: return true;
        default: return false;
    }
}

std::expected<std::unique_ptr<ConnTable>, std::string> ConnTable::create(uint32_t capacity,
                                                                          int socket,
                                                                          uint64_t secret,
                                                                          const CtStorageFactory& storage) {
    static std::atomic<uint32_t> serial{0};
    std::unique_ptr<ConnTable> t(new ConnTable());
    const auto slot = claim_table_hash(secret);
    if (!slot) return std::unexpected(fmt::format("more than {} connection tables", kMaxTables));
    t->hash_slot_ = *slot;
    t->hash_fn_ = &g_table_hash[*slot];
    const uint32_t id = serial++;
    const std::string name = fmt::format("calyx_ct{}", id);
    const uint32_t reserve = eviction_reserve(capacity);
    rte_hash_parameters params{};
    params.name = name.c_str();
    params.entries = hash_entries(capacity);
    params.key_len = sizeof(CtKey);
    params.hash_func = keyed_ct_hash;
    params.hash_func_init_val = t->hash_slot_;
    params.socket_id = socket;
    params.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF | RTE_HASH_EXTRA_FLAGS_MULTI_WRITER_ADD;
    const rte_malloc_socket_stats before = [&] {
        rte_malloc_socket_stats s{};
        rte_malloc_get_socket_stats(socket < 0 ? 0 : socket, &s);
        return s;
    }();
    t->hash_ = rte_hash_create(&params);
    if (!t->hash_)
        return std::unexpected(fmt::format("cannot create the connection table ({} entries): {}",
                                           capacity, rte_strerror(rte_errno)));
    rte_hash_set_cmp_func(t->hash_, ct_key_equal);
    t->capacity_ = capacity - reserve;
    t->buckets_ = rte_align32pow2(params.entries) / kBucketEntries;
    t->slot_count_ = static_cast<size_t>(rte_hash_max_key_id(t->hash_)) + 1;
    if (storage) {
        auto given = storage(t->slot_count_);
        if (!given) return std::unexpected(given.error());
        t->entries_ = given->entries;
        t->keys_ = given->keys;
        t->changes_ = given->changes;
        t->own_entries_ = false;
    } else {
        t->entries_ = static_cast<CtEntry*>(
            rte_zmalloc_socket("calyx_ct_entries", t->slot_count_ * sizeof(CtEntry), 64, socket));
        t->keys_ = static_cast<CtKeyRecord*>(
            rte_zmalloc_socket("calyx_ct_keys", t->slot_count_ * sizeof(CtKeyRecord), 64, socket));
    }
    if (!t->entries_ || !t->keys_)
        return std::unexpected(fmt::format("cannot allocate {} connection entries", t->slot_count_));
    for (size_t pos = 0; pos < t->slot_count_; ++pos) t->entries_[pos].account = kNoAccount;
    t->reclaim_ = std::make_unique<LcoreReclaim[]>(RTE_MAX_LCORE);
    rte_malloc_socket_stats after{};
    rte_malloc_get_socket_stats(socket < 0 ? 0 : socket, &after);
    t->memory_bytes_ = after.heap_allocsz_bytes - before.heap_allocsz_bytes;
    if (storage) t->memory_bytes_ += t->slot_count_ * (sizeof(CtEntry) + sizeof(CtKeyRecord));
    return t;
}

ConnTable::~ConnTable() {
    rte_hash_free(hash_);
    if (own_entries_) {
        rte_free(entries_);
        rte_free(keys_);
    }
    if (hash_fn_) g_tables_used.fetch_and(~(uint64_t{1} << hash_slot_));
}

uint32_t ConnTable::hash_of(const CtKey& key) const noexcept {
    std::array<uint32_t, sizeof(CtKey) / 4> words;
    std::memcpy(words.data(), &key, sizeof(key));
    return (*hash_fn_)(words);
}

void ConnTable::lookup_bulk(const CtKey** keys, uint32_t n, int32_t* positions, uint32_t* hashes_out) const noexcept {
    hash_sig_t own[RTE_HASH_LOOKUP_BULK_MAX];
    hash_sig_t* hashes = hashes_out ? hashes_out : own;
    for (uint32_t i = 0; i < n; ++i) hashes[i] = hash_of(*keys[i]);
    rte_hash_lookup_with_hash_bulk(hash_, reinterpret_cast<const void**>(keys), hashes, n, positions);
}

int32_t ConnTable::lookup(const CtKey& key) const noexcept {
    return rte_hash_lookup_with_hash(hash_, &key, hash_of(key));
}

int32_t ConnTable::insert(const CtKey& key, uint32_t hash) noexcept {
    return rte_hash_add_key_with_hash(hash_, &key, hash);
}

size_t ConnTable::outside_slot(uint8_t proto, Ipv4Addr remote, uint16_t remote_port,
                               uint16_t external_port) const noexcept {
    return nat_ ? nat_->prefetch_slot(proto, remote, remote_port, external_port) : NatPortAllocator::kNoSlot;
}

int32_t ConnTable::outside_candidate(size_t slot) const noexcept {
    if (!nat_) return -1;
    const int32_t pos = nat_->bound_at(slot);
    return pos >= 0 && static_cast<size_t>(pos) < slot_count_ ? pos : -1;
}

bool ConnTable::outside_connection(int32_t candidate, uint8_t proto, Ipv4Addr remote, uint16_t remote_port,
                                   Ipv4Addr external, uint16_t external_port, NatEndpoint& inside) const noexcept {
    if (candidate < 0) return false;
    // The slot's pool is shared by other remote endpoints: the connection must be this one's.
    // A connection's binding is cleared before it is removed, and its key record is written
    // before its port is bound (the slot is not reused within this worker's grace period).
    const CtEntry& e = entries_[candidate];
    const NatBinding b = load_nat_binding(e);
    if (b.role != NatRole::primary || b.port != external_port || b.addr != external) return false;
    // The remote end is the outside one, zone 0 (which sorts first); the entry's orig_side is not
    // read, as a reopening worker may write it under the entry's lock right now.
    const CtKeyRecord& k = keys_[candidate];
    const unsigned outer = k.zone[0] == 0 ? 0 : 1, inner = outer ^ 1u;
    if (k.ip[outer] != remote.value || k.zone[outer] != 0 || k.zone[inner] == 0) return false;
    // ICMP echo keys carry the instance's identifier on both sides; the binding has the external one.
    if (proto != ipproto::kIcmp && k.port[outer] != remote_port) return false;
    inside = {Ipv4Addr{k.ip[inner]}, k.port[inner]};
    return true;
}

bool ConnTable::reserve(uint32_t keys, uint64_t now_ns) noexcept {
    // A few rounds: another worker may take the room an eviction made.
    for (int round = 0; round < 4; ++round) {
        if (reserved_.fetch_add(keys, std::memory_order_relaxed) + keys <= capacity_) return true;
        reserved_.fetch_sub(keys, std::memory_order_relaxed);
        if (!evict_one(now_ns)) return false;
    }
    return false;
}

void ConnTable::unreserve(uint32_t keys) noexcept { reserved_.fetch_sub(keys, std::memory_order_relaxed); }

int32_t ConnTable::insert_evicting(const CtKey& key, uint32_t hash, uint64_t now_ns) noexcept {
    const int32_t pos = insert(key, hash);
    if (pos != -ENOSPC) return pos;
    // The key's two buckets are full and cuckoo moves found no room: make it there, as
    // Linux's early_drop looks where the new entry goes. rte_hash's bucket choice (22.11,
    // rte_cuckoo_hash.c): primary = hash & mask, alternative = (primary ^ (hash >> 16)) & mask.
    const uint32_t mask = buckets_ - 1;
    const uint32_t primary = hash & mask;
    const uint32_t alternative = (primary ^ (hash >> 16)) & mask;
    Victim v;
    consider_slots(primary * kBucketEntries, kBucketEntries, now_ns, v);
    consider_slots(alternative * kBucketEntries, kBucketEntries, now_ns, v);
    if (!evict(v, now_ns)) return pos;
    return insert(key, hash);
}

void ConnTable::consider_slots(uint32_t first, uint32_t count, uint64_t now_ns, Victim& v) const noexcept {
    uint32_t next = first;
    const uint32_t end = first + count;
    const void* key;
    void* data;
    int32_t pos;
    // rte_hash_iterate reads bucket slots with atomic loads and skips empty ones (possibly
    // past `end`, whose keys are not taken): a key deleted meanwhile gives a dead entry,
    // skipped here and checked again under its lock.
    while (next < end && (pos = rte_hash_iterate(hash_, &key, &data, &next)) >= 0 && next <= end) {
        const CtEntry& e = entries_[pos];  // read without its lock: checked again under it
        if (e.dead() || e.account == kNoAccount || e.locked()) continue;  // locked: in use right now
        uint64_t rank = 0;
        if (ct_expired(e.state, now_ns))
            rank = UINT64_MAX;  // already over: the sweep just has not reached it
        else if (ct_unanswered(e.state))
            rank = 1 + uint64_t{accounts_.connections(e.account)};  // the biggest holder first
        if (rank > v.rank) v = {pos, rank, e.account};
    }
}

bool ConnTable::evict_one(uint64_t now_ns) noexcept {
    // The windows move on with every search, so evictions spread over the whole table. The
    // best candidate: an expired connection, else an unanswered one of the instance holding
    // most; a window without one of the biggest holder's (known from the last sweep) is
    // followed by the next, a few at most, more while none is found at all.
    const uint16_t biggest = biggest_holder_.load(std::memory_order_relaxed);
    const uint32_t bucket_slots = buckets_ * kBucketEntries;
    Victim v;
    for (uint32_t window = 0; window < kEvictWindowsMax; ++window) {
        consider_slots(evict_cursor_.fetch_add(kEvictWindow, std::memory_order_relaxed) % bucket_slots,
                       kEvictWindow, now_ns, v);
        if (v.rank == UINT64_MAX || (v.position >= 0 && v.account == biggest)) break;
        if (v.position >= 0 && window + 1 >= kEvictWindowsPreferred) break;
    }
    return evict(v, now_ns);
}

bool ConnTable::evict(const Victim& v, uint64_t now_ns) noexcept {
    if (v.position < 0) return false;
    // An evicted key's slot serves again once every worker has passed a quiescent state (one
    // turn of their loops): this lcore keeps the positions with their grace tokens and frees
    // the ones whose grace has passed whenever it evicts.
    const unsigned lcore = rte_lcore_id();
    if (lcore >= RTE_MAX_LCORE) return false;  // not a worker or the main lcore
    LcoreReclaim& r = reclaim_[lcore];
    while (r.head != r.tail && (!grace_ || rte_rcu_qsbr_check(grace_, r.items[r.head % kReclaimQueue].token, false) == 1))
        free_slot(r.items[r.head++ % kReclaimQueue].position);
    if (r.tail - r.head + 1 > kReclaimQueue) return false;
    CtEntry& e = entries_[v.position];
    if (!e.try_lock_entry()) return false;  // busy: its connection is alive right now
    const bool removed = !e.dead() && e.account != kNoAccount &&
                         (ct_expired(e.state, now_ns) || ct_unanswered(e.state)) && remove_locked(v.position);
    unlock(v.position);
    if (!removed) return false;
    const uint64_t token = grace_ ? rte_rcu_qsbr_start(grace_) : 0;
    r.items[r.tail++ % kReclaimQueue] = {token, v.position};
    evicted_.fetch_add(1, std::memory_order_relaxed);
    return true;
}

void ConnTable::free_slot(int32_t pos) noexcept {
    // Clean for its next key: slots are reused as they are.
    CtEntry& e = entries_[pos];
    e.state = ConnState{};
    e.account = kNoAccount;
    store_nat_binding(e, NatBinding{});
    std::atomic_ref<uint8_t>(e.lock).store(0, std::memory_order_seq_cst);
    note_changed(pos);
    rte_hash_free_key_with_position(hash_, pos);
}

uint32_t ConnTable::size() const { return static_cast<uint32_t>(rte_hash_count(hash_)); }

bool ConnTable::key_at(int32_t position, CtKey& key) const {
    void* stored = nullptr;
    if (rte_hash_get_key_with_position(hash_, position, &stored) != 0) return false;
    std::memcpy(&key, stored, sizeof(key));
    return true;
}

// Marks a deleted key's entry: dead, and its slot waiting for a grace period; gives back
// the reserved key it held.
void ConnTable::retire(CtEntry& e) noexcept {
    e.state = ConnState{};
    const uint8_t was = std::atomic_ref<uint8_t>(e.lock).fetch_or(CtEntry::kRetired, std::memory_order_relaxed);
    if (was & CtEntry::kReserved) reserved_.fetch_sub(1, std::memory_order_relaxed);
}

bool ConnTable::remove_locked(int32_t position) {
    CtKey key;
    CtEntry& e = entries_[position];
    const NatBinding binding = load_nat_binding(e);
    e.state = ConnState{};  // dead: workers that still find the key treat it as a miss
    if (binding.translated()) store_nat_binding(e, NatBinding{});  // and inbound packets miss it
    if (!key_at(position, key) || rte_hash_del_key_with_hash(hash_, &key, hash_of(key)) < 0) return false;
    retire(e);
    if (e.account != kNoAccount) accounts_.release_connection(e.account);
    if (!nat_ || binding.role != NatRole::primary) return true;
    // The key and the binding are gone: no new packet finds the mapping, so the port may serve
    // again (releasing it unbinds it).
    const uint8_t remote = e.orig_side ^ 1;
    nat_->release(key.proto, Ipv4Addr{key.ip[remote]}, key.port[remote], binding.port, e.account);
    return true;
}

void ConnTable::free_after_grace(std::vector<int32_t>& positions, rte_rcu_qsbr* grace) {
    if (positions.empty()) return;
    // A worker may have looked the key up just before it was deleted; once every worker has
    // passed a quiescent state none holds the position any more.
    if (grace) rte_rcu_qsbr_synchronize(grace, RTE_QSBR_THRID_INVALID);
    for (int32_t pos : positions) free_slot(pos);
    positions.clear();
}

uint32_t ConnTable::sweep(uint64_t now_ns, uint32_t budget, rte_rcu_qsbr* grace) {
    std::vector<int32_t> removed;
    uint32_t connections = 0;
    for (uint32_t i = 0; i < budget && i < slot_count_; ++i) {
        const auto pos = static_cast<int32_t>(sweep_cursor_);
        sweep_cursor_ = static_cast<uint32_t>((sweep_cursor_ + 1) % slot_count_);
        CtEntry& e = entries_[pos];
        if (e.dead() || !ct_expired(e.state, now_ns)) continue;
        e.lock_entry();
        if (!e.dead() && ct_expired(e.state, now_ns) && remove_locked(pos)) {
            removed.push_back(pos);
            ++connections;
        }
        unlock(pos);
    }
    biggest_holder_.store(accounts_.biggest_holder(), std::memory_order_relaxed);
    free_after_grace(removed, grace);
    return connections;
}

void CtRestoreStats::count(CtRestoreOutcome outcome) noexcept {
    switch (outcome) {
        case CtRestoreOutcome::none: break;
        case CtRestoreOutcome::restored: ++connections; break;
        case CtRestoreOutcome::masqueraded: ++connections, ++masqueraded; break;
        case CtRestoreOutcome::torn: ++torn; break;
        case CtRestoreOutcome::expired: ++expired; break;
        case CtRestoreOutcome::unowned: ++unowned; break;
        case CtRestoreOutcome::full: ++full; break;
        case CtRestoreOutcome::nat_refused: ++nat_refused; break;
    }
}

CtRestoreStats ConnTable::restore(const CtRestoreSource& from, uint64_t now_ns,
                                  const std::function<bool(uint16_t account)>& keep) {
    CtRestoreStats stats;
    int32_t at;
    for (size_t pos = 0; pos < from.slots; ++pos) stats.count(restore_position(from, pos, now_ns, keep, at));
    return stats;
}

CtRestoreOutcome ConnTable::restore_position(const CtRestoreSource& from, size_t position, uint64_t now_ns,
                                             const std::function<bool(uint16_t account)>& keep, int32_t& at) {
    at = -1;
    const CtEntry& live = from.entries[position];
    // The lock word first, then a copy: a writer that changes the entry after this load marks
    // it in the change map once it is done (ConnTable::unlock), and a live restore reads it
    // again; one that had finished before is seen whole (seq_cst, see CtEntry::unlock_entry).
    const uint8_t lock = std::atomic_ref<const uint8_t>(live.lock).load(std::memory_order_seq_cst);
    if (live.dead()) return CtRestoreOutcome::none;
    CtEntry old;
    CtKeyRecord rec;
    std::memcpy(static_cast<void*>(&old), &live, sizeof(old));
    std::memcpy(static_cast<void*>(&rec), &from.keys[position], sizeof(rec));
    if (old.dead()) return CtRestoreOutcome::none;
    // Locked: a worker was changing it when its process stopped (or is, in a live restore): its
    // bytes may be half old and half new. Retired: already deleted.
    if ((lock | old.lock) & CtEntry::kLocked) return CtRestoreOutcome::torn;
    if ((lock | old.lock) & CtEntry::kRetired) return CtRestoreOutcome::none;
    const CtKey key = rec.key(old.state.proto);
    if (old.key_check != from.key_check(key)) return CtRestoreOutcome::torn;
    if (old.account != kNoAccount && !keep(old.account)) return CtRestoreOutcome::unowned;
    uint64_t expires_s = old.state.expires_s;
    if (from.old_tsc_hz != 0 && from.new_tsc_hz != 0 && from.old_tsc_hz != from.new_tsc_hz)
        expires_s = static_cast<uint64_t>(
            (static_cast<unsigned __int128>(expires_s) * from.old_tsc_hz + from.new_tsc_hz - 1) / from.new_tsc_hz);
    return restore_one(old, key, expires_s, now_ns, at);
}

void ConnTable::unrestore(int32_t at) {
    CtEntry& e = entries_[at];
    e.lock_entry();
    const bool removed = remove_locked(at);
    e.unlock_entry();
    if (removed) free_slot(at);
}

CtRestoreOutcome ConnTable::restore_one(const CtEntry& old, const CtKey& key, uint64_t expires_s, uint64_t now_ns,
                                        int32_t& at) noexcept {
    if (expires_s >= UINT32_MAX || expires_s * 1'000'000'000ull <= now_ns) return CtRestoreOutcome::expired;
    const NatBinding binding = load_nat_binding(old);
    const bool translated = binding.role == NatRole::primary;
    const uint8_t remote = old.orig_side ^ 1;
    const Ipv4Addr remote_ip{key.ip[remote]};
    // The port first: without it the connection has no way back.
    if (translated && (!nat_ || !nat_->claim(key.proto, remote_ip, key.port[remote], binding.port, old.account)))
        return CtRestoreOutcome::nat_refused;
    const auto give_back = [&] {
        if (translated) nat_->release(key.proto, remote_ip, key.port[remote], binding.port, old.account);
        return CtRestoreOutcome::full;
    };
    if (reserved_.load(std::memory_order_relaxed) + 1 > capacity_) return give_back();
    const int32_t pos = insert(key);
    if (pos < 0 || !entries_[pos].dead()) return give_back();  // full, or the key twice (corrupt)
    CtEntry& e = entries_[pos];
    record_key(e, pos, key);
    e.state = old.state;
    e.state.expires_s = static_cast<uint32_t>(expires_s);
    e.orig_side = old.orig_side;
    e.account = old.account;
    e.policy_generation = 0;  // no snapshot has it: the next packet checks the rules again
    store_nat_binding(e, translated ? binding : NatBinding{});
    e.lock = CtEntry::kReserved;
    reserved_.fetch_add(1, std::memory_order_relaxed);
    if (old.account != kNoAccount) accounts_.charge_connection(old.account, UINT32_MAX);
    at = pos;
    if (!translated) return CtRestoreOutcome::restored;
    nat_->bind(key.proto, remote_ip, key.port[remote], binding.port, pos);
    return CtRestoreOutcome::masqueraded;
}

}  // namespace calyx::dp
