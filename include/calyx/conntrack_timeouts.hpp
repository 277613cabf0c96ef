// Connection tracking's per-state lifetimes. Shared vocabulary: `dataplane.conntrack` sets
// them (calyx/config.hpp), the snapshot builder copies them into the Snapshot, and the state
// machines (dp/conntrack_state.hpp) read them; the defaults live here once.
#pragma once

#include <cstdint>

namespace calyx {

// Per-state lifetimes in seconds; defaults are the Linux nf_conntrack sysctl defaults.
struct ConntrackTimeouts {
    uint32_t tcp_syn_sent = 120;  // also syn_sent2
    uint32_t tcp_syn_recv = 60;
    uint32_t tcp_established = 432000;  // 5 days
    uint32_t tcp_fin_wait = 120;
    uint32_t tcp_close_wait = 60;
    uint32_t tcp_last_ack = 30;
    uint32_t tcp_time_wait = 120;
    uint32_t tcp_close = 10;  // also after any accepted RST
    // Cap while a side has sent data the other has not ACKed yet (Linux
    // nf_conntrack_tcp_timeout_unacknowledged): a dead peer frees its entry in minutes.
    uint32_t tcp_unacknowledged = 300;
    uint32_t udp_unreplied = 30;  // Linux udp_timeout
    uint32_t udp_replied = 120;   // Linux udp_timeout_stream
    uint32_t icmp = 30;           // echo, refreshed by each request and reply
    uint32_t generic = 600;       // any other IP protocol (Linux generic_timeout)
};

}  // namespace calyx
