// Which receive queues a busy worker polls: the empty ones only now and then.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace calyx::io {

// A host carries many VMs and most of them are silent. A worker that polled every ring every
// iteration spent most of a busy iteration on empty rings (a vhost dequeue, a ring-base read
// and two TSC reads each, ~100 cycles a TSC read in a VM): with 100 idle VMs beside two busy
// ones it forwarded a fraction of the two-VM rate (doc/performance.md). So while the worker is
// busy (it moved packets within the last kBusyWindowNs), a queue that came up empty
// kEmptyPolls times in a row is polled every kEvery-th iteration (staggered over the queues),
// and every iteration again from its first packet on. A worker with nothing to do polls every
// queue: that costs nothing then, and it may sleep soon (io/idle_backoff.hpp spins 50 us
// first, longer than the window), which skipping would multiply into a silent VM's
// first-packet latency. Under load a silent VM's first packet waits at most kEvery iterations.
// Per worker, no allocation; positions are those of the snapshot's polled-queue list.
class IdleQueueSkip {
  public:
    static constexpr size_t kTracked = 4096;  // queues at later positions are always polled
    static constexpr uint8_t kEmptyPolls = 64;
    static constexpr uint32_t kEvery = 32;
    static constexpr uint64_t kBusyWindowNs = 20'000;

    // At the top of an iteration; `list` identifies the polled-queue list (positions mean
    // other queues after a reload: start afresh).
    void begin(uint64_t now_ns, const void* list) noexcept {
        if (list != list_) {
            empty_.fill(0);
            list_ = list;
        }
        thin_ = now_ns - last_busy_ns_ < kBusyWindowNs;
        ++iteration_;
    }

    // The iteration that began at `now_ns` moved packets.
    void busy(uint64_t now_ns) noexcept { last_busy_ns_ = now_ns; }

    bool due(size_t position) const noexcept {
        if (!thin_ || position >= kTracked || empty_[position] < kEmptyPolls) return true;
        return (iteration_ + position) % kEvery == 0;
    }

    void polled(size_t position, bool had_packets) noexcept {
        if (position >= kTracked) return;
        uint8_t& empty = empty_[position];
        if (had_packets)
            empty = 0;
        else if (empty < kEmptyPolls)
            ++empty;
    }

  private:
    std::array<uint8_t, kTracked> empty_{};  // consecutive empty polls, saturating
    const void* list_ = nullptr;
    uint64_t last_busy_ns_ = 0;
    uint32_t iteration_ = 0;
    bool thin_ = false;
};

}  // namespace calyx::io
