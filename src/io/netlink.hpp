// rtnetlink through libmnl: what calyx asks of the kernel of its own network namespace, on the
// control plane only (never a worker).
//
//   routes     dump a table, add (create or replace) and delete a route, and follow route
//              events (RTNLGRP_IPV4_ROUTE) without blocking; an overflowed event socket (ENOBUFS:
//              the kernel dropped events) is reported, so the caller dumps the table again
//   links      the host interface: bring a link up with an MTU, give it an address, route by it
//
// Why libmnl (doc/site.md has the longer answer): rtnetlink is a small binary protocol; libmnl
// (Debian's libmnl0, the netfilter project's, used by iproute2-adjacent tools and nftables)
// gives message building, attribute parsing and validation, and sequence/port checks, and
// nothing else: no object model or cache to keep in step with calyx's own (libnl's route cache
// is what VPP's linux-cp and FRR avoid). Plain sockets would re-implement its 1 kLOC.
#pragma once

#include <cstdint>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "calyx/kernel_route.hpp"
#include "calyx/net.hpp"

struct mnl_socket;

namespace calyx::io {

// What a route event says.
struct RouteEvent {
    bool deleted = false;  // RTM_DELROUTE; else RTM_NEWROUTE (added or replaced)
    KernelRoute route;
};

class Netlink {
public:
    // A request socket; with `route_events`, also subscribed to IPv4 route changes (its
    // receive buffer enlarged so that a burst of BIRD's changes rarely overflows it).
    static std::expected<std::unique_ptr<Netlink>, std::string> open(bool route_events = false);
    ~Netlink();
    Netlink(const Netlink&) = delete;
    Netlink& operator=(const Netlink&) = delete;

    // Every IPv4 route of `table`.
    std::expected<std::vector<KernelRoute>, std::string> dump_routes(uint32_t table);
    // Creates or replaces the route with this prefix, table and priority.
    std::expected<void, std::string> replace_route(const KernelRoute& route);
    // Deletes it; a route that is already gone is no error.
    std::expected<void, std::string> delete_route(const KernelRoute& route);

    // The events that arrived since the last call, without blocking. nullopt: the socket
    // overflowed (events were lost); dump the tables again. An error: the socket is unusable.
    std::expected<std::optional<std::vector<RouteEvent>>, std::string> read_route_events();

    // Links and addresses of calyx's namespace (the host interface).
    std::expected<unsigned, std::string> link_index(const std::string& name);
    std::expected<void, std::string> set_link_up(unsigned index, uint32_t mtu);
    // Adds `address`/`prefix_length` (replacing it if present).
    std::expected<void, std::string> add_address(unsigned index, Ipv4Addr address, uint8_t prefix_length);

private:
    Netlink() = default;
    // Sends one request and waits for the kernel's answer: with `on_message`, a dump whose
    // every message goes there; without, a change the kernel acknowledges (NLM_F_ACK).
    std::expected<void, std::string> transact(std::vector<uint8_t>& request,
                                              const std::function<void(const void* nlh)>& on_message = {});

    mnl_socket* socket_ = nullptr;  // requests and their answers
    unsigned port_id_ = 0;
    uint32_t seq_ = 0;
    mnl_socket* events_ = nullptr;  // route events only (a separate socket: they never mix with answers)
};

// Decodes an RTM_NEWROUTE/RTM_DELROUTE message; nullopt for anything but an IPv4 route.
// Exposed for tests, which feed it messages built by encode_route.
std::optional<RouteEvent> decode_route(const void* nlh);
// An RTM_NEWROUTE (or RTM_DELROUTE) message for `route`, with `flags` besides NLM_F_REQUEST.
std::vector<uint8_t> encode_route(const KernelRoute& route, bool del, uint16_t flags, uint32_t seq);

}  // namespace calyx::io
