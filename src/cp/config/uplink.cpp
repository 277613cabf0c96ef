// uplink: the way out to the provider network, its port, the host's address and the
// masquerade port range. Read after the networks, which its subnet must not overlap.
#include "cp/config/sections.hpp"

#include <algorithm>
#include <array>

namespace calyx::config {
namespace {

constexpr std::string_view kUplinkKeys[] = {"port", "address", "gateway", "nat_ports"};
// The uplink port types, in UplinkPort's order: the `type` that names each, the one key that
// names its device, and how that key is read.
struct UplinkPortKind {
    std::string_view type;
    std::string_view device_key;
    // Reads and checks the device key; if it is valid, `port` becomes this kind of port.
    void (*read_device)(Parser& parser, const Field& field, std::string_view label,
                        UplinkPort& port);
};

template <typename Port>
constexpr UplinkPortKind kind_of(decltype(UplinkPortKind::read_device) read_device) {
    return {Port::kType, Port::kDeviceKey, read_device};
}

void read_tap(Parser& parser, const Field& f, std::string_view label, UplinkPort& port) {
    if (auto v = parser.interface_name(f, label)) port = TapPort{std::move(*v)};
}

void read_af_packet(Parser& parser, const Field& f, std::string_view label, UplinkPort& port) {
    if (auto v = parser.interface_name(f, label)) port = AfPacketPort{std::move(*v)};
}

void read_pci(Parser& parser, const Field& f, std::string_view label, UplinkPort& port) {
    if (auto v = parser.pci_address(f, label)) port = PciPort{std::move(*v)};
}

void read_vhost_user(Parser& parser, const Field& f, std::string_view label, UplinkPort& port) {
    auto v = parser.socket_path(f, label);
    if (!v) return;
    if (*v == parser.config().control.socket)
        parser.error(f, "socket {} is the control socket (control.socket)", *v);
    else
        parser.known().sockets.try_emplace(*v, FirstUse{"the uplink", f.key.Mark().line + 1});
    port = VhostUserPort{std::move(*v)};
}

constexpr UplinkPortKind kUplinkPortKinds[] = {
    kind_of<TapPort>(read_tap), kind_of<AfPacketPort>(read_af_packet), kind_of<PciPort>(read_pci),
    kind_of<VhostUserPort>(read_vhost_user)};
static_assert(std::size(kUplinkPortKinds) == std::variant_size_v<UplinkPort>);

constexpr auto kUplinkPortWords = [] {
    std::array<std::string_view, std::size(kUplinkPortKinds)> words{};
    for (size_t i = 0; i < words.size(); ++i) words[i] = kUplinkPortKinds[i].type;
    return words;
}();

// Every key of every uplink port type; which ones a port may have depends on its type.
constexpr auto kUplinkPortKeys = [] {
    std::array<std::string_view, std::size(kUplinkPortKinds) + 2> keys{"type"};
    for (size_t i = 0; i < std::size(kUplinkPortKinds); ++i)
        keys[i + 1] = kUplinkPortKinds[i].device_key;
    keys.back() = "queues";
    return keys;
}();

// "tap, af_packet, pci or vhost-user"
std::string one_of_port_types() {
    std::string text;
    for (size_t i = 0; i < kUplinkPortWords.size(); ++i)
        text += fmt::format("{}{}",
                            i == 0                             ? ""
                            : i + 1 == kUplinkPortWords.size() ? " or "
                                                               : ", ",
                            kUplinkPortWords[i]);
    return text;
}

// Masquerade source ports: never the well-known ports, and enough of them to be worth a range.
constexpr uint64_t kMinNatPort = 1024;
constexpr uint64_t kMinNatPorts = 64;

constexpr std::string_view kUplinkOverlap =
    "the uplink subnet and the networks share one routing table, so their addresses must not "
    "overlap";

// The keys a port may have depend on its type, so the type is looked at before the mapping
// is read: a typo is then suggested among that type's keys, and another type's device key
// among them gets this type's one.
void uplink_port(Parser& parser, const Field& field, UplinkConfig& up) {
    const UplinkPortKind* kind = nullptr;
    if (field.value.IsMap()) {
        // A missing key is an invalid node, which throws on anything but IsDefined.
        if (const Node type = field.value["type"]; type.IsDefined() && type.IsScalar()) {
            const auto it =
                std::ranges::find(kUplinkPortKinds, type.Scalar(), &UplinkPortKind::type);
            if (it != std::end(kUplinkPortKinds)) kind = &*it;
        }
    }
    const std::array<std::string_view, 3> own_keys{"type", kind ? kind->device_key : "", "queues"};
    const std::string context = kind ? fmt::format("in {} port", kind->type) : "in uplink port";
    const auto m =
        parser.mapping(field, "'port'", context, kUplinkPortKeys, kind ? Keys{own_keys} : Keys{});
    if (!m) return;
    parser.report_duplicates(*m, context);
    parser.require(*m, "uplink port", std::array<std::string_view, 1>{"type"});
    if (kind) {
        parser.require(*m, fmt::format("{} port", kind->type),
                       std::array<std::string_view, 1>{kind->device_key});
    } else if (const Field* f = m->get("type")) {
        const std::string types = one_of_port_types();
        if (const auto type = parser.scalar(*f, "'type'", types))
            parser.error(*f, "'type' must be {}, got '{}'{}", types, *type,
                         suggestion(*type, kUplinkPortWords));
    }

    // Each device key is checked by its own rule, unless the type says it is the wrong key.
    for (const UplinkPortKind& owner : kUplinkPortKinds) {
        const Field* f = m->get(owner.device_key);
        if (!f) continue;
        if (kind && kind != &owner) {
            const std::string hint = m->get(kind->device_key)
                                         ? ""
                                         : fmt::format("; did you mean '{}'?", kind->device_key);
            parser.error(f->key, "unknown key '{}' {}{}", owner.device_key, context, hint);
            continue;
        }
        owner.read_device(parser, *f, fmt::format("'{}'", owner.device_key), up.port);
    }
    if (const Field* f = m->get("queues")) {
        const size_t workers = parser.config().dataplane.workers.size();
        if (const auto v = parser.integer(*f, "'queues'", 1, 8)) {
            if (*v < workers)
                parser.error(*f,
                             "'queues' is {} but dataplane.workers lists {} workers, each of which "
                             "transmits on an uplink queue of its own: at least {}",
                             *v, workers, workers);
            else
                up.queues = static_cast<uint16_t>(*v);
        }
    }
}

// "a.b.c.d/len": the host's address with the length of its subnet. True if the subnet is
// usable, so that the gateway can be checked against it.
bool uplink_address(Parser& parser, const Field& f, UplinkConfig& up) {
    constexpr std::string_view kExpected =
        "an IPv4 address with its prefix length like 198.51.100.10/24";
    const auto text = parser.scalar(f, "'address'", kExpected);
    if (!text) return false;
    const auto parsed = Ipv4Prefix::parse(*text, /*allow_host_bits=*/true);
    if (!parsed) {
        if (Ipv4Addr::parse(*text))
            parser.error(
                f, "'address' {} has no prefix length; write it with its subnet's, like {}/24",
                *text, *text);
        else
            parser.error(f, "'address' must be {}, got '{}'", kExpected, *text);
        return false;
    }
    up.address = *Ipv4Addr::parse(std::string_view{*text}.substr(0, text->find('/')));
    up.prefix_length = parsed->length;
    const Ipv4Prefix subnet = up.subnet();
    const std::string addr = up.address.to_string();
    const std::string net = subnet.to_string();

    if (subnet.length < 8) {
        parser.error(
            f,
            "uplink subnet {} is too large: all of it is reached directly on the uplink, so "
            "a prefix shorter than /8 would put a large share of all IPv4 destinations on "
            "one link",
            net);
        return false;
    }
    if (subnet.length > 30) {
        parser.error(
            f,
            "uplink subnet {} is too small: it needs a network address, the host's address, "
            "the gateway and a broadcast address, so its prefix is at most /30",
            net);
        return false;
    }
    for (const auto& reserved : kReserved) {
        if (reserved.prefix.contains(subnet)) {
            parser.error(f, "address {} is inside {} ({}), which is never assigned to hosts", addr,
                         reserved.prefix.to_string(), reserved.what);
            return false;
        }
    }
    if (up.address == subnet.addr) {
        parser.error(f, "address {} is the network address of {}", addr, net);
        return true;
    }
    if (up.address == subnet.broadcast()) {
        parser.error(f, "address {} is the broadcast address of {}", addr, net);
        return true;
    }
    // Against every network, wherever it is in the file: the uplink is read after them.
    for (const NetworkEntry& other : parser.known().networks) {
        const NetworkConfig& n = other.config;
        if (other.gateway_valid && n.gateway == up.address) {
            parser.error(f, "address {} is the gateway address of network '{}'", addr, n.name);
        } else if (!other.cidr_valid) {
            continue;
        } else if (n.cidr.contains(up.address)) {
            parser.error(f, "address {} is inside network '{}' ({}, line {}): {}", addr, n.name,
                         n.cidr.to_string(), n.where.line, kUplinkOverlap);
        } else if (n.cidr.contains(subnet) || subnet.contains(n.cidr)) {
            parser.error(f, "uplink subnet {} overlaps {} of network '{}' (line {}): {}", net,
                         n.cidr.to_string(), n.name, n.where.line, kUplinkOverlap);
        }
    }
    return true;
}

// The upstream router: another host of the uplink subnet.
void uplink_gateway(Parser& parser, const Field& f, UplinkConfig& up, bool subnet_valid) {
    const auto gateway = parser.ipv4(f, "'gateway'");
    if (!gateway) return;
    up.gateway = *gateway;
    if (!subnet_valid) return;  // nothing to check it against
    const Ipv4Prefix subnet = up.subnet();
    const std::string text = gateway->to_string();
    if (!subnet.contains(*gateway))
        parser.error(f, "gateway {} is outside the uplink subnet {}", text, subnet.to_string());
    else if (*gateway == subnet.addr)
        parser.error(f, "gateway {} is the network address of {}", text, subnet.to_string());
    else if (*gateway == subnet.broadcast())
        parser.error(f, "gateway {} is the broadcast address of {}", text, subnet.to_string());
    else if (*gateway == up.address)
        parser.error(f, "gateway {} is the uplink address itself; it must be the upstream router's",
                     text);
}

// "min-max", inclusive: the source ports masquerade may give connections.
void uplink_nat_ports(Parser& parser, const Field& f, UplinkConfig& up) {
    constexpr std::string_view kExpected = "a port range like 20000-59999";
    const auto text = parser.scalar(f, "'nat_ports'", kExpected);
    if (!text) return;
    const std::string_view range{*text};
    const size_t dash = range.find('-');
    const auto first =
        dash == std::string_view::npos ? std::nullopt : parse_unsigned(range.substr(0, dash));
    const auto last =
        dash == std::string_view::npos ? std::nullopt : parse_unsigned(range.substr(dash + 1));
    if (!first || !last) {
        parser.error(f, "'nat_ports' must be {}, got '{}'", kExpected, *text);
        return;
    }
    const auto in_range = [](uint64_t port) { return port >= kMinNatPort && port <= 65535; };
    if (!in_range(*first) || !in_range(*last)) {
        parser.error(f, "'nat_ports' must be between {} and 65535 at both ends, got {}",
                     kMinNatPort, *text);
        return;
    }
    if (*first > *last) {
        parser.error(f, "'nat_ports' range {} is reversed; did you mean {}-{}?", *text, *last,
                     *first);
        return;
    }
    if (const uint64_t count = *last - *first + 1; count < kMinNatPorts) {
        parser.error(f, "'nat_ports' range {} has only {} port{}; masquerade needs at least {}",
                     *text, count, count == 1 ? "" : "s", kMinNatPorts);
        return;
    }
    up.nat_port_min = static_cast<uint16_t>(*first);
    up.nat_port_max = static_cast<uint16_t>(*last);
}

}  // namespace

void read_uplink(Parser& parser, const Field& field) {
    const auto m = parser.mapping(field, "'uplink'", "in uplink", kUplinkKeys);
    if (!m) return;
    parser.report_duplicates(*m, "in uplink");
    parser.require(*m, "uplink", std::array<std::string_view, 3>{"port", "address", "gateway"});
    UplinkConfig up;
    up.where = parser.at(m->node);

    if (const Field* f = m->get("port")) uplink_port(parser, *f, up);
    const Field* address = m->get("address");
    const bool subnet_valid = address && uplink_address(parser, *address, up);
    if (const Field* f = m->get("gateway")) uplink_gateway(parser, *f, up, subnet_valid);
    if (const Field* f = m->get("nat_ports")) uplink_nat_ports(parser, *f, up);
    parser.config().uplink = std::move(up);
}

}  // namespace calyx::config
