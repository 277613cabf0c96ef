// instances: the VMs, each with one port on one network, its addresses and security groups.
// Read last: instances name their network and groups. An instance of another host (`host:`
// not this calyx's) needs no port and no MAC: this calyx only routes to it and checks rules
// that name it; MACs and addresses stay unique across the whole site, sockets per host.
#include "cp/config/sections.hpp"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <vector>

namespace calyx::config {
namespace {

// `ports` is not a key of the contract; it is accepted here only to explain why an instance
// cannot have more than one.
constexpr std::string_view kInstanceKeys[] = {"name", "host",            "network", "mac",   "ipv4",
                                              "security_groups", "port", "ports", "limits"};
constexpr std::string_view kPortKeys[] = {"type", "socket", "mode", "queues", "owner", "group"};

constexpr std::string_view kSecondPort =
    "has a second port: one instance, one interface — a second interface breaks communication "
    "(every interface has its own L2 link to the gateway, and the gateway is always the first "
    "hop)";

// The first entry of an instance name, to tell a repeated entry from a second port.
struct FirstInstance {
    int line = 0;
    std::string socket;
};

// Each entry names a defined group, once.
void instance_groups(Parser& parser, const Field& field, InstanceConfig& inst) {
    const auto items = parser.list(field, "'security_groups'");
    if (!items) return;
    for (const Field& item : *items) {
        const auto group =
            parser.scalar(item, "entry of 'security_groups'", "a security group name");
        if (!group) continue;
        if (std::ranges::find(inst.security_groups, *group) != inst.security_groups.end()) {
            parser.error(item, "security group '{}' is listed twice in 'security_groups'", *group);
            continue;
        }
        check_group_reference(parser, item, *group);
        inst.security_groups.push_back(*group);
    }
}

// network, mac, ipv4 and the port's socket: each valid on its own and, if check_unique, not
// already used by another instance (the socket: by another instance of this host).
void instance_addresses(Parser& parser, const Mapping& m, InstanceConfig& inst, bool check_unique) {
    const bool local = inst.host == parser.config().host;
    const FirstUse use{fmt::format("instance '{}'", inst.name), inst.where.line};
    const auto claim = [&](auto& uses, const auto& key, const Field& f, std::string_view what,
                           const std::string& text) {
        if (!check_unique) return;
        const auto [it, inserted] = uses.try_emplace(key, use);
        if (!inserted)
            parser.error(f, "{} {} is already used by {} (line {})", what, text, it->second.owner,
                         it->second.line);
    };

    const NetworkEntry* net = nullptr;
    if (const Field* f = m.get("network")) {
        if (const auto n = parser.scalar(*f, "'network'", "a network name")) {
            inst.network = *n;
            const auto it = std::ranges::find(
                parser.known().networks, *n,
                [](const NetworkEntry& e) -> const std::string& { return e.config.name; });
            if (it != parser.known().networks.end()) {
                net = &*it;
            } else {
                std::vector<std::string_view> names;
                for (const NetworkEntry& e : parser.known().networks)
                    names.push_back(e.config.name);
                parser.error(*f, "unknown network '{}'{}", *n, suggestion(*n, names));
            }
        }
    }

    if (const Field* f = m.get("mac")) {
        if (const auto mac = parser.unicast_mac(*f, "'mac'")) {
            inst.mac = *mac;
            if (parser.known().gateway_mac && *mac == *parser.known().gateway_mac)
                parser.error(*f,
                             "mac {} is the gateway MAC (dataplane.gateway_mac); an instance needs "
                             "its own",
                             mac->to_string());
            else
                claim(parser.known().macs, *mac, *f, "mac", mac->to_string());
        }
    }

    if (const Field* f = m.get("ipv4")) {
        if (const auto addr = parser.ipv4(*f, "'ipv4'")) {
            inst.ipv4 = *addr;
            const std::string text = addr->to_string();
            if (!net || !net->cidr_valid) {
                claim(parser.known().addresses, *addr, *f, "ipv4", text);
            } else if (const Ipv4Prefix& cidr = net->config.cidr; !cidr.contains(*addr)) {
                parser.error(*f, "ipv4 {} is outside network '{}' ({})", text, net->config.name,
                             cidr.to_string());
            } else if (*addr == cidr.addr) {
                parser.error(*f, "ipv4 {} is the network address of {}", text, cidr.to_string());
            } else if (*addr == cidr.broadcast()) {
                parser.error(*f, "ipv4 {} is the broadcast address of {}", text, cidr.to_string());
            } else if (net->gateway_valid && *addr == net->config.gateway) {
                parser.error(*f, "ipv4 {} is the gateway address of network '{}'", text,
                             net->config.name);
            } else {
                claim(parser.known().addresses, *addr, *f, "ipv4", text);
            }
        }
    }

    // A socket is set only when `port` is one valid mapping with a `socket` key. Another host's
    // sockets are its own business.
    if (!inst.port.socket.empty() && local) {
        const Field* port = m.get("port");
        const Field f{port->key, port->value["socket"]};
        if (inst.port.socket == parser.config().control.socket)
            parser.error(f, "socket {} is the control socket (control.socket)", inst.port.socket);
        else
            claim(parser.known().sockets, inst.port.socket, f, "socket", inst.port.socket);
    }
}

// The id of user (or group) `text`: a name this host knows, or a number.
std::optional<uint32_t> file_owner_id(const std::string& text, bool group) {
    uint32_t id = 0;
    if (!text.empty() && std::from_chars(text.data(), text.data() + text.size(), id).ptr == text.data() + text.size())
        return id;
    std::vector<char> buf(16384);
    if (group) {
        struct group g{}, *found = nullptr;
        if (getgrnam_r(text.c_str(), &g, buf.data(), buf.size(), &found) == 0 && found) return found->gr_gid;
    } else {
        struct passwd pw{}, *found = nullptr;
        if (getpwnam_r(text.c_str(), &pw, buf.data(), buf.size(), &found) == 0 && found) return found->pw_uid;
    }
    return std::nullopt;
}

// `mode` is the vhost-user role (server, client) or, for a socket calyx creates, its file mode
// in octal; `owner` and `group` give that file to a user and group (names or numeric ids).
void port_socket_access(Parser& parser, const Mapping& m, PortConfig& port) {
    if (const Field* f = m.get("mode")) {
        if (const auto mode = parser.scalar(*f, "'mode'", "server, client or an octal file mode")) {
            uint32_t bits = 0;
            const bool octal = !mode->empty() && mode->size() <= 4 &&
                               std::from_chars(mode->data(), mode->data() + mode->size(), bits, 8).ptr ==
                                   mode->data() + mode->size();
            if (*mode == "server")
                port.mode = VhostMode::server;
            else if (*mode == "client")
                port.mode = VhostMode::client;
            else if (octal && bits <= 0777)
                port.socket_mode = bits;
            else
                parser.error(*f, "'mode' must be server, client, or the socket file's mode in octal (e.g. \"0660\"), got '{}'",
                             *mode);
        }
    }
    for (const bool group : {false, true}) {
        const Field* f = m.get(group ? "group" : "owner");
        if (!f) continue;
        const auto text = parser.scalar(*f, group ? "'group'" : "'owner'", group ? "a group name or id" : "a user name or id");
        if (!text) continue;
        if (const auto id = file_owner_id(*text, group))
            (group ? port.group : port.owner) = FileOwner{*text, *id};
        else
            parser.error(*f, "{} '{}' does not exist on this host", group ? "group" : "user", *text);
    }
    if (port.mode == VhostMode::client && (port.owner || port.group || port.socket_mode))
        parser.error(m.node, "owner, group and a file mode apply to a socket calyx creates (server mode); in client "
                             "mode QEMU creates the socket");
}

std::optional<PortConfig> instance_port(Parser& parser, const Field& field) {
    const auto m = parser.mapping(field, "'port'", "in port", kPortKeys);
    if (!m) return std::nullopt;
    parser.report_duplicates(*m, "in port");
    parser.require(*m, "port", std::array<std::string_view, 2>{"type", "socket"});
    bool ok = m->get("type") && m->get("socket");
    PortConfig port;
    port.where = parser.at(m->node);

    if (const Field* f = m->get("type")) {
        const auto type = parser.scalar(*f, "'type'", "a port type");
        if (type == "vhost-user") {
            port.type = PortType::vhost_user;
        } else if (type == "tap" || type == "af_packet" || type == "pci") {
            parser.error(*f,
                         "port type '{}' is for the uplink, not for instances: instances attach "
                         "over vhost-user",
                         *type);
            ok = false;
        } else if (type) {
            parser.error(*f, "port type '{}' is unknown; instances attach over 'vhost-user'",
                         *type);
            ok = false;
        } else {
            ok = false;
        }
    }
    if (const Field* f = m->get("socket")) {
        if (auto path = parser.socket_path(*f, "'socket'"))
            port.socket = std::move(*path);
        else
            ok = false;
    }
    port_socket_access(parser, *m, port);
    if (const Field* f = m->get("queues"))
        if (const auto v = parser.integer(*f, "'queues'", 1, 8))
            port.queues = static_cast<uint16_t>(*v);
    if (!ok) return std::nullopt;
    return port;
}

// Instance names are unique: `names` holds the first entry of each.
void instance(Parser& parser, const Field& field,
              std::map<std::string, FirstInstance, std::less<>>& names) {
    const auto m = parser.mapping(field, "entry of 'instances'", "in instance", kInstanceKeys);
    if (!m) return;
    InstanceConfig inst;
    inst.where = parser.at(m->node);

    std::string owner = "instance";
    const Field* name_field = m->get("name");
    if (name_field) {
        if (const auto n = parser.name(*name_field, "instance")) {
            inst.name = *n;
            owner = fmt::format("instance '{}'", *n);
        }
    }
    inst.host = parser.config().host;
    bool host_known = true;  // an invalid host says nothing about where the instance runs
    if (const Field* f = m->get("host")) {
        auto host = parser.name(*f, "host");
        host_known = host.has_value();
        if (host) inst.host = std::move(*host);
    }
    const bool local = host_known && inst.host == parser.config().host;

    // Every way of writing a second port gets the same explanation: a `ports` list, a repeated
    // `port` key, a list under `port`, or (below) the instance listed again with another port.
    const Field* ports = m->get("ports");
    if (ports) {
        if (ports->value.IsSequence() && ports->value.size() > 1)
            parser.error(ports->value[1], "{} {}", owner, kSecondPort);
        else
            parser.error(ports->key, "unknown key 'ports' in instance; did you mean 'port'?");
    }
    for (const Field& dup : m->duplicates) {
        if (dup.key.Scalar() == "port")
            parser.error(dup.key, "{} {}", owner, kSecondPort);
        else
            parser.duplicate_key(*m, dup, "in instance");
    }
    const Field* port_field = m->get("port");
    if (port_field && port_field->value.IsSequence() && port_field->value.size() > 1) {
        parser.error(port_field->value[1], "{} {}", owner, kSecondPort);
    } else if (port_field) {
        if (auto port = instance_port(parser, *port_field)) inst.port = std::move(*port);
    }
    // A `ports` key already explains what is wrong with the port; don't also say it is missing.
    // Another host's instance is attached there: no port, and its MAC only if known.
    if (!local)  // (or not known to be)
        parser.require(*m, owner, std::array<std::string_view, 3>{"name", "network", "ipv4"});
    else if (ports)
        parser.require(*m, owner,
                       std::array<std::string_view, 4>{"name", "network", "mac", "ipv4"});
    else
        parser.require(*m, owner,
                       std::array<std::string_view, 5>{"name", "network", "mac", "ipv4", "port"});

    // The same instance listed again: with a different port it is an attempt at a second
    // interface, otherwise a plain duplicate. Either way its addresses would only repeat the
    // first entry's, so they are not checked for uniqueness.
    bool repeated = false;
    if (!inst.name.empty()) {
        const auto [it, inserted] = names.try_emplace(
            inst.name, FirstInstance{parser.at(*name_field).line, inst.port.socket});
        if (!inserted) {
            repeated = true;
            const FirstInstance& first = it->second;
            if (!inst.port.socket.empty() && !first.socket.empty() &&
                inst.port.socket != first.socket) {
                parser.error(*port_field, "{} {}", owner, kSecondPort);
            } else {
                parser.error(*name_field, "duplicate instance name '{}' (first at line {})",
                             inst.name, first.line);
            }
        }
    }
    instance_addresses(parser, *m, inst, /*check_unique=*/!repeated);

    if (const Field* f = m->get("security_groups")) instance_groups(parser, *f, inst);
    inst.limits = parser.config().limits;
    if (const Field* f = m->get("limits"))
        read_limits_into(parser, *f, inst.limits, fmt::format("in the limits of {}", owner));
    parser.config().instances.push_back(std::move(inst));
}

}  // namespace

void read_instances(Parser& parser, const Field& field) {
    const auto items = parser.list(field, "'instances'");
    if (!items) return;
    std::map<std::string, FirstInstance, std::less<>> names;
    for (const Field& item : *items) instance(parser, item, names);
}

}  // namespace calyx::config
