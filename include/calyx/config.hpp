// The validated configuration model: what `calyx --config FILE` means after parsing.
//
// Parsing and validation report every error at once, each with the file:line:col of the YAML
// node it concerns. A Config that exists is valid: the control plane builds data-plane
// snapshots from it without further checks.
//
// Two kinds of settings live here:
//   the host's own: `host`, dataplane, control, metrics, the uplink, host_interface, routing;
//   the site's: networks, security groups and instances, the same on every compute host of a
//     site. Each calyx serves the instances whose `host` is its own and knows the others
//     (remote instances: no port here) for routing checks, remote_group and explain.
// The site's part is plain values with no trace of YAML but a SourceLocation naming where a
// value came from, so another source (a datastore) can fill the same structs later. A host's
// file may take the site's sections from a shared file (`include:`, cp/config/parser.hpp).
#pragma once

#include <cstdint>
#include <expected>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "calyx/conntrack_timeouts.hpp"
#include "calyx/net.hpp"
#include "calyx/network_kind.hpp"

namespace calyx::config {

struct SourceLocation {
    std::string file;  // or, for what a datastore holds, its key (line 0)
    int line = 0;      // 1-based; 0: no line (a datastore key)
    int column = 0;    // 1-based
    // "file:line:col", or the key alone when there is no line.
    std::string to_string() const;
};

struct Error {
    SourceLocation where;
    std::string message;
    // "file:line:col: message"
    std::string to_string() const;
};

using Errors = std::vector<Error>;

enum class PortType { vhost_user };
enum class VhostMode { server, client };
std::string_view to_string(VhostMode);

// A user or group a socket file is given to: as written (a name or a number) and its id.
struct FileOwner {
    std::string name;
    uint32_t id = 0;
    bool operator==(const FileOwner&) const = default;
};

struct PortConfig {
    PortType type = PortType::vhost_user;
    std::string socket;  // vhost-user socket path
    VhostMode mode = VhostMode::server;
    uint16_t queues = 1;
    // Server mode: the socket file's owner, group and permission bits (`owner`, `group`, and
    // `mode` given in octal), so that QEMU need not run as root (libvirt and Nova run it as
    // libvirt-qemu). Unset: as created (calyx's user and group, its umask).
    std::optional<FileOwner> owner;
    std::optional<FileOwner> group;
    std::optional<uint32_t> socket_mode;
    SourceLocation where;
};

struct NetworkConfig {
    std::string name;
    NetworkKind kind = NetworkKind::public_;
    Ipv4Prefix cidr;
    Ipv4Addr gateway;
    std::vector<Ipv4Addr> dns;
    std::optional<std::string> domain;
    uint16_t mtu = 1500;
    uint32_t lease_seconds = 86400;
    // Extra destinations announced by DHCP option 121, all via the gateway; the default route
    // is always announced.
    std::vector<Ipv4Prefix> routes;
    SourceLocation where;
};

// What one instance may take of what all share (`limits:`; doc/architecture.md "Limits and
// isolation"). The top-level section gives every instance's defaults; an instance's own
// `limits:` overrides any of them.
struct LimitsConfig {
    uint32_t connections = 65536;                // tracked connections charged to it
    uint32_t new_connections_per_second = 50000;  // token bucket, one second deep
    uint32_t nat_ports = 4096;                   // masquerade ports towards one remote endpoint
    friend bool operator==(const LimitsConfig&, const LimitsConfig&) = default;
};

struct InstanceConfig {
    std::string name;
    // The compute host that runs it (`host:`, default: this calyx's Config::host). An
    // instance of another host has no port here and may have no MAC.
    std::string host;
    std::string network;
    MacAddr mac;  // zero for a remote instance written without one
    Ipv4Addr ipv4;
    PortConfig port;  // its socket is empty for a remote instance written without a port
    std::vector<std::string> security_groups;
    LimitsConfig limits;  // the top-level defaults with the instance's own overrides
    SourceLocation where;
};

enum class RuleDirection { ingress, egress };
std::string_view to_string(RuleDirection);

// One security-group rule. Allows new connections; replies follow by connection tracking.
struct RuleConfig {
    RuleDirection direction = RuleDirection::ingress;
    std::optional<uint8_t> protocol;  // IP protocol number; nullopt: any
    uint16_t port_min = 0;            // destination port range, TCP/UDP only; whole range if
    uint16_t port_max = 65535;        //   `ports` is absent
    std::optional<uint8_t> icmp_type;  // ICMP only; nullopt: any type
    std::optional<uint8_t> icmp_code;  // ICMP only, needs icmp_type; nullopt: any code
    std::optional<Ipv4Prefix> remote;  // remote: CIDR
    std::optional<std::string> remote_group;  // remote_group: members of that group
    SourceLocation where;
};

struct SecurityGroupConfig {
    std::string name;
    std::vector<RuleConfig> rules;
    SourceLocation where;
};

// Connection tracking: table size and per-state lifetimes.
struct ConntrackConfig : ConntrackTimeouts {
    uint32_t capacity = 1u << 20;
    uint32_t fragment = 30;  // how long later fragments follow their first fragment's verdict
};

struct DataplaneConfig {
    std::vector<unsigned> workers{1};  // lcore ids that poll; never the main lcore
    std::vector<std::string> eal_args;
    // The MAC every instance sees as its gateway. Calico uses ee:ee:ee:ee:ee:ee, a locally
    // administered unicast address; so does calyx by default.
    MacAddr gateway_mac{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}};
    // ICMP errors (time exceeded, unreachable) each worker may send: rate and burst, like
    // Linux's net.ipv4.icmp_msgs_per_sec / icmp_msgs_burst.
    uint32_t icmp_errors_per_second = 1000;
    uint32_t icmp_errors_burst = 50;
    uint32_t mbufs = 16383;  // packet buffers in the pool
    ConntrackConfig conntrack;
    // Where the connection table lives so that the next calyx continues its connections
    // (dp/state_file.hpp); empty: next to the control socket (state_path()).
    std::string state_file;
    // A worker that finds no packets sleeps, adaptively, at most this long (io/idle_backoff.hpp);
    // 0: pure polling. The default keeps an idle host's cores nearly free and adds at most
    // ~0.1 ms to the first packet after a quiet spell (doc/performance.md has the figures).
    uint32_t idle_sleep_us = 100;
};

// The uplink's port: one of four kinds, each with the one key that names its device
// (io/ethdev_port.hpp says how each is opened). kType is the `type:` of the port in the
// configuration, kDeviceKey the key of the device.
struct TapPort {  // calyx creates the Linux tap interface `name`
    static constexpr std::string_view kType = "tap", kDeviceKey = "name";
    std::string name;
    bool operator==(const TapPort&) const = default;
};
struct AfPacketPort {  // an existing Linux interface, through packet sockets
    static constexpr std::string_view kType = "af_packet", kDeviceKey = "iface";
    std::string iface;
    bool operator==(const AfPacketPort&) const = default;
};
struct PciPort {  // a NIC given to DPDK: "DDDD:BB:DD.F", lowercase hex, domain always present
    static constexpr std::string_view kType = "pci", kDeviceKey = "address";
    std::string address;
    bool operator==(const PciPort&) const = default;
};
struct VhostUserPort {  // calyx serves this socket (a router VM, a test peer)
    static constexpr std::string_view kType = "vhost-user", kDeviceKey = "socket";
    std::string socket;
    bool operator==(const VhostUserPort&) const = default;
};
using UplinkPort = std::variant<TapPort, AfPacketPort, PciPort, VhostUserPort>;

// "tap", "af_packet", "pci" or "vhost-user".
std::string_view type_name(const UplinkPort& port);
// What names the device: the interface (tap, af_packet), the PCI address or the socket.
const std::string& device_name(const UplinkPort& port);

// The way out to the provider network / Internet: one ethdev port and the compute host's
// public address on it. `nat` networks are masqueraded to `address`; the uplink subnet is
// on-link (reached by ARP), everything else goes to `gateway`.
struct UplinkConfig {
    UplinkPort port;
    // Receive/transmit queue pairs; 0: one per worker. More than the workers: a worker polls
    // several receive queues (a NIC spreading flows over more RSS queues); never fewer, as
    // every worker transmits on a queue of its own.
    uint16_t queues = 0;
    uint16_t queue_count(size_t workers) const { return queues ? queues : static_cast<uint16_t>(workers); }
    Ipv4Addr address;               // the host's address; host bits of the subnet set
    uint8_t prefix_length = 0;      // of the uplink subnet, 8..30
    Ipv4Addr gateway;               // inside the subnet, not `address`
    uint16_t nat_port_min = 20000;  // masquerade source ports, inclusive, at least 64 of them
    uint16_t nat_port_max = 59999;
    SourceLocation where;  // the `uplink` mapping

    // The on-link subnet: `address` with its host bits cleared.
    constexpr Ipv4Prefix subnet() const {
        return {Ipv4Addr{address.value & Ipv4Prefix::mask_of(prefix_length)}, prefix_length};
    }
};

// The host's own network stack behind a tap in calyx's network namespace: the tap carries the
// uplink's MAC and address, with a default route via the uplink's gateway, so BIRD, sshd and
// the rest of the host work as with the NIC in the kernel (daemon/host_interface.hpp).
struct HostInterfaceConfig {
    std::string name;  // the Linux interface calyx creates
    SourceLocation where;
};

// The kernel's routing tables calyx meets BIRD in (cp/site_routes.hpp): calyx keeps a /32 per
// local instance in export_table (under its own route protocol, kRouteProtocol), and routes the
// site's other instances by what BIRD writes into import_table.
struct RoutingConfig {
    uint32_t export_table = 0;
    uint32_t import_table = 0;
    SourceLocation where;
};

struct ControlConfig {
    std::string socket = "/run/calyx/calyx.sock";
};

struct MetricsConfig {
    std::string listen = "127.0.0.1:9469";
};

// Where the site's networks, security groups and instances come from: this file alone (none),
// or etcd, in the shapes networking-calico writes for Felix (cp/datastore/, doc/datastore.md).
enum class DatastoreType { none, etcd };
std::string_view to_string(DatastoreType);

// What networking-calico does not carry: the seed's kind of a Neutron network, and its MTU.
struct DatastoreNetwork {
    std::string id;  // the Neutron network's id, as in the endpoints' network-id annotation
    NetworkKind kind = NetworkKind::private_;
    uint16_t mtu = 1500;
    SourceLocation where;
};

struct DatastoreConfig {
    DatastoreType type = DatastoreType::none;
    std::vector<std::string> endpoints{"http://127.0.0.1:2379"};  // etcd's client URLs
    std::string prefix = "/calico";  // the root of every key read and written
    // The vhost-user socket of a local endpoint: "{interface}" becomes its interfaceName.
    std::string port_socket = "/run/calyx/{interface}.sock";
    // networking-calico's [calico] openstack_region; none: the keys of a single-region cloud.
    std::optional<std::string> region;
    // A network not listed is private (the site only): a missing entry never exposes a VM.
    std::vector<DatastoreNetwork> networks;
    SourceLocation where;

    const DatastoreNetwork* find_network(std::string_view id) const;
    // "no-region" or "region-<region>": the region part of the dhcp/v2 and felix/v2 keys.
    std::string region_string() const;
    // "openstack" or "openstack-region-<region>": the namespace of endpoints and policies.
    std::string namespace_name() const;
};

struct Config {
    std::string source_file;
    // The text it was read from (the file and every included one, in order), hashed: which
    // configuration a running calyx serves, so that a successor taking over can tell that a
    // reload changed it meanwhile. Empty when not read from text (a datastore's site keeps the
    // file's).
    std::string source_digest;
    std::string host;  // this compute host's name (`host:`, default: the machine's host name)
    DataplaneConfig dataplane;
    ControlConfig control;
    MetricsConfig metrics;
    DatastoreConfig datastore;
    std::vector<NetworkConfig> networks;
    std::vector<InstanceConfig> instances;
    std::vector<SecurityGroupConfig> security_groups;
    std::optional<UplinkConfig> uplink;  // none: no way out, only the site's networks
    LimitsConfig limits;                 // every instance's defaults
    std::optional<HostInterfaceConfig> host_interface;  // needs the uplink
    std::optional<RoutingConfig> routing;               // needs the uplink

    // Whether this calyx serves the instance (its host is this host).
    bool is_local(const InstanceConfig& inst) const { return inst.host == host; }
    // The instances of this host, in configuration order.
    std::vector<const InstanceConfig*> local_instances() const;

    const NetworkConfig* find_network(std::string_view name) const;
    const InstanceConfig* find_instance(std::string_view name) const;
    // dataplane.state_file, or the control socket's path with ".state" for its extension.
    std::string state_path() const;
    const SecurityGroupConfig* find_security_group(std::string_view name) const;
};

// Parse and validate YAML text; `file_name` is used only in error locations.
std::expected<Config, Errors> parse_config(std::string_view yaml_text, std::string_view file_name);

// Read FILE and parse it. An unreadable file is one error at FILE:0:0.
std::expected<Config, Errors> load_config_file(const std::string& path);

}  // namespace calyx::config
