// The uplink port: one DPDK ethdev that leads to the provider network / Internet.
//
//   tap        calyx creates the Linux tap interface TapPort::name (net_tap PMD). The operator
//              or a test may bridge it, route to it, or move it into another network namespace
//              after calyx created it: the queues are file descriptors of the tun device and
//              keep working wherever the interface lives.
//   af_packet  an existing Linux interface, AfPacketPort::iface, through packet sockets
//              (net_af_packet PMD, one socket per queue, spread by PACKET_FANOUT).
//   pci        a NIC that EAL probed because eal_arguments() allowlisted PciPort::address (-a);
//              no other PCI device is ever probed.
//   vhost-user calyx serves the vhost-user socket VhostUserPort::socket (net_vhost PMD): the far
//              end is a router VM or a virtio-user peer, e.g. the benchmark's "Internet".
//
// Queues: `queues` receive and transmit queues (equal counts, as net_tap and net_af_packet
// require), at least one per worker: worker i sends on tx queue i, rx queue q is polled by
// worker q mod workers (Snapshot::queues_by_worker), so no two threads share a queue and no
// lock is needed. With several queues a NIC spreads flows
// by RSS; the tap by the kernel's own per-flow queue selection; af_packet by fanout hash.
// No queue affinity: a reply need not arrive on the rx queue of the tx queue its request left
// from (seen with tap and af_packet; RSS with a non-symmetric key does the same), so any
// worker may receive any flow's inbound packets.
//
// Threads: the control plane calls open(), refresh_link() (periodically) and the destructor;
// workers call rx(), tx() and connected() (one relaxed atomic load) per burst. The destructor
// must run after the workers stopped polling the port.
//
// MAC: mac() is the address calyx uses on the uplink (sends from, answers ARP with).
//   pci, af_packet, vhost-user  the device's own address (the NIC's, the Linux interface's,
//                   or the one net_vhost assigns).
//   tap             derived from this host's machine id and the tap name, so it is stable
//                   across restarts and differs between hosts that use the same tap name:
//                   02:h1:h2:h3:h4:h5. The Linux end of the tap gets 06:h1:h2:h3:h4:h5 (the
//                   PMD's `mac=` devarg; it is also what rte_eth_macaddr_get() reports). The
//                   two must differ: a Linux bridge that has the tap as a port treats the
//                   tap's address as its own and would keep frames for calyx to itself.
//
// connected() per type (see refresh_link):
//   pci        the physical link is up (rte_eth_link_get_nowait).
//   vhost-user the peer is attached with its queues enabled (the PMD's link state).
//   af_packet  the Linux interface, still the one calyx opened (same ifindex), is up and has
//              carrier (IFF_UP and IFF_RUNNING) in calyx's network namespace.
//   tap        the port is started and, while the Linux end is visible in calyx's namespace
//              (same name and ifindex), it is administratively up. Once it has been moved to
//              another namespace (or renamed) calyx cannot see that end, and the PMD's own link
//              query (an ioctl by interface name in calyx's namespace) would report "down"
//              while frames still flow; connected() then stays true. Should that end be down
//              (or deleted) there, the kernel refuses the writes: tx() takes nothing.
//
// Signals: net_tap has the kernel raise SIGRTMIN+1 for every packet it queues to the tap (its
// handler is an rx wake-up hint) in whichever thread does not block it. Never block it in all
// threads: the pending signals then fill RLIMIT_SIGPENDING and the kernel falls back to SIGIO
// (open() sets a default SIGIO to ignored, so that does not kill calyx). Blocking it in the
// workers only keeps them from being interrupted. It interrupts sigtimedwait (EINTR).
#pragma once

#include <atomic>
#include <cstdint>
#include <expected>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <rte_ethdev.h>

#include "calyx/config.hpp"
#include "calyx/net.hpp"
#include "io/port.hpp"

struct rte_mbuf;
struct rte_mempool;

namespace calyx::io {

class EthdevPort final : public Port {
public:
    // Creates (tap, af_packet: a vdev under a unique name, net_tap_calyxN) or finds (pci:
    // probed by EAL thanks to -a) the device, configures `queues` rx and `queues` tx queues
    // whose buffers come from `pool`, and starts it. Control plane only. On failure nothing
    // is left behind (the vdev, and with it a tap interface, is removed again).
    // A tap's Linux end gets `linux_mac` if given (the host interface: the uplink's MAC);
    // `role` names the port in errors.
    static std::expected<std::unique_ptr<EthdevPort>, std::string> open(
        uint16_t slot, const config::UplinkConfig& cfg, rte_mempool* pool, uint16_t queues,
        std::optional<MacAddr> linux_mac = std::nullopt, std::string_view role = "uplink");
    // Stops and closes the port; a vdev is removed (the tap interface disappears, in
    // whichever namespace it is by then). A closed pci port cannot be opened again in the same
    // process: EAL probes PCI devices once, at start.
    ~EthdevPort() override;
    EthdevPort(const EthdevPort&) = delete;
    EthdevPort& operator=(const EthdevPort&) = delete;

    // Worker side: rte_eth_rx_burst / rte_eth_tx_burst on the worker's own queue. tx takes
    // ownership of the mbufs it reports as sent (the PMD frees them once transmitted).
    uint16_t rx(rte_mbuf** pkts, uint16_t n, uint16_t queue, uint16_t& refused) noexcept override;
    uint16_t tx(rte_mbuf** pkts, uint16_t n, uint16_t queue) noexcept override;
    bool connected() const override { return up_.load(std::memory_order_relaxed); }
    uint16_t slot() const override { return slot_; }

    // Control plane, periodically (every housekeeping tick), and for vhost-user also the
    // vhost thread on link events: re-reads the link and updates connected(). A change shows
    // in connected() and link_changes().
    void refresh_link();
    uint64_t link_changes() const { return link_changes_.load(std::memory_order_relaxed); }

    MacAddr mac() const { return mac_; }
    uint16_t port_id() const { return port_id_; }
    uint16_t queues() const { return queues_; }
    // The ethdev's name: the vdev name (net_tap_calyxN, net_af_packet_calyxN) or the PCI address.
    const std::string& device_name() const { return device_name_; }
    // The Linux interface (tap, af_packet); empty for pci.
    const std::string& interface_name() const { return iface_; }

private:
    EthdevPort(uint16_t slot, config::UplinkPort kind) : slot_(slot), kind_(std::move(kind)) {}
    bool read_link() const;
    // net_vhost's link-state event (vhost thread): the peer attached or left.
    static int on_link_event(uint16_t port_id, rte_eth_event_type type, void* self, void* param);

    uint16_t slot_;
    config::UplinkPort kind_;  // which kind of port, and its device
    std::string device_name_;
    std::string iface_;
    unsigned if_index_ = 0;  // tap, af_packet: the Linux interface's index when opened
    uint16_t port_id_ = 0;
    uint16_t queues_ = 0;
    MacAddr mac_;
    bool vdev_created_ = false;
    bool port_valid_ = false;
    std::atomic<bool> started_ = false;
    bool lsc_registered_ = false;
    std::atomic<bool> up_{false};
    std::atomic<uint64_t> link_changes_{0};
};

}  // namespace calyx::io
