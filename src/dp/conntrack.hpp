// The connection table: every tracked connection once, shared by all workers.
//
// One rte_hash holds one canonical key per connection, the same for both directions (the two
// endpoints in a fixed order), so a packet in either direction finds its connection with one
// lookup and the table needs a single index slot per connection. The key's position in the
// hash indexes a preallocated array of 64-byte entries: no pointer per key, no allocation
// after start-up.
//
// Concurrency: lookups are lock-free (RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF); inserts from
// several workers are serialised by the hash itself (MULTI_WRITER_ADD), which only new
// connections pay. An entry's protocol state is updated under its own one-byte lock, because
// the two directions of a connection may arrive on different workers. Deleted keys' slots are
// freed only after an RCU grace period, so a worker that just found a key never sees its slot
// reused under it.
//
// Endpoints carry a zone (the network the packet entered from), so equal addresses on
// different networks never meet in one connection.
#pragma once

#include <atomic>
#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <vector>

#include "calyx/net.hpp"
#include "dp/conntrack_state.hpp"

struct rte_hash;
struct rte_rcu_qsbr;

namespace calyx::dp {

class NatPortAllocator;

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

struct CtPacketKey {
    CtKey key;
    uint8_t src_side;  // which endpoint of `key` sent this packet
};

// Builds the canonical key of a packet from `src` to `dst`.
CtPacketKey make_ct_key(uint8_t proto, const CtEndpoint& src, const CtEndpoint& dst) noexcept;

struct alignas(64) CtEntry {
    ConnState state;             // dead when state.expires_s == 0
    uint32_t policy_generation;  // the snapshot whose rules last allowed this connection
    uint8_t lock;                // see lock()/unlock()
    uint8_t orig_side;           // the key endpoint that sent the first packet
    uint16_t reserved16;
    uint64_t reserved64;  // the NAT binding (dp/nat.hpp), 0: not translated

    bool dead() const { return state.expires_s == 0; }
    Direction direction_of(uint8_t src_side) const {
        return src_side == orig_side ? Direction::original : Direction::reply;
    }
    void lock_entry() noexcept {
        std::atomic_ref<uint8_t> l(lock);
        while (l.exchange(1, std::memory_order_acquire) != 0)
            while (l.load(std::memory_order_relaxed) != 0) __builtin_ia32_pause();
    }
    void unlock_entry() noexcept { std::atomic_ref<uint8_t>(lock).store(0, std::memory_order_release); }
};
static_assert(sizeof(CtEntry) == 64);

class ConnTable {
public:
    // `capacity` connections; memory is allocated now (EAL memory on `socket`).
    static std::expected<std::unique_ptr<ConnTable>, std::string> create(uint32_t capacity,
                                                                          int socket);
    ~ConnTable();
    ConnTable(const ConnTable&) = delete;
    ConnTable& operator=(const ConnTable&) = delete;

    // Data path. Positions < 0 are misses.
    void lookup_bulk(const CtKey** keys, uint32_t n, int32_t* positions) const noexcept;
    int32_t lookup(const CtKey& key) const noexcept;
    // Position of the new (or already present) key, or a negative errno (-ENOSPC: full).
    int32_t insert(const CtKey& key) noexcept;
    CtEntry& entry(int32_t position) noexcept { return entries_[position]; }
    // Starts loading an entry into the cache (for a burst, before its first entry is read).
    void prefetch(int32_t position) const noexcept { __builtin_prefetch(&entries_[position], 1, 3); }
    const CtEntry& entry(int32_t position) const noexcept { return entries_[position]; }

    // The masquerade port allocator, if connections may be translated: removing a translated
    // connection then also removes its outside (alias) key and gives its port back
    // (dp/nat.hpp). Control plane, before any worker runs.
    void set_nat(NatPortAllocator* nat) { nat_ = nat; }

    // Control plane: deletes the expired connections among the next `budget` positions
    // (round robin over the table), waits one grace period on `grace`, then frees their
    // slots. Returns how many it removed. Never pauses workers.
    uint32_t sweep(uint64_t now_ns, uint32_t budget, rte_rcu_qsbr* grace);
    // Removes every connection for which `cut` returns true (e.g. after a reload), the same
    // way as sweep. NAT alias entries are never offered to `cut`: they go with their primary.
    template <typename Pred>
    uint32_t remove_if(Pred cut, rte_rcu_qsbr* grace);

    uint32_t size() const;
    uint32_t capacity() const { return capacity_; }
    uint32_t slots() const { return static_cast<uint32_t>(slot_count_); }
    // Bytes of EAL memory taken by the index and the entries.
    size_t memory_bytes() const { return memory_bytes_; }
    bool key_at(int32_t position, CtKey& key) const;

private:
    ConnTable() = default;
    // Entry lock held. Deletes the key (and a translated connection's alias key, whose
    // position is appended to `removed` too) and marks the entry dead.
    bool remove_locked(int32_t position, std::vector<int32_t>& removed);
    bool is_nat_alias(const CtEntry& e) const;
    void free_after_grace(std::vector<int32_t>& positions, rte_rcu_qsbr* grace);

    rte_hash* hash_ = nullptr;
    CtEntry* entries_ = nullptr;
    size_t slot_count_ = 0;
    uint32_t capacity_ = 0;
    uint32_t sweep_cursor_ = 0;
    size_t memory_bytes_ = 0;
    NatPortAllocator* nat_ = nullptr;
};

template <typename Pred>
uint32_t ConnTable::remove_if(Pred cut, rte_rcu_qsbr* grace) {
    std::vector<int32_t> removed;
    uint32_t connections = 0;
    for (size_t pos = 0; pos < slot_count_; ++pos) {
        CtEntry& e = entries_[pos];
        if (e.dead() || is_nat_alias(e)) continue;
        e.lock_entry();
        const bool remove = !e.dead() && !is_nat_alias(e) && cut(static_cast<int32_t>(pos), e);
        if (remove && remove_locked(static_cast<int32_t>(pos), removed)) ++connections;
        e.unlock_entry();
    }
    free_after_grace(removed, grace);
    return connections;
}

}  // namespace calyx::dp
