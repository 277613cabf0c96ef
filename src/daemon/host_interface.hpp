// The host's own stack behind a tap (config host_interface; the data plane's side is
// dp/host.hpp): calyx creates the tap with the uplink's MAC on its Linux end, and sets up the
// kernel of its network namespace as it would be with the NIC in the kernel:
//   the link up, with the uplink's MTU;
//   the uplink's address and subnet on it;
//   the default route via the uplink's gateway (replacing the namespace's: the host's traffic
//     leaves by the uplink now);
//   IPv6 off on it (calyx carries IPv4 and ARP);
//   ARP retransmits every 200 ms: calyx answers the kernel's ARP from its own cache, and a miss
//     is resolved within a housekeeping tick, so the kernel's next try succeeds;
//   the masquerade ports (uplink.nat_ports) in ip_local_reserved_ports, so that the kernel never
//     picks one of them for a connection of its own: a reply to it could be taken for a reply to
//     a masqueraded connection, which calyx translates before the host could see it.
// BIRD, sshd or an etcd client on the host then work unchanged. Removing the tap (calyx stops)
// takes its address and routes with it.
#pragma once

#include <cstdint>
#include <expected>
#include <memory>
#include <string>

#include "calyx/config.hpp"
#include "io/ethdev_port.hpp"

struct rte_mempool;

namespace calyx::daemon {

std::expected<std::unique_ptr<io::EthdevPort>, std::string> open_host_interface(
    uint16_t slot, const config::Config& cfg, MacAddr uplink_mac, rte_mempool* pool, uint16_t queues);

}  // namespace calyx::daemon
