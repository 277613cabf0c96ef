// The reference: the Linux kernel as a router between the client and the server host, in
// network namespaces of its own, with nftables rules equivalent to calyx's security groups.
//
//   ns <tag>-c                 ns <tag>-r (router)                          ns <tag>-s
//   [client end] ---veth--- [203.0.113.1]  ip_forward, conntrack  [10.20.0.1] ---veth--- [server end]
//
// The host ends have no addresses and no IPv6: their own stacks never answer anything. The
// test sends and captures whole Ethernet frames on them with AF_PACKET sockets. The router has
// permanent neighbours for both hosts (no ARP), rp_filter off, checksum offloads off on every
// veth (AF_PACKET would otherwise see partial checksums), nf_conntrack_tcp_loose=0 and
// nf_conntrack_tcp_be_liberal=0, and one forward chain:
//   ct state established,related accept
//   ct state invalid drop
//   <new connections as the policy of scenarios.hpp allows>
//   policy drop
// Needs root, iproute2, ethtool, nftables and conntrack (the tool, to flush the table).
#pragma once

#include <expected>
#include <memory>
#include <string>
#include <vector>

#include "scenarios.hpp"

namespace calyx::difftest {

class LinuxRouter {
public:
    // `tag` names the namespaces and interfaces (at most 8 characters).
    static std::expected<std::unique_ptr<LinuxRouter>, std::string> create(const std::string& tag);
    ~LinuxRouter();
    LinuxRouter(const LinuxRouter&) = delete;
    LinuxRouter& operator=(const LinuxRouter&) = delete;

    // Sends a datagram from `from`'s end of its link; false if the socket refused it.
    bool send(Side from, const Bytes& ip);
    // Appends the IPv4 datagrams that arrived at `at`'s end since the last call.
    void receive(Side at, std::vector<Bytes>& out);

    // Empties the connection table (between runs that reuse flows).
    std::expected<void, std::string> flush_conntrack();
    // The ruleset with its counters and the connection table, for failure reports.
    std::string diagnostics() const;

    // The nftables ruleset the router runs.
    static std::string ruleset(const std::string& client_if, const std::string& server_if);

private:
    LinuxRouter() = default;
    std::expected<void, std::string> build();

    std::string tag_;
    std::string ns_router_, ns_client_, ns_server_;
    std::string client_end_, client_router_, server_end_, server_router_;  // interface names
    int socket_[2] = {-1, -1};  // [Side]: AF_PACKET on the host's end
    bool created_ = false;
};

}  // namespace calyx::difftest
