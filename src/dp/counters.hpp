// Per-lcore counters. Each worker owns one WorkerCounters and is its only writer; the control
// plane sums them for metrics and calyxctl without touching the workers (relaxed loads of
// naturally aligned 64-bit words, so a reader never sees a torn value).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "calyx/drop_reason.hpp"

namespace calyx::dp {

// Port slots are calyx's own small port numbers (not DPDK port ids); vhost-user allows 1024
// devices per process.
inline constexpr uint16_t kMaxPorts = 1024;

// Written only by the owning worker.
inline void bump(uint64_t& counter, uint64_t by = 1) {
    std::atomic_ref<uint64_t> ref(counter);
    ref.store(ref.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}
// Read from any thread.
inline uint64_t read_counter(const uint64_t& counter) {
    return std::atomic_ref<uint64_t>(const_cast<uint64_t&>(counter)).load(std::memory_order_relaxed);
}

enum class DhcpReplyType : uint8_t { offer, ack, nak, count_ };
inline constexpr std::array<const char*, 3> kDhcpReplyTypeNames{"offer", "ack", "nak"};

struct PortCounters {
    uint64_t rx_packets = 0;
    uint64_t rx_bytes = 0;
    uint64_t tx_packets = 0;
    uint64_t tx_bytes = 0;
    std::array<uint64_t, kDropReasonCount> drops{};
};

struct alignas(64) WorkerCounters {
    std::array<PortCounters, kMaxPorts> ports{};
    uint64_t arp_replies = 0;
    std::array<uint64_t, static_cast<size_t>(DhcpReplyType::count_)> dhcp_replies{};
    uint64_t dhcp_releases = 0;
    uint64_t dhcp_declines = 0;
    uint64_t icmp_echo_replies = 0;
    uint64_t icmp_errors_sent = 0;
    uint64_t icmp_errors_rate_limited = 0;
    uint64_t ct_created = 0;  // connections this worker added to the table
    uint64_t busy_cycles = 0;   // loop iterations that moved packets
    uint64_t total_cycles = 0;  // all loop iterations, idle sleeps included
    uint64_t sleep_cycles = 0;  // of total_cycles: asleep (dataplane.idle_sleep_us)
    uint64_t io_cycles = 0;     // of busy_cycles: inside port rx/tx bursts (vhost copies, PMDs)
    uint64_t packets = 0;       // received by this worker, all ports

    void count_drop(uint16_t port, DropReason r, uint64_t n = 1) {
        bump(ports[port].drops[static_cast<size_t>(r)], n);
    }
    void count_dhcp_reply(DhcpReplyType t) { bump(dhcp_replies[static_cast<size_t>(t)]); }
};

}  // namespace calyx::dp
