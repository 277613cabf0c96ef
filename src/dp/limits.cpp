#include "dp/limits.hpp"

#include <algorithm>

namespace calyx::dp {
namespace {

constexpr uint64_t kSecondNs = 1'000'000'000;

}  // namespace

bool InstanceAccounts::take_opening(uint16_t account, uint32_t per_second, uint64_t now_ns) noexcept {
    // GCRA: each opening moves the "full again" time one interval further; an opening that
    // would put it more than one second (the bucket's depth) after now finds no token.
    const uint64_t interval = kSecondNs / std::max<uint32_t>(per_second, 1);
    std::atomic<uint64_t>& full_at = accounts_[account].bucket_full_at_ns;
    uint64_t seen = full_at.load(std::memory_order_relaxed);
    for (;;) {
        const uint64_t next = std::max(seen, now_ns) + interval;
        if (next - now_ns > kSecondNs) return false;
        if (full_at.compare_exchange_weak(seen, next, std::memory_order_relaxed)) return true;
    }
}

bool InstanceAccounts::charge_connection(uint16_t account, uint32_t limit) noexcept {
    std::atomic<uint32_t>& held = accounts_[account].connections;
    // Taken first, given back if over: the count is above the limit only for the moment of a
    // give-back (during which a concurrent charge may be refused one early), never for good.
    if (held.fetch_add(1, std::memory_order_relaxed) < limit) return true;
    held.fetch_sub(1, std::memory_order_relaxed);
    return false;
}

void InstanceAccounts::release_connection(uint16_t account) noexcept {
    accounts_[account].connections.fetch_sub(1, std::memory_order_relaxed);
}

uint32_t InstanceAccounts::connections(uint16_t account) const noexcept {
    return accounts_[account].connections.load(std::memory_order_relaxed);
}

uint16_t InstanceAccounts::biggest_holder() const noexcept {
    uint16_t biggest = kNoAccount;
    uint32_t most = 0;
    for (uint16_t a = 0; a < kMaxAccounts; ++a)
        if (const uint32_t n = connections(a); n > most) {
            most = n;
            biggest = a;
        }
    return biggest;
}

void InstanceAccounts::reset_bucket(uint16_t account) noexcept {
    accounts_[account].bucket_full_at_ns.store(0, std::memory_order_relaxed);
}

}  // namespace calyx::dp
