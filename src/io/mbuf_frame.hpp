// The bridge between rte_mbuf and the stages' Frame: a single-segment mbuf is a Frame over
// its buffer, and after the pipeline the Frame's offset and length go back into the mbuf.
#pragma once

#include <rte_mbuf.h>

#include "dp/frame.hpp"

namespace calyx::io {

inline dp::Frame frame_of(rte_mbuf* m) {
    return dp::Frame{static_cast<uint8_t*>(m->buf_addr), m->buf_len, m->data_off, m->data_len};
}

inline void store_frame(rte_mbuf* m, const dp::Frame& f) {
    m->data_off = static_cast<uint16_t>(f.off);
    m->data_len = static_cast<uint16_t>(f.len);
    m->pkt_len = f.len;
}

}  // namespace calyx::io
