// A frame as the data-plane stages see it: contiguous bytes inside a buffer that has room
// before and after, so replies and ICMP errors are built in place without allocating.
// Backed by an rte_mbuf in the router (src/io/mbuf_frame.hpp) and by a plain array in tests.
#pragma once

#include <cstdint>
#include <cstring>

namespace calyx::dp {

struct Frame {
    uint8_t* buf = nullptr;  // start of the whole buffer
    uint32_t buf_len = 0;    // bytes in the buffer
    uint32_t off = 0;        // where the frame starts
    uint32_t len = 0;        // frame length

    uint8_t* data() const { return buf + off; }
    uint32_t headroom() const { return off; }
    uint32_t tailroom() const { return buf_len - off - len; }

    // Grow at the front; false (and no change) if there is not enough headroom.
    bool prepend(uint32_t n) {
        if (n > off) return false;
        off -= n;
        len += n;
        return true;
    }
    // Grow or shrink to `new_len` at the back; false (and no change) if it does not fit.
    bool resize(uint32_t new_len) {
        if (new_len > buf_len - off) return false;
        len = new_len;
        return true;
    }
};

}  // namespace calyx::dp
