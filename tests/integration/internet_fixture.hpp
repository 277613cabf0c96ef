// An Internet behind calyx's uplink, for the tests of traffic that leaves the site: the
// uplink's far end is in a network namespace that plays the Internet (its router kUpstream,
// a TCP server on kInternetServer:443 that answers every connection with the address and port
// it sees). VMs speak TCP by hand. The uplink is a tap calyx creates (moved into the
// namespace) or af_packet on a veth pair, with any number of workers and queues.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "calyx_fixture.hpp"
#include "netns.hpp"

namespace calyx::test {

// How calyx's uplink reaches the namespace (the workers are ConfigOptions').
struct UplinkVariant {
    bool af_packet = false;  // af_packet on a veth pair; else a tap
    uint16_t queues = 0;     // 0: calyx's default, one per worker
};

class InternetFixture : public CalyxFixture {
protected:
    // Starts calyx with the VMs of `opts` and the uplink `variant`, and builds the Internet.
    void start_with_internet(ConfigOptions opts, UplinkVariant variant = {});
    void TearDown() override;

    static Bytes tcp_frame(const Vm& vm, Ipv4Addr dst, uint16_t sport, uint16_t dport, uint8_t flags,
                           uint32_t seq, uint32_t ack, uint8_t ttl = 64);
    // A TCP segment to `vm`'s `port` with at least `flags`.
    static FramePredicate tcp_to(const Vm& vm, uint16_t port, uint8_t flags);
    static std::string tcp_payload(const Bytes& f);

    // A connection from the VM to the Internet server by hand (SYN, SYN-ACK, ACK); returns
    // the line the server sends: the address and port it saw the connection come from.
    // nullopt when no SYN-ACK (or no data) came within `wait`.
    std::optional<std::string> fetch_seen_address(const Vm& from, uint16_t sport,
                                                  std::chrono::milliseconds wait = kReply);

    // Writes `frame` onto the provider segment from the namespace (an attacker there, or the
    // new VRRP master announcing itself).
    void send_from_internet(const Bytes& frame);

    // The uplink's far end in the namespace gets the router's address and routes; after calyx
    // restarted with a tap uplink, its new tap moves there first (a veth pair outlives calyx).
    void connect_uplink();

    std::string uplink_port_;   // the uplink's `port:` as calyx got it (for reloads)
    std::string internet_end_;  // the tap, or the veth end in the namespace
    std::string host_end_;      // af_packet: the veth end calyx uses
    bool far_end_ready_ = false;
    std::unique_ptr<Namespace> ns_;
    int server_pid_ = 0;

private:
    void build_internet();
};

}  // namespace calyx::test
