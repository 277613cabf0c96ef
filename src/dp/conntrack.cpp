#include "dp/conntrack.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>
#include <rte_errno.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_malloc.h>
#include <rte_memory.h>
#include <rte_rcu_qsbr.h>

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

}  // namespace

std::expected<std::unique_ptr<ConnTable>, std::string> ConnTable::create(uint32_t capacity,
                                                                          int socket) {
    static std::atomic<uint32_t> serial{0};
    std::unique_ptr<ConnTable> t(new ConnTable());
    const std::string name = fmt::format("calyx_ct{}", serial++);
    rte_hash_parameters params{};
    params.name = name.c_str();
    params.entries = capacity;
    params.key_len = sizeof(CtKey);
    params.hash_func = rte_hash_crc;
    params.hash_func_init_val = 0;
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
    t->capacity_ = capacity;
    t->slot_count_ = static_cast<size_t>(rte_hash_max_key_id(t->hash_)) + 1;
    t->entries_ = static_cast<CtEntry*>(
        rte_zmalloc_socket("calyx_ct_entries", t->slot_count_ * sizeof(CtEntry), 64, socket));
    if (!t->entries_)
        return std::unexpected(fmt::format("cannot allocate {} connection entries", t->slot_count_));
    rte_malloc_socket_stats after{};
    rte_malloc_get_socket_stats(socket < 0 ? 0 : socket, &after);
    t->memory_bytes_ = after.heap_allocsz_bytes - before.heap_allocsz_bytes;
    return t;
}

ConnTable::~ConnTable() {
    rte_hash_free(hash_);
    rte_free(entries_);
}

void ConnTable::lookup_bulk(const CtKey** keys, uint32_t n, int32_t* positions) const noexcept {
    rte_hash_lookup_bulk(hash_, reinterpret_cast<const void**>(keys), n, positions);
}

int32_t ConnTable::lookup(const CtKey& key) const noexcept { return rte_hash_lookup(hash_, &key); }

int32_t ConnTable::insert(const CtKey& key) noexcept { return rte_hash_add_key(hash_, &key); }

uint32_t ConnTable::size() const { return static_cast<uint32_t>(rte_hash_count(hash_)); }

bool ConnTable::key_at(int32_t position, CtKey& key) const {
    void* stored = nullptr;
    if (rte_hash_get_key_with_position(hash_, position, &stored) != 0) return false;
    std::memcpy(&key, stored, sizeof(key));
    return true;
}

bool ConnTable::is_nat_alias(const CtEntry& e) const {
    return nat_ && load_nat_binding(e).role == NatRole::alias;
}

bool ConnTable::remove_locked(int32_t position, std::vector<int32_t>& removed) {
    CtKey key;
    CtEntry& e = entries_[position];
    const NatBinding binding = load_nat_binding(e);
    e.state = ConnState{};  // dead: workers that still find the key treat it as a miss
    if (!key_at(position, key) || rte_hash_del_key(hash_, &key) < 0) return false;
    removed.push_back(position);
    if (!nat_ || binding.role != NatRole::primary) return true;
    const uint8_t remote = e.orig_side ^ 1;
    const CtPacketKey alias = nat_alias_key(key, remote, binding.endpoint());
    if (const int32_t alias_pos = rte_hash_lookup(hash_, &alias.key); alias_pos >= 0) {
        CtEntry& a = entries_[alias_pos];
        a.lock_entry();
        a.state = ConnState{};
        store_nat_binding(a, NatBinding{});
        a.unlock_entry();
        if (rte_hash_del_key(hash_, &alias.key) >= 0) removed.push_back(alias_pos);
    }
    // Both keys are gone: no new packet can find the mapping, so the port may serve again.
    nat_->release(key.proto, Ipv4Addr{key.ip[remote]}, key.port[remote], binding.port);
    return true;
}

void ConnTable::free_after_grace(std::vector<int32_t>& positions, rte_rcu_qsbr* grace) {
    if (positions.empty()) return;
    // A worker may have looked the key up just before it was deleted; once every worker has
    // passed a quiescent state none holds the position any more.
    if (grace) rte_rcu_qsbr_synchronize(grace, RTE_QSBR_THRID_INVALID);
    for (int32_t pos : positions) rte_hash_free_key_with_position(hash_, pos);
    positions.clear();
}

uint32_t ConnTable::sweep(uint64_t now_ns, uint32_t budget, rte_rcu_qsbr* grace) {
    std::vector<int32_t> removed;
    uint32_t connections = 0;
    for (uint32_t i = 0; i < budget && i < slot_count_; ++i) {
        const auto pos = static_cast<int32_t>(sweep_cursor_);
        sweep_cursor_ = static_cast<uint32_t>((sweep_cursor_ + 1) % slot_count_);
        CtEntry& e = entries_[pos];
        if (e.dead() || !ct_expired(e.state, now_ns)) continue;  // aliases never expire
        e.lock_entry();
        if (!e.dead() && ct_expired(e.state, now_ns) && remove_locked(pos, removed)) ++connections;
        e.unlock_entry();
    }
    free_after_grace(removed, grace);
    return connections;
}

}  // namespace calyx::dp
