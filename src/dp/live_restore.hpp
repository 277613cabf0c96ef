// A successor's restore of a table whose process still serves (issue 17: the hand-over's gap).
//
// Restoring a million connections takes a few hundred ms; done after the running calyx stopped
// its workers, all of it is time the data plane stands still. Instead the successor restores
// the running process's state file while that process goes on forwarding, and after it stopped
// applies only what changed since. What changed is known from the file's change map
// (dp/state_file.hpp): a bit per slot, set by every writer after it unlocked the entry
// (ConnTable::unlock).
//
//   restore_all()  clears the change map, then restores every entry (each read once, as a
//                  copy, under the rules of ConnTable::restore).
//   catch_up()     takes the bits set since (clearing them); first takes back what those slots
//                  had restored, then restores them as they are now. Called while the old
//                  process runs (to shrink what is left) and once more after it stopped.
//
// Why the result equals a restore of the stopped table (LiveRestoreTest in
// tests/unit/restart_test.cpp races each of these):
// - A write that ended before a slot's bit was cleared is seen by the read that follows the
//   clearing (the writer's unlock and mark, the reader's clearing and lock load are all
//   sequentially consistent). A write that ends after it sets the bit again: the slot is read
//   again at the next catch-up. So once the writers stopped and a last catch-up ran, every
//   slot's last read is its final content, and a copy torn by a concurrent writer never stays.
// - Within a catch-up every take-back comes before any restore: a key or a NAT port that moved
//   from one slot to another is free in the new table before it is taken again, so none is
//   lost or doubled.
// - A slot refused for want of room or of its NAT port (which a stale copy of another slot may
//   have held) is tried again at every catch-up, after the take-backs; so is one found locked,
//   since a reader that only locks it (`calyxctl conntrack`) leaves no mark when it unlocks.
// - Which accounts are kept (`keep`) comes from the names block; if it changed (a reload in
//   the old process), mark_all_changed() has the next catch-up read every slot again. If only
//   more are kept (an instance added), retry_unowned() has it read the slots refused for
//   their account: the others' outcomes stay what they were.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "dp/conntrack.hpp"

namespace calyx::dp {

class LiveRestore {
public:
    using Keep = std::function<bool(uint16_t account)>;
    // `changes`: the previous file's change map, (from.slots + 63) / 64 words, writable.
    LiveRestore(ConnTable& table, const CtRestoreSource& from, uint64_t* changes);

    void restore_all(uint64_t now_ns, const Keep& keep);
    // How many slots it read again.
    size_t catch_up(uint64_t now_ns, const Keep& keep);
    void mark_all_changed() { all_changed_ = true; }
    // `keep` now keeps more accounts, and none fewer (an instance added meanwhile): the next
    // catch-up reads again every slot refused as unowned, and only those.
    void retry_unowned();

    // What the restore came to so far: every slot's latest outcome.
    CtRestoreStats stats() const;

private:
    ConnTable& table_;
    const CtRestoreSource from_;
    uint64_t* const changes_;
    const size_t words_;
    std::vector<int32_t> at_;               // previous slot -> where it was restored, -1: nowhere
    std::vector<CtRestoreOutcome> outcome_;  // previous slot -> its latest outcome
    std::vector<uint32_t> retry_;            // slots refused for room or NAT port, or locked: tried again
    bool all_changed_ = false;
};

}  // namespace calyx::dp
