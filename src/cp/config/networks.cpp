// networks: the instance networks, each with its kind, addresses and what DHCP hands out.
#include "cp/config/sections.hpp"

#include <array>

namespace calyx::config {
namespace {

constexpr std::string_view kNetworkKeys[] = {"name",   "kind", "cidr",          "gateway", "dns",
                                             "domain", "mtu",  "lease_seconds", "routes"};

// Dot-separated labels of 1 to 63 letters, digits and hyphens; at most 253 characters.
bool is_dns_name(std::string_view name) {
    if (name.empty() || name.size() > 253) return false;
    size_t label = 0;
    for (char c : name) {
        if (c == '.') {
            if (label == 0) return false;
            label = 0;
            continue;
        }
        const bool ok =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
        if (!ok || ++label > 63) return false;
    }
    return label > 0;
}

// The size of a network, and its place among reserved ranges and the networks before it.
bool network_cidr_usable(Parser& parser, const Field& f, const Ipv4Prefix& cidr) {
    const std::string text = cidr.to_string();
    if (cidr.length < 8) {
        parser.error(
            f,
            "cidr {} is too large: the whole cidr is routed to this network's instances, so "
            "a prefix shorter than /8 would capture a large share of all IPv4 destinations",
            text);
        return false;
    }
    if (cidr.length > 30) {
        parser.error(f,
                     "cidr {} is too small: a network needs a network address, a gateway, at least "
                     "one instance address and a broadcast address, so its prefix is at most /30",
                     text);
        return false;
    }
    for (const auto& reserved : kReserved) {
        if (reserved.prefix.contains(cidr)) {
            parser.error(f, "cidr {} is inside {} ({}), which is never assigned to hosts", text,
                         reserved.prefix.to_string(), reserved.what);
            return false;
        }
    }
    // Checked against the networks before this one, so each overlap is reported once.
    bool usable = true;
    for (const NetworkEntry& other : parser.known().networks) {
        const Ipv4Prefix& theirs = other.config.cidr;
        if (other.cidr_valid && (theirs.contains(cidr) || cidr.contains(theirs))) {
            parser.error(
                f,
                "cidr {} overlaps {} of network '{}' (line {}): networks share one routing "
                "table, so their addresses must not overlap",
                text, theirs.to_string(), other.config.name, other.config.where.line);
            usable = false;
        }
    }
    return usable;
}

void network_addresses(Parser& parser, const Mapping& m, NetworkEntry& entry) {
    NetworkConfig& net = entry.config;
    if (const Field* f = m.get("cidr")) {
        if (const auto cidr = parser.prefix(*f, "'cidr'")) {
            net.cidr = *cidr;
            entry.cidr_valid = network_cidr_usable(parser, *f, *cidr);
        }
    }
    const Field* f = m.get("gateway");
    if (!f) return;
    const auto gateway = parser.ipv4(*f, "'gateway'");
    if (!gateway) return;
    net.gateway = *gateway;
    if (!entry.cidr_valid) return;  // nothing to check it against
    const std::string text = gateway->to_string();
    const std::string cidr = net.cidr.to_string();
    if (!net.cidr.contains(*gateway)) {
        parser.error(*f, "gateway {} is outside cidr {}", text, cidr);
    } else if (*gateway == net.cidr.addr) {
        parser.error(*f, "gateway {} is the network address of {}", text, cidr);
    } else if (*gateway == net.cidr.broadcast()) {
        parser.error(*f, "gateway {} is the broadcast address of {}", text, cidr);
    } else {
        entry.gateway_valid = true;
    }
}

// Names are unique: `names` holds the line of each one's first use.
void network(Parser& parser, const Field& field, std::map<std::string, int, std::less<>>& names) {
    const auto m = parser.mapping(field, "entry of 'networks'", "in network", kNetworkKeys);
    if (!m) return;
    parser.report_duplicates(*m, "in network");
    NetworkEntry entry;
    NetworkConfig& net = entry.config;
    net.where = parser.at(m->node);

    std::string owner = "network";
    if (const Field* f = m->get("name")) {
        if (const auto n = parser.name(*f, "network")) {
            net.name = *n;
            owner = fmt::format("network '{}'", *n);
            const auto [it, inserted] = names.try_emplace(*n, parser.at(*f).line);
            if (!inserted)
                parser.error(*f, "duplicate network name '{}' (first at line {})", *n, it->second);
        }
    }
    parser.require(*m, owner, std::array<std::string_view, 4>{"name", "kind", "cidr", "gateway"});

    if (const Field* f = m->get("kind")) {
        if (const auto kind = read_network_kind(parser, *f)) net.kind = *kind;
    }
    network_addresses(parser, *m, entry);
    if (const Field* f = m->get("dns")) {
        if (const auto items = parser.list(*f, "'dns'"))
            for (const Field& item : *items)
                if (const auto addr = parser.ipv4(item, "entry of 'dns'")) net.dns.push_back(*addr);
    }
    if (const Field* f = m->get("domain")) {
        if (const auto domain = parser.scalar(*f, "'domain'", "a DNS name")) {
            if (is_dns_name(*domain))
                net.domain = *domain;
            else
                parser.error(*f,
                             "'domain' must be a DNS name (dot-separated labels of 1 to 63 "
                             "letters, digits and '-'), got '{}'",
                             *domain);
        }
    }
    // 576: the minimum datagram every IPv4 host must accept (RFC 791); 9000: jumbo frames.
    if (const Field* f = m->get("mtu"))
        if (const auto v = parser.integer(*f, "'mtu'", 576, 9000))
            net.mtu = static_cast<uint16_t>(*v);
    if (const Field* f = m->get("lease_seconds"))
        if (const auto v = parser.integer(*f, "'lease_seconds'", 60, uint64_t{1} << 31))
            net.lease_seconds = static_cast<uint32_t>(*v);
    if (const Field* f = m->get("routes")) {
        if (const auto items = parser.list(*f, "'routes'"))
            for (const Field& item : *items)
                if (const auto p = parser.prefix(item, "route")) net.routes.push_back(*p);
    }
    parser.known().networks.push_back(std::move(entry));
}

}  // namespace

void read_networks(Parser& parser, const Field& field) {
    const auto items = parser.list(field, "'networks'");
    if (!items) return;
    std::map<std::string, int, std::less<>> names;
    for (const Field& item : *items) network(parser, item, names);
}

}  // namespace calyx::config
