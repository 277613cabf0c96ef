// Per-instance limits: what one instance may take of the resources every instance on the host
// shares (configuration `limits:`; doc/architecture.md "Limits and isolation").
//
// A connection is charged to the instance that opened it, or, opened from outside the site,
// to the instance it reaches. Each instance has an *account*: a small number the control
// plane gives it for its whole life (stable across reloads, never shared while connections
// are charged to it). The account holds what every worker must agree on:
//   - the connections charged to it (an atomic count: +1 when a connection is created, -1
//     when the connection table removes it, whoever does);
//   - its new-connection token bucket, as one atomic word (GCRA, the "virtual scheduling"
//     form of a token bucket: the time at which the bucket is full again; a new connection
//     advances it by 1/rate, refused when that would pass now + one second).
// Only new connections touch an account (one cache line per instance, so instances never
// share a line); established packets never do. Several workers may charge one instance at
// once (its queue pairs, or connections to it from the uplink and other instances): every
// update is one atomic read-modify-write, so the counts stay exact without locks.
// NAT ports per instance and remote endpoint are counted by the port allocator (dp/nat.hpp).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "dp/counters.hpp"

namespace calyx::dp {

// Resolved limits of one instance (the `limits:` defaults with its own overrides).
struct InstanceLimits {
    uint32_t connections = 65536;                // tracked connections charged to it
    uint32_t new_connections_per_second = 50000;  // its token bucket's rate; depth one second
    uint32_t nat_ports = 4096;                   // masquerade ports towards one remote endpoint
};

// Accounts are numbered below kMaxAccounts: one per instance port is enough.
inline constexpr uint16_t kMaxAccounts = kMaxPorts;
inline constexpr uint16_t kNoAccount = 0xffff;  // not charged (NAT alias entries)

class InstanceAccounts {
public:
    InstanceAccounts() : accounts_(std::make_unique<Account[]>(kMaxAccounts)) {}

    // A new connection of `account` at `now_ns`, if its bucket has a token: at most
    // `per_second` a second on average, at most one second's worth at once.
    bool take_opening(uint16_t account, uint32_t per_second, uint64_t now_ns) noexcept;
    // One more connection, unless the account already holds `limit`.
    bool charge_connection(uint16_t account, uint32_t limit) noexcept;
    void release_connection(uint16_t account) noexcept;
    uint32_t connections(uint16_t account) const noexcept;
    // The account holding most connections (kNoAccount: none holds any). A scan of every
    // account: control plane.
    uint16_t biggest_holder() const noexcept;

    // Control plane: forget the bucket of an account given to a new instance.
    void reset_bucket(uint16_t account) noexcept;

private:
    struct alignas(64) Account {
        std::atomic<uint32_t> connections{0};
        std::atomic<uint64_t> bucket_full_at_ns{0};  // GCRA's theoretical arrival time
    };
    std::unique_ptr<Account[]> accounts_;
};

}  // namespace calyx::dp
