#include "dp/neighbor.hpp"

#include <algorithm>
#include <cstring>
#include <utility>

namespace calyx::dp {
namespace {

// A key no neighbour has (the limited broadcast): an entry being removed, waiting for the
// grace period after which no worker still writes to it.
constexpr uint32_t kRetiring = 0xffffffff;

}  // namespace

const char* to_string(NeighborState s) noexcept {
    switch (s) {
        case NeighborState::empty: return "empty";
        case NeighborState::incomplete: return "incomplete";
        case NeighborState::reachable: return "reachable";
        case NeighborState::stale: return "stale";
        case NeighborState::failed: return "failed";
    }
    return "?";
}

uint64_t NeighborTable::pack(MacAddr mac, NeighborState s, bool pinned) {
    uint64_t m = 0;
    for (uint8_t b : mac.bytes) m = m << 8 | b;
    return m << 16 | uint64_t{static_cast<uint8_t>(s)} << 8 | (pinned ? 1 : 0);
}

void NeighborTable::copy_mac(uint64_t data, MacAddr& mac) noexcept {
    // The MAC's first byte is the word's top one: byte-swapped, its six bytes are the word's
    // lowest, copied at once (byte by byte, the copy was reloaded with wider loads right after
    // the byte stores: a store-forwarding stall).
    const uint64_t swapped = __builtin_bswap64(data);
    std::memcpy(mac.bytes.data(), &swapped, mac.bytes.size());
}

uint32_t NeighborTable::home(Ipv4Addr ip) {
    // Fibonacci hashing: on-link hosts differ in their low bits.
    return static_cast<uint32_t>((uint64_t{ip.value} * 0x9e3779b97f4a7c15ull) >> 56) % kCapacity;
}

NeighborTable::Entry* NeighborTable::find(Ipv4Addr ip) noexcept {
    return const_cast<Entry*>(std::as_const(*this).find(ip));
}

const NeighborTable::Entry* NeighborTable::find(Ipv4Addr ip) const noexcept {
    // Freed slots may sit inside a probe sequence, so every probe slot is looked at.
    const uint32_t start = home(ip);
    for (uint32_t i = 0; i < kMaxProbe; ++i) {
        const Entry& e = entries_[(start + i) % kCapacity];
        if (e.key.load(std::memory_order_acquire) == ip.value) return &e;
    }
    return nullptr;
}

NeighborTable::Entry* NeighborTable::claim(Ipv4Addr ip, NeighborState initial) noexcept {
    if (ip.is_zero() || ip.value == kRetiring) return nullptr;
    const uint32_t start = home(ip);
    for (uint32_t i = 0; i < kMaxProbe; ++i) {
        Entry& e = entries_[(start + i) % kCapacity];
        uint32_t expected = 0;
        if (e.key.load(std::memory_order_relaxed) != 0) continue;
        if (!e.key.compare_exchange_strong(expected, ip.value, std::memory_order_acq_rel)) continue;
        // A free entry's data is 0 (empty: readers see no MAC). Set the initial state unless
        // a learn() or pin() that found the key meanwhile already wrote something newer.
        uint64_t empty = 0;
        e.data.compare_exchange_strong(empty, pack({}, initial, false), std::memory_order_release);
        return &e;
    }
    return nullptr;  // full around home: the caller counts the drop
}

bool NeighborTable::lookup(Ipv4Addr ip, uint64_t now_ns, MacAddr& mac) const noexcept {
    const Entry* e = find(ip);
    if (!e) return false;
    const uint64_t d = e->data.load(std::memory_order_acquire);
    if (e->key.load(std::memory_order_acquire) != ip.value) return false;
    const NeighborState s = state_of(d);
    if (s != NeighborState::reachable && s != NeighborState::stale) return false;
    if (now_ns != 0 && now_ns - e->wanted_ns.load(std::memory_order_relaxed) > kRetryNs)
        e->wanted_ns.store(now_ns, std::memory_order_relaxed);
    copy_mac(d, mac);
    return true;
}

void NeighborTable::want(Ipv4Addr ip, uint64_t now_ns) noexcept {
    Entry* e = find(ip);
    if (!e) e = claim(ip, NeighborState::incomplete);
    if (e) e->wanted_ns.store(now_ns, std::memory_order_relaxed);
}

Learned NeighborTable::learn(Ipv4Addr ip, MacAddr mac, uint64_t now_ns, bool create) noexcept {
    if (mac.is_broadcast() || mac.is_multicast() || mac == MacAddr{}) return {};
    Entry* e = find(ip);
    if (!e && create) e = claim(ip, NeighborState::incomplete);
    if (!e) return {};
    uint64_t d = e->data.load(std::memory_order_relaxed);
    bool confirms_known = false;
    // CAS so a concurrent pin or state change by the control plane is not lost.
    for (;;) {
        const NeighborState s = state_of(d);
        const bool resolved = s == NeighborState::reachable || s == NeighborState::stale;
        if (resolved && mac_of(d) != mac) {
            // Anyone on the segment can say so: believed only once the known MAC is silent.
            e->claimed.store(pack(mac, NeighborState::reachable, false), std::memory_order_release);
            return {Learned::held};
        }
        confirms_known = resolved;
        if (e->data.compare_exchange_weak(d, pack(mac, NeighborState::reachable, pinned_of(d)),
                                          std::memory_order_release, std::memory_order_relaxed))
            break;
    }
    e->confirmed_ns.store(now_ns, std::memory_order_relaxed);
    // The known MAC spoke: whatever another MAC claimed meanwhile is refuted.
    if (confirms_known) e->claimed.store(0, std::memory_order_relaxed);
    if (create) e->wanted_ns.store(now_ns, std::memory_order_relaxed);
    return {Learned::stored};
}

void NeighborTable::pin(Ipv4Addr ip, uint64_t now_ns) {
    for (Entry& e : entries_) {
        if (!pinned_of(e.data.load(std::memory_order_relaxed)) || e.key.load() == ip.value) continue;
        e.data.fetch_and(~uint64_t{1});
    }
    Entry* e = find(ip);
    if (!e) e = claim(ip, NeighborState::incomplete);
    if (!e) return;
    e->data.fetch_or(1);
    e->wanted_ns.store(now_ns, std::memory_order_relaxed);
    e->next_request_ns = 0;  // ask now
}

std::vector<NeighborTable::Request> NeighborTable::due_requests(uint64_t now_ns) {
    std::vector<Request> out;
    for (Entry& e : entries_) {
        const uint32_t key = e.key.load(std::memory_order_acquire);
        if (key == 0 || key == kRetiring) continue;
        const Ipv4Addr ip{key};
        uint64_t d = e.data.load(std::memory_order_acquire);
        const bool pinned = pinned_of(d);
        const uint64_t confirmed = e.confirmed_ns.load(std::memory_order_relaxed);
        const uint64_t wanted = e.wanted_ns.load(std::memory_order_relaxed);
        auto set_state = [&](NeighborState s, MacAddr mac) {
            // Lose to a worker's learn() that raced us: its news is fresher.
            return e.data.compare_exchange_strong(d, pack(mac, s, pinned));
        };
        auto retire = [&] { e.key.store(kRetiring, std::memory_order_release); };
        if (!pinned && find(ip) != &e) {  // a duplicate claimed by a concurrent want()
            retire();
            continue;
        }
        if (verify_claim(e, ip, now_ns, out)) continue;
        const bool recently_wanted = pinned || now_ns - wanted < kUnusedNs;
        switch (state_of(d)) {
            case NeighborState::reachable:
                if (now_ns - confirmed < kReachableNs) {
                    e.requests = 0;
                    break;
                }
                if (!set_state(NeighborState::stale, mac_of(d))) break;
                e.requests = 0;
                e.next_request_ns = 0;
                [[fallthrough]];
            case NeighborState::stale:
                if (!recently_wanted) {
                    retire();
                    break;
                }
                if (now_ns < e.next_request_ns) break;
                if (e.requests >= kMaxRequests) {
                    if (set_state(NeighborState::failed, {})) e.next_request_ns = now_ns + kFailedHoldNs;
                    break;
                }
                out.push_back({ip, mac_of(d)});
                ++e.requests;
                e.next_request_ns = now_ns + kRetryNs;
                break;
            case NeighborState::incomplete:
                if (now_ns < e.next_request_ns) break;
                if (e.requests >= kMaxRequests) {
                    if (set_state(NeighborState::failed, {})) e.next_request_ns = now_ns + kFailedHoldNs;
                    break;
                }
                out.push_back({ip, std::nullopt});
                ++e.requests;
                e.next_request_ns = now_ns + kRetryNs;
                break;
            case NeighborState::failed:
                if (now_ns < e.next_request_ns) break;
                if (!recently_wanted) {
                    retire();
                    break;
                }
                // Wanted again after the hold time (the gateway always is): start over.
                if (pinned || wanted + kFailedHoldNs >= e.next_request_ns) {
                    if (!set_state(NeighborState::incomplete, {})) break;
                    out.push_back({ip, std::nullopt});
                    e.requests = 1;
                    e.next_request_ns = now_ns + kRetryNs;
                }
                break;
            case NeighborState::empty: break;
        }
    }
    return out;
}

bool NeighborTable::verify_claim(Entry& e, Ipv4Addr ip, uint64_t now_ns, std::vector<Request>& out) {
    const uint64_t claim = e.claimed.load(std::memory_order_acquire);
    uint64_t d = e.data.load(std::memory_order_acquire);
    const NeighborState s = state_of(d);
    if (claim == 0 || (s != NeighborState::reachable && s != NeighborState::stale)) {
        e.verifying = false;
        return false;
    }
    const uint64_t confirmed = e.confirmed_ns.load(std::memory_order_relaxed);
    // A new claim, or the known MAC answered since this one's probes began and the claim was
    // raised again: every probe is owed anew, still at most one a kRetryNs (a poisoner that
    // repeats itself sets the pace of nothing).
    if (!e.verifying || confirmed != e.confirmed_at_verify) {
        e.verifying = true;
        e.verify_probes = 0;
        e.next_verify_ns = std::max(e.next_verify_ns, now_ns);
        e.confirmed_at_verify = confirmed;
    }
    if (now_ns < e.next_verify_ns) return true;
    if (e.verify_probes < kMaxRequests) {
        out.push_back({ip, mac_of(d)});
        ++e.verify_probes;
        e.next_verify_ns = now_ns + kRetryNs;
        return true;
    }
    // The known MAC stayed silent through every probe: the claim was a real move.
    if (!e.data.compare_exchange_strong(d, pack(mac_of(claim), NeighborState::reachable, pinned_of(d))))
        return true;  // a worker's learn() raced us: look again at the next tick
    uint64_t adopted = claim;
    e.claimed.compare_exchange_strong(adopted, 0);  // a newer claim stays, against the adopted MAC
    e.confirmed_ns.store(now_ns, std::memory_order_relaxed);
    e.requests = 0;
    e.verifying = false;
    return true;
}

void NeighborTable::link_up(uint64_t now_ns) {
    for (Entry& e : entries_) {
        const uint32_t key = e.key.load(std::memory_order_acquire);
        if (key == 0 || key == kRetiring) continue;
        uint64_t d = e.data.load(std::memory_order_acquire);
        const NeighborState s = state_of(d);
        if (s != NeighborState::failed && s != NeighborState::incomplete) continue;
        // Lose to a worker's learn() that raced us: it resolved the entry.
        if (!e.data.compare_exchange_strong(d, pack({}, NeighborState::incomplete, pinned_of(d)))) continue;
        e.requests = 0;
        e.next_request_ns = now_ns;
    }
}

size_t NeighborTable::release_retired() {
    size_t n = 0;
    for (Entry& e : entries_) {
        if (e.key.load(std::memory_order_acquire) != kRetiring) continue;
        e.data.store(0, std::memory_order_relaxed);
        e.claimed.store(0, std::memory_order_relaxed);
        e.verifying = false;
        e.confirmed_ns.store(0, std::memory_order_relaxed);
        e.wanted_ns.store(0, std::memory_order_relaxed);
        e.requests = 0;
        e.next_request_ns = 0;
        e.key.store(0, std::memory_order_release);
        ++n;
    }
    return n;
}

size_t NeighborTable::retiring() const {
    size_t n = 0;
    for (const Entry& e : entries_) n += e.key.load(std::memory_order_relaxed) == kRetiring;
    return n;
}

std::vector<NeighborEntryView> NeighborTable::entries() const {
    std::vector<NeighborEntryView> out;
    for (const Entry& e : entries_) {
        const uint32_t key = e.key.load(std::memory_order_acquire);
        if (key == 0 || key == kRetiring) continue;
        const uint64_t d = e.data.load(std::memory_order_acquire);
        NeighborEntryView v;
        v.ip = Ipv4Addr{key};
        v.state = state_of(d);
        if (v.state == NeighborState::reachable || v.state == NeighborState::stale) v.mac = mac_of(d);
        v.pinned = pinned_of(d);
        v.confirmed_ns = e.confirmed_ns.load(std::memory_order_relaxed);
        if (const uint64_t c = e.claimed.load(std::memory_order_relaxed); c != 0) v.claimed = mac_of(c);
        out.push_back(v);
    }
    return out;
}

}  // namespace calyx::dp
