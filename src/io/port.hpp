// What a worker needs of a port: receive a burst, send a burst. Instance ports are vhost-user
// (io/vhost_port.hpp); the uplink is an ethdev (io/ethdev_port.hpp). One virtual call per
// burst, never per packet.
#pragma once

#include <cstdint>

struct rte_mbuf;

namespace calyx::io {

class Port {
public:
    virtual ~Port() = default;
    // Receives up to n packets (new mbufs, owned by the caller) from receive queue `queue`.
    // `refused`: frames the port took in but dropped itself (vhost-user: longer than a
    // buffer), for the caller to count.
    virtual uint16_t rx(rte_mbuf** pkts, uint16_t n, uint16_t queue, uint16_t& refused) noexcept = 0;
    // Sends pkts[0..n) for worker `queue` (the uplink: its own transmit queue; vhost-user: see
    // io/vhost_tx.hpp). Takes ownership of the first `returned` mbufs; the caller frees the rest.
    virtual uint16_t tx(rte_mbuf** pkts, uint16_t n, uint16_t queue) noexcept = 0;
    // A peer is attached (VM connected, link up).
    virtual bool connected() const = 0;
    virtual uint16_t slot() const = 0;
};

}  // namespace calyx::io
