// host_interface: the host's own stack behind a tap (config.hpp, HostInterfaceConfig). It
// carries the uplink's MAC and address, so it needs an uplink, and another interface name.
#include "cp/config/sections.hpp"

#include <array>

#include "calyx/overloaded.hpp"

namespace calyx::config {
namespace {

constexpr std::string_view kHostInterfaceKeys[] = {"name"};

}  // namespace

void read_host_interface(Parser& parser, const Field& field) {
    const auto m = parser.mapping(field, "'host_interface'", "in host_interface", kHostInterfaceKeys);
    if (!m) return;
    parser.report_duplicates(*m, "in host_interface");
    parser.require(*m, "host_interface", std::array<std::string_view, 1>{"name"});
    HostInterfaceConfig host;
    host.where = parser.at(m->node);
    const Field* f = m->get("name");
    if (!f) return;
    auto name = parser.interface_name(*f, "'name'");
    if (!name) return;
    const auto& uplink = parser.config().uplink;
    if (!uplink) {
        parser.error(field.key,
                     "host_interface needs an uplink: the host's stack behind it carries the uplink's "
                     "MAC and address");
        return;
    }
    const bool linux_interface = std::holds_alternative<TapPort>(uplink->port) ||
                                 std::holds_alternative<AfPacketPort>(uplink->port);
    if (linux_interface && device_name(uplink->port) == *name) {
        parser.error(*f, "'name' {} is the uplink's interface; the host interface needs its own", *name);
        return;
    }
    host.name = std::move(*name);
    parser.config().host_interface = std::move(host);
}

}  // namespace calyx::config
