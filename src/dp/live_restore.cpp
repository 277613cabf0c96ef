#include "dp/live_restore.hpp"

#include <algorithm>
#include <atomic>
#include <bit>

namespace calyx::dp {
namespace {

// Read again at the next catch-up even if nothing marks the slot: no room or NAT port yet, or
// locked while read (a reader such as `calyxctl conntrack` locks without changing the entry,
// so no mark follows its unlock).
bool retried(CtRestoreOutcome outcome) {
    return outcome == CtRestoreOutcome::full || outcome == CtRestoreOutcome::nat_refused ||
           outcome == CtRestoreOutcome::torn;
}

}  // namespace

LiveRestore::LiveRestore(ConnTable& table, const CtRestoreSource& from, uint64_t* changes)
    : table_(table),
      from_(from),
      changes_(changes),
      words_((from.slots + 63) / 64),
      at_(from.slots, -1),
      outcome_(from.slots, CtRestoreOutcome::none) {}

void LiveRestore::restore_all(uint64_t now_ns, const Keep& keep) {
    for (size_t w = 0; w < words_; ++w) std::atomic_ref<uint64_t>(changes_[w]).store(0, std::memory_order_seq_cst);
    for (size_t pos = 0; pos < from_.slots; ++pos) {
        outcome_[pos] = table_.restore_position(from_, pos, now_ns, keep, at_[pos]);
        if (retried(outcome_[pos])) retry_.push_back(static_cast<uint32_t>(pos));
    }
}

size_t LiveRestore::catch_up(uint64_t now_ns, const Keep& keep) {
    std::vector<uint32_t> changed;
    for (size_t w = 0; w < words_; ++w) {
        std::atomic_ref<uint64_t> word(changes_[w]);
        // Only words with a bit set are written: the running process's workers read the others.
        uint64_t bits = word.load(std::memory_order_seq_cst) != 0 ? word.exchange(0, std::memory_order_seq_cst) : 0;
        if (all_changed_) bits = ~uint64_t{0};
        for (; bits != 0; bits &= bits - 1) {
            const size_t pos = w * 64 + static_cast<size_t>(std::countr_zero(bits));
            if (pos < from_.slots) changed.push_back(static_cast<uint32_t>(pos));
        }
    }
    all_changed_ = false;
    const size_t read_again = changed.size();
    // Take-backs first, then restores (see the header).
    for (const uint32_t pos : changed)
        if (at_[pos] >= 0) {
            table_.unrestore(at_[pos]);
            at_[pos] = -1;
        }
    changed.insert(changed.end(), retry_.begin(), retry_.end());
    retry_.clear();
    std::ranges::sort(changed);
    const auto [first, last] = std::ranges::unique(changed);  // a retried slot may also have changed
    changed.erase(first, last);
    for (const uint32_t pos : changed) {
        outcome_[pos] = table_.restore_position(from_, pos, now_ns, keep, at_[pos]);
        if (retried(outcome_[pos])) retry_.push_back(pos);
    }
    return read_again;
}

void LiveRestore::retry_unowned() {
    for (size_t pos = 0; pos < outcome_.size(); ++pos)
        if (outcome_[pos] == CtRestoreOutcome::unowned) retry_.push_back(static_cast<uint32_t>(pos));
}

CtRestoreStats LiveRestore::stats() const {
    CtRestoreStats stats;
    for (const CtRestoreOutcome o : outcome_) stats.count(o);
    return stats;
}

}  // namespace calyx::dp
