// EAL start-up: the arguments calyx gives DPDK, and nothing of the machine's own devices.
#pragma once

#include <expected>
#include <optional>
#include <string>
#include <vector>

#include "calyx/config.hpp"

namespace calyx::io {

// The EAL command line for a configuration: the main lcore plus the workers; PCI: only a `pci`
// uplink's device (-a ADDRESS), otherwise --no-pci (the machine's own NIC is never touched);
// no shared runtime files unless the user chose a file prefix (no leftover hugepage files,
// several calyx side by side), then eal_args. tap and af_packet uplinks are vdevs that
// EthdevPort::open creates after EAL start, so they add nothing here.
std::vector<std::string> eal_arguments(const config::DataplaneConfig& dp,
                                       const std::optional<config::UplinkConfig>& uplink,
                                       const std::string& argv0);

std::expected<void, std::string> init_eal(const std::vector<std::string>& args);

// Gives the calling thread an EAL lcore id if it has none (a control socket or datastore
// thread), once per thread. Needed before such a thread changes DPDK tables that keep
// per-lcore caches: rte_hash with multi-writer add frees slots into the cache of
// rte_lcore_id(), and LCORE_ID_ANY indexes past its end.
std::expected<void, std::string> ensure_lcore_id();

}  // namespace calyx::io
