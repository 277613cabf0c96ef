#include "daemon/host_interface.hpp"

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "cp/site_routes.hpp"
#include "io/netlink.hpp"

namespace calyx::daemon {
namespace {

constexpr uint32_t kArpRetransmitMs = 200;

std::expected<void, std::string> write_sysctl(const std::string& key, const std::string& value) {
    const std::string path = "/proc/sys/" + key;
    std::ofstream out(path);
    if (!(out << value << '\n') || !out.flush())
        return std::unexpected(fmt::format("cannot set {} to {}", path, value));
    return {};
}

// Adds first-last to the kernel's reserved local ports, keeping what is there.
std::expected<void, std::string> reserve_ports(uint16_t first, uint16_t last) {
    const std::string key = "net/ipv4/ip_local_reserved_ports";
    std::string current;
    std::getline(std::ifstream("/proc/sys/" + key), current);
    const std::string range = fmt::format("{}-{}", first, last);
    return write_sysctl(key, current.empty() ? range : current + "," + range);
}

}  // namespace

std::expected<std::unique_ptr<io::EthdevPort>, std::string> open_host_interface(
    uint16_t slot, const config::Config& cfg, MacAddr uplink_mac, rte_mempool* pool, uint16_t queues) {
    const config::HostInterfaceConfig& host = *cfg.host_interface;
    const config::UplinkConfig& up = *cfg.uplink;  // validation: host_interface needs it
    const auto fail = [&](const std::string& what) {
        return std::unexpected(fmt::format("{}:{}:{}: host_interface {}: {}", host.where.file, host.where.line,
                                           host.where.column, host.name, what));
    };
    config::UplinkConfig tap_cfg;
    tap_cfg.port = config::TapPort{host.name};
    tap_cfg.where = host.where;
    auto port = io::EthdevPort::open(slot, tap_cfg, pool, queues, uplink_mac, "host_interface");
    if (!port) return std::unexpected(port.error());

    auto nl = io::Netlink::open();
    if (!nl) return fail(nl.error());
    const auto index = (*nl)->link_index(host.name);
    if (!index) return fail(index.error());
    constexpr uint32_t kUplinkMtu = 1500;  // dp::UplinkView::mtu
    if (auto done = (*nl)->set_link_up(*index, kUplinkMtu); !done) return fail(done.error());
    if (auto done = (*nl)->add_address(*index, up.address, up.prefix_length); !done) return fail(done.error());
    KernelRoute def;
    def.prefix = Ipv4Prefix{};
    def.table = KernelRoute::kMainTable;
    def.protocol = cp::kRouteProtocol;
    def.type = KernelRoute::kUnicast;
    def.gateways = {up.gateway};
    def.oif = *index;
    if (auto done = (*nl)->replace_route(def); !done) return fail(done.error());
    // Without IPv6 in the kernel there is nothing to turn off.
    if (const std::string key = fmt::format("net/ipv6/conf/{}/disable_ipv6", host.name);
        std::filesystem::exists("/proc/sys/" + key))
        if (auto done = write_sysctl(key, "1"); !done) return fail(done.error());
    if (auto done = write_sysctl(fmt::format("net/ipv4/neigh/{}/retrans_time_ms", host.name),
                                 std::to_string(kArpRetransmitMs));
        !done)
        return fail(done.error());
    if (auto done = reserve_ports(up.nat_port_min, up.nat_port_max); !done) return fail(done.error());
    return port;
}

}  // namespace calyx::daemon
