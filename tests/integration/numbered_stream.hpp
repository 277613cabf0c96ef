// A stream of numbered packets through a hand-over or restart: when each was sent, which
// arrived. What was lost is counted in packets and in time: from the sending of the first packet
// lost to that of the next one that arrived (the harness's own pauses are not in it).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <set>
#include <vector>

namespace calyx::test {

struct NumberedStream {
    using Clock = std::chrono::steady_clock;
    std::vector<Clock::time_point> sent_at;
    std::set<uint32_t> arrived;

    // The number of the packet about to be sent.
    uint32_t next() {
        sent_at.push_back(Clock::now());
        return static_cast<uint32_t>(sent_at.size() - 1);
    }
    size_t lost() const { return sent_at.size() - arrived.size(); }
    // Whether the last packet sent was lost (and nothing after it arrived: the stream did not
    // come back).
    bool ends_lost() const { return !sent_at.empty() && !arrived.contains(static_cast<uint32_t>(sent_at.size() - 1)); }
    std::chrono::milliseconds longest_loss() const {
        std::chrono::milliseconds longest{0};
        for (size_t k = 0; k < sent_at.size();) {
            if (arrived.contains(static_cast<uint32_t>(k))) {
                ++k;
                continue;
            }
            size_t end = k;
            while (end < sent_at.size() && !arrived.contains(static_cast<uint32_t>(end))) ++end;
            const auto until = end < sent_at.size() ? sent_at[end] : sent_at.back();
            longest = std::max(longest, std::chrono::duration_cast<std::chrono::milliseconds>(until - sent_at[k]));
            k = end;
        }
        return longest;
    }
};

}  // namespace calyx::test
