#include "cp/reload.hpp"

#include <fmt/format.h>

namespace calyx::cp {

std::optional<std::string> restart_required(const config::Config& running, const config::Config& next) {
    std::vector<std::string> changed;
    if (running.dataplane.workers != next.dataplane.workers) changed.push_back("dataplane.workers");
    if (running.dataplane.eal_args != next.dataplane.eal_args) changed.push_back("dataplane.eal_args");
    if (running.dataplane.mbufs != next.dataplane.mbufs) changed.push_back("dataplane.mbufs");
    if (running.dataplane.conntrack.capacity != next.dataplane.conntrack.capacity)
        changed.push_back("dataplane.conntrack.capacity");
    if (running.control.socket != next.control.socket) changed.push_back("control.socket");
    // (A default state file moves with the control socket, which is reported already.)
    if (running.dataplane.state_file != next.dataplane.state_file) changed.push_back("dataplane.state_file");
    if (running.metrics.listen != next.metrics.listen) changed.push_back("metrics.listen");
    // The uplink's port, address and port range are fixed while calyx runs: masqueraded
    // connections hold bindings to them. Its gateway may change (the ARP cache follows).
    const auto& a = running.uplink;
    const auto& b = next.uplink;
    if (a.has_value() != b.has_value()) {
        changed.push_back("uplink");
    } else if (a) {
        if (a->port != b->port || a->queues != b->queues)
            changed.push_back("uplink.port");
        if (a->address != b->address || a->prefix_length != b->prefix_length)
            changed.push_back("uplink.address");
        if (a->nat_port_min != b->nat_port_min || a->nat_port_max != b->nat_port_max)
            changed.push_back("uplink.nat_ports");
    }
    // The host's tap and the tables calyx owns are set up once; moving them would leave the old
    // ones behind (the routes BIRD learnt from, a configured interface).
    const auto name_of = [](const auto& h) { return h ? h->name : std::string{}; };
    if (name_of(running.host_interface) != name_of(next.host_interface)) changed.push_back("host_interface");
    const auto tables_of = [](const auto& r) {
        return r ? std::pair{r->export_table, r->import_table} : std::pair<uint32_t, uint32_t>{};
    };
    if (tables_of(running.routing) != tables_of(next.routing)) changed.push_back("routing");
    // The datastore's connection and the keys it watches are set up once (the syncer's list and
    // watch); what the translation reads (port_socket, networks) may change.
    const auto& da = running.datastore;
    const auto& db = next.datastore;
    if (da.type != db.type || da.endpoints != db.endpoints || da.prefix != db.prefix || da.region != db.region)
        changed.push_back("datastore");
    if (changed.empty()) return std::nullopt;
    std::string list;
    for (const auto& c : changed) list += (list.empty() ? "" : ", ") + c;
    return fmt::format("{} cannot change while calyx runs: restart calyx to apply", list);
}

}  // namespace calyx::cp
