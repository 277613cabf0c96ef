// The verdicts of first fragments, so later fragments of the same datagram follow them.
//
// Only the first fragment carries the L4 header that the rules and connection tracking need.
// When it passes, its datagram (zone, source, destination, protocol, IP id) is remembered
// here; later fragments pass only if their datagram is remembered and not expired. A
// datagram's fragments all come from one port, hence one worker: each worker has its own
// table and no locking.
//
// Fixed size, set-associative (kWays slots per set, the set chosen by a keyed hash), and shared
// fairly between sources: every remembered datagram is charged to its source (the instance's
// port; outside the site, a keyed hash of the source address), and a new datagram may take the
// slot of another source only if that source holds at least two more slots than the new one's
// source. A source that sends first fragments by the thousand therefore only recycles its own
// slots; it cannot evict the datagram another instance is in the middle of sending (whose later
// fragments would be dropped as fragment_unmatched). A datagram that finds no slot it may take
// is not remembered: its own later fragments are dropped.
#pragma once

#include <array>
#include <cstdint>

#include "dp/counters.hpp"

namespace calyx::dp {

struct FragmentKey {
    uint32_t src;
    uint32_t dst;
    uint16_t id;
    uint16_t zone;
    uint8_t proto;
    bool operator==(const FragmentKey&) const = default;
};

class FragmentVerdicts {
public:
    static constexpr size_t kSlots = 4096;
    static constexpr size_t kWays = 8;
    static constexpr size_t kOutsideSources = 1024;  // buckets of outside source addresses

    // `secret` keys the set and the outside-source hashes, so neither can be aimed at.
    explicit FragmentVerdicts(uint64_t secret = 0) : secret_(secret) {}

    // Who a datagram is charged to: the instance on `port`, or for datagrams from outside the
    // site (`from_outside`) a bucket of its source address.
    uint16_t source_of(uint16_t port, uint32_t src, bool from_outside) const noexcept {
        if (!from_outside) return port;
        return static_cast<uint16_t>(kMaxPorts + mix(src ^ secret_) % kOutsideSources);
    }

    // `nat_addr`: the address the datagram's first fragment was translated to (0: not
    // translated); later fragments get the same. `generation`: the snapshot that let the first
    // fragment pass; later fragments pass only under the same one. Returns whether it is
    // remembered (false: no slot this source may take).
    bool remember(const FragmentKey& k, uint16_t source, uint64_t now_ns, uint64_t expires_ns,
                  uint32_t nat_addr = 0, uint32_t generation = 0) noexcept {
        Slot* set = set_of(k);
        Slot *same = nullptr, *free = nullptr, *own_oldest = nullptr, *heaviest = nullptr;
        for (size_t w = 0; w < kWays; ++w) {
            Slot& s = set[w];
            if (s.expires_ns <= now_ns) {
                if (!free) free = &s;
            } else if (s.key == k) {
                same = &s;
            } else if (s.source == source) {
                if (!own_oldest || s.expires_ns < own_oldest->expires_ns) own_oldest = &s;
            } else if (!heaviest || held_[s.source] > held_[heaviest->source]) {
                heaviest = &s;
            }
        }
        // The same datagram again; a free or expired slot; the slot of a source holding at
        // least two more than this one (after the swap it still holds no fewer); this
        // source's own oldest datagram.
        Slot* target = same ? same : free;
        if (!target && heaviest && held_[heaviest->source] >= held_[source] + 2) target = heaviest;
        if (!target) target = own_oldest;
        if (!target) return false;
        if (target->expires_ns != 0) --held_[target->source];
        target->key = k;
        target->source = source;
        target->expires_ns = expires_ns;
        target->nat_addr = nat_addr;
        target->generation = generation;
        ++held_[source];
        return true;
    }

    bool allowed(const FragmentKey& k, uint64_t now_ns, uint32_t* nat_addr = nullptr,
                 uint32_t generation = 0) const noexcept {
        const Slot* set = set_of(k);
        for (size_t w = 0; w < kWays; ++w) {
            const Slot& s = set[w];
            if (s.expires_ns > now_ns && s.generation == generation && s.key == k) {
                if (nat_addr) *nat_addr = s.nat_addr;
                return true;
            }
        }
        return false;
    }

    // Slots charged to `source` (expired ones included until they are reused).
    uint32_t held(uint16_t source) const noexcept { return held_[source]; }
    // Which set of kWays slots a datagram goes to: tests that fill one.
    size_t set_index(const FragmentKey& k) const noexcept {
        const uint64_t h = (uint64_t{k.src} * 0x9e3779b97f4a7c15ull) ^ (uint64_t{k.dst} << 16) ^
                           (uint64_t{k.id} << 3) ^ (uint64_t{k.zone} << 40) ^ k.proto ^ secret_;
        return mix(h) % kSets;
    }

private:
    struct Slot {
        FragmentKey key{};
        uint16_t source = 0;
        uint64_t expires_ns = 0;  // 0: empty
        uint32_t nat_addr = 0;
        uint32_t generation = 0;
    };
    static constexpr size_t kSets = kSlots / kWays;
    static uint64_t mix(uint64_t h) {
        h ^= h >> 29;
        h *= 0xbf58476d1ce4e5b9ull;
        h ^= h >> 32;
        return h;
    }
    Slot* set_of(const FragmentKey& k) { return &slots_[set_index(k) * kWays]; }
    const Slot* set_of(const FragmentKey& k) const { return &slots_[set_index(k) * kWays]; }

    uint64_t secret_;
    std::array<Slot, kSlots> slots_{};
    std::array<uint32_t, kMaxPorts + kOutsideSources> held_{};
};

}  // namespace calyx::dp
