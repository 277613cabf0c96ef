// Builds the data plane's immutable Snapshot from a validated Config: the routing table
// (rte_fib), the per-port instance index, pre-encoded DHCP options and the worker plan.
// Runs on the control plane, never on a worker; failure leaves nothing behind.
#pragma once

#include <expected>
#include <functional>
#include <memory>
#include <string>

#include "calyx/config.hpp"
#include "dp/snapshot.hpp"

namespace calyx::cp {

// Port slot of an instance's port, decided by whoever owns the ports.
using PortSlotOf = std::function<uint16_t(const config::InstanceConfig&)>;

std::expected<std::unique_ptr<dp::Snapshot>, std::string> build_snapshot(
    const config::Config& cfg, const PortSlotOf& slot_of, uint64_t generation);

}  // namespace calyx::cp
