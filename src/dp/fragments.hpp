// The verdicts of first fragments, so later fragments of the same datagram follow them.
//
// Only the first fragment carries the L4 header that the rules and connection tracking need.
// When it passes, its datagram (zone, source, destination, protocol, IP id) is remembered
// here; later fragments pass only if their datagram is remembered and not expired. A
// datagram's fragments all come from one port, hence one worker: each worker has its own
// table and no locking. Direct-mapped and fixed-size: a newer datagram may evict an older
// one's slot, whose remaining fragments are then dropped (as fragment_unmatched).
#pragma once

#include <array>
#include <cstdint>

namespace calyx::dp {

struct FragmentKey {
    uint32_t src;
    uint32_t dst;
    uint16_t id;
    uint16_t zone;
    uint8_t proto;
};

class FragmentVerdicts {
public:
    static constexpr size_t kSlots = 4096;

    // `nat_addr`: the address the datagram's first fragment was translated to (0: not
    // translated); later fragments get the same. `generation`: the snapshot that let the first
    // fragment pass; later fragments pass only under the same one.
    void remember(const FragmentKey& k, uint64_t expires_ns, uint32_t nat_addr = 0,
                  uint32_t generation = 0) noexcept {
        Slot& s = slots_[slot_of(k)];
        s.key = k;
        s.expires_ns = expires_ns;
        s.nat_addr = nat_addr;
        s.generation = generation;
    }
    bool allowed(const FragmentKey& k, uint64_t now_ns, uint32_t* nat_addr = nullptr,
                 uint32_t generation = 0) const noexcept {
        const Slot& s = slots_[slot_of(k)];
        const bool ok = s.expires_ns > now_ns && s.generation == generation && s.key.src == k.src &&
                        s.key.dst == k.dst && s.key.id == k.id && s.key.zone == k.zone &&
                        s.key.proto == k.proto;
        if (ok && nat_addr) *nat_addr = s.nat_addr;
        return ok;
    }

private:
    struct Slot {
        FragmentKey key{};
        uint64_t expires_ns = 0;  // 0: empty
        uint32_t nat_addr = 0;
        uint32_t generation = 0;
    };
    static size_t slot_of(const FragmentKey& k) {
        uint64_t h = (uint64_t{k.src} * 0x9e3779b97f4a7c15ull) ^ (uint64_t{k.dst} << 16) ^
                     (uint64_t{k.id} << 3) ^ (uint64_t{k.zone} << 40) ^ k.proto;
        h ^= h >> 29;
        h *= 0xbf58476d1ce4e5b9ull;
        h ^= h >> 32;
        return h % kSlots;
    }
    std::array<Slot, kSlots> slots_{};
};

}  // namespace calyx::dp
