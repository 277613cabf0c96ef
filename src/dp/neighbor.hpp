// The uplink's ARP cache: MAC addresses of the on-link hosts calyx sends to (the upstream
// gateway above all). Shared by every worker and the control plane; outlives snapshots.
//
// Who does what:
//   workers        lookup() per packet leaving by the uplink; want() on a miss (the packet is
//                  dropped, counted as uplink_neighbor_unresolved: calyx does not queue);
//                  learn() from every ARP request or reply received on the uplink.
//   control plane  pin() the gateway (always resolved, refreshed, never removed); every tick,
//                  due_requests() says which addresses to send an ARP request for, and ages
//                  entries out.
// Lifetimes follow Linux's neighbour defaults: an entry is reachable for 30 s after an ARP
// from its host, then stale (still used) until a refresh confirms it; three requests one
// second apart without an answer make it failed (no MAC; packets are dropped until it is
// wanted again, at most one new attempt per 5 s). Unpinned entries nobody wanted for 60 s are
// removed.
//
// Changes are verified (ARP poisoning): an ARP that gives a resolved entry (reachable or stale)
// another MAC is not believed at once. The claimed MAC is held aside and the known MAC is
// probed by unicast, kMaxRequests times kRetryNs apart; if it answers, it stays and the claim
// is forgotten; if it stays silent, the claim was a real move (a VRRP/keepalived failover
// announced by gratuitous ARP) and is adopted, about 3 s after the announcement. Packets keep
// going to the known MAC meanwhile. The first answer for an unresolved entry is believed.
//
// Concurrency, without locks: an entry is a key word (the IPv4 address, claimed by CAS from
// 0) and one 64-bit data word holding the MAC and the state, so a reader never sees a MAC of
// another state; readers re-check the key after reading the data. Only the control plane
// frees keys, and only after a grace period (see release_retired). Timestamps are relaxed atomics: they steer retries, never correctness.
// Time is injected (ns), so tests are deterministic.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "calyx/net.hpp"

namespace calyx::dp {

enum class NeighborState : uint8_t {
    empty = 0,
    incomplete = 1,  // wanted, no MAC yet: requests are being sent
    reachable = 2,   // confirmed by an ARP from the host less than kReachableNs ago
    stale = 3,       // MAC still used, being refreshed
    failed = 4,      // no answer to kMaxRequests requests
};
const char* to_string(NeighborState s) noexcept;

struct NeighborEntryView {
    Ipv4Addr ip;
    NeighborState state = NeighborState::empty;
    std::optional<MacAddr> mac;
    bool pinned = false;
    uint64_t confirmed_ns = 0;  // last ARP from the host, 0: never
    std::optional<MacAddr> claimed;  // another MAC claimed for it, being verified
};

// What learn() did with an ARP.
struct Learned {
    enum Outcome : uint8_t {
        ignored,  // no entry for the address and none to create, or an unusable MAC
        stored,   // the entry now holds the MAC (first answer, or the known MAC confirmed)
        held,     // a different MAC for a resolved entry: held until verified
    };
    Outcome outcome = ignored;
    explicit operator bool() const { return outcome == stored; }
};

class NeighborTable {
public:
    static constexpr uint32_t kCapacity = 256;  // on-link hosts calyx talks to at once
    static constexpr uint32_t kMaxProbe = 16;
    static constexpr uint64_t kReachableNs = 30'000'000'000;
    static constexpr uint64_t kRetryNs = 1'000'000'000;
    static constexpr uint32_t kMaxRequests = 3;
    static constexpr uint64_t kFailedHoldNs = 5'000'000'000;
    static constexpr uint64_t kUnusedNs = 60'000'000'000;

    // Data path. The MAC to send to `ip`, if known (reachable or stale). With `now_ns`, a hit
    // also marks the entry as in use (at most once a second: the cache line stays shared),
    // so a busy neighbour is refreshed rather than forgotten.
    std::optional<MacAddr> lookup(Ipv4Addr ip, uint64_t now_ns = 0) const noexcept {
        MacAddr mac;
        if (!lookup(ip, now_ns, mac)) return std::nullopt;
        return mac;
    }
    // The same, the MAC written into `mac` (false: unknown, `mac` untouched). Per packet: an
    // optional<MacAddr> returned was assembled on the stack byte by byte and reloaded at once
    // with wider loads (store-forwarding stalls, perf annotate of nat-udp).
    bool lookup(Ipv4Addr ip, uint64_t now_ns, MacAddr& mac) const noexcept;
    // A packet needs `ip`: create an incomplete entry if there is none (and room), and mark
    // it wanted so the control plane resolves it.
    void want(Ipv4Addr ip, uint64_t now_ns) noexcept;
    // An ARP from `ip` said it is at `mac`. Updates an existing entry; creates one only if
    // `create` (the ARP asked for one of calyx's addresses: the host is about to talk to us,
    // RFC 826's merge rule). A different MAC for a resolved entry is only held for
    // verification (see above).
    Learned learn(Ipv4Addr ip, MacAddr mac, uint64_t now_ns, bool create) noexcept;

    // Control plane.
    // Keeps `ip` resolved for as long as calyx runs (the gateway); unpins the previous one.
    void pin(Ipv4Addr ip, uint64_t now_ns);
    struct Request {
        Ipv4Addr ip;
        std::optional<MacAddr> unicast_to;  // refresh a known MAC by unicast, as Linux probes
    };
    // Advances every entry's state machine to `now_ns` and returns the ARP requests to send
    // (refreshes, resolutions and the probes that verify a claimed change).
    // Not called while the link is down: requests could not leave.
    std::vector<Request> due_requests(uint64_t now_ns);
    // The link came (back) up: entries that are failed or still resolving start over at once
    // (requests sent while it was down were lost), instead of after the failed hold time.
    void link_up(uint64_t now_ns);
    // Entries due_requests() removed are first retired (no lookup finds them); they become
    // free only here, which the caller runs after an RCU grace period so that no worker is
    // still writing to one it found before.
    size_t retiring() const;
    size_t release_retired();
    std::vector<NeighborEntryView> entries() const;

private:
    struct Entry {
        std::atomic<uint32_t> key{0};   // IPv4 address (host order); 0: free
        std::atomic<uint64_t> data{0};  // mac (48 bits) << 16 | state << 8 | pinned
        std::atomic<uint64_t> confirmed_ns{0};
        mutable std::atomic<uint64_t> wanted_ns{0};
        // Another MAC an ARP claimed for a resolved entry: pack(mac, reachable, false); 0: none.
        // Set by workers, cleared by the known MAC answering (workers) or on adoption.
        std::atomic<uint64_t> claimed{0};
        // Control plane only.
        uint64_t next_request_ns = 0;
        uint32_t requests = 0;
        // Verifying a claim: probes sent to the known MAC, and confirmed_ns when they started
        // (a change of it means the known MAC answered).
        bool verifying = false;
        uint32_t verify_probes = 0;
        uint64_t next_verify_ns = 0;
        uint64_t confirmed_at_verify = 0;
    };
    // The verification of `e`'s claimed MAC: probes to send, or the claim adopted or dropped.
    // Returns whether the entry is being verified (its ordinary state machine waits).
    bool verify_claim(Entry& e, Ipv4Addr ip, uint64_t now_ns, std::vector<Request>& out);
    static uint64_t pack(MacAddr mac, NeighborState s, bool pinned);
    static MacAddr mac_of(uint64_t data) {
        MacAddr mac;
        copy_mac(data, mac);
        return mac;
    }
    static void copy_mac(uint64_t data, MacAddr& mac) noexcept;
    static NeighborState state_of(uint64_t data) { return static_cast<NeighborState>(data >> 8 & 0xff); }
    static bool pinned_of(uint64_t data) { return data & 1; }
    static uint32_t home(Ipv4Addr ip);
    Entry* find(Ipv4Addr ip) noexcept;
    const Entry* find(Ipv4Addr ip) const noexcept;
    Entry* claim(Ipv4Addr ip, NeighborState initial) noexcept;

    std::array<Entry, kCapacity> entries_{};
};

}  // namespace calyx::dp
