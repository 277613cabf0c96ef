// Which receive queues a busy worker polls (io/idle_queue_skip.hpp): silent rings now and then,
// a ring with traffic every iteration, and every ring once the worker has nothing to do.
#include <gtest/gtest.h>

#include <vector>

#include "io/idle_queue_skip.hpp"

namespace calyx::io {
namespace {

constexpr size_t kQueues = 100;

// Runs `iterations` worker iterations of 1 us over kQueues queues of which `sending` always
// have packets; returns how often each queue was polled.
struct Worker {
    IdleQueueSkip skip;
    uint64_t now_ns = 1'000'000;

    std::vector<int> polls(const void* list, int iterations, const std::vector<bool>& sending) {
        std::vector<int> count(kQueues);
        for (int it = 0; it < iterations; ++it, now_ns += 1000) {
            skip.begin(now_ns, list);
            bool busy = false;
            for (size_t q = 0; q < kQueues; ++q) {
                if (!skip.due(q)) continue;
                ++count[q];
                skip.polled(q, sending[q]);
                busy |= sending[q];
            }
            if (busy) skip.busy(now_ns);
        }
        return count;
    }
};

TEST(IdleQueueSkip, BusyWorkerPollsSilentRingsOnlyEveryKEveryIterations) {
    Worker w;
    const int list = 0;
    std::vector<bool> sending(kQueues);
    sending[0] = sending[1] = true;
    w.polls(&list, IdleQueueSkip::kEmptyPolls, sending);  // every ring learnt silent
    const int n = 100 * int(IdleQueueSkip::kEvery);
    const std::vector<int> count = w.polls(&list, n, sending);
    EXPECT_EQ(count[0], n);
    EXPECT_EQ(count[1], n);
    int silent = 0;
    for (size_t q = 2; q < kQueues; ++q) {
        EXPECT_EQ(count[q], n / int(IdleQueueSkip::kEvery)) << "queue " << q;
        silent += count[q];
    }
    // Staggered: an iteration polls about 98 / kEvery silent rings, never all of them at once.
    EXPECT_EQ(silent, 98 * n / int(IdleQueueSkip::kEvery));
}

TEST(IdleQueueSkip, RingThatStartsSendingIsPolledEveryIterationFromItsFirstPacket) {
    Worker w;
    const int list = 0;
    std::vector<bool> sending(kQueues);
    sending[0] = true;  // the worker is busy with another VM
    w.polls(&list, IdleQueueSkip::kEmptyPolls, sending);
    sending[42] = true;
    // Found within kEvery iterations, then polled every time.
    int waited = 0;
    while (w.polls(&list, 1, sending)[42] == 0) ++waited;
    EXPECT_LT(waited, int(IdleQueueSkip::kEvery));
    EXPECT_EQ(w.polls(&list, 500, sending)[42], 500);
    // Silent again: back to every kEvery-th iteration after kEmptyPolls empty polls.
    sending[42] = false;
    w.polls(&list, IdleQueueSkip::kEmptyPolls, sending);
    EXPECT_EQ(w.polls(&list, 10 * int(IdleQueueSkip::kEvery), sending)[42], 10);
}

TEST(IdleQueueSkip, WorkerWithNothingToDoPollsEveryRing) {
    Worker w;
    const int list = 0;
    std::vector<bool> sending(kQueues);
    sending[3] = true;
    w.polls(&list, 4 * IdleQueueSkip::kEmptyPolls, sending);
    // The last packet moved; within the busy window silent rings are still thinned...
    sending[3] = false;
    const int window = int(IdleQueueSkip::kBusyWindowNs / 1000);
    EXPECT_LT(w.polls(&list, window - 1, sending)[50], window - 1);
    // ...after it every ring is polled every iteration (an idle worker may sleep next).
    w.polls(&list, 1, sending);
    for (int count : w.polls(&list, 50, sending)) EXPECT_EQ(count, 50);
}

TEST(IdleQueueSkip, NewQueueListStartsWithEveryRingPolled) {
    Worker w;
    const int before = 0, after = 0;
    std::vector<bool> sending(kQueues);
    sending[0] = true;
    w.polls(&before, IdleQueueSkip::kEmptyPolls, sending);
    // After a reload position 7 may be another VM's ring: not presumed silent.
    EXPECT_EQ(w.polls(&after, 10, sending)[7], 10);
}

}  // namespace
}  // namespace calyx::io
