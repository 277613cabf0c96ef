// datastore: where the site's networks, security groups and instances come from. `none` (the
// default): this file. `etcd`: the keys networking-calico writes for Felix (cp/datastore/), and
// the file keeps only what is this host's own. Read last, so that it can tell the file that
// declares the site's sections as well that the datastore holds them.
#include "cp/config/sections.hpp"

#include <algorithm>
#include <array>

namespace calyx::config {
namespace {

constexpr std::string_view kDatastoreKeys[] = {"type",        "endpoints", "prefix",
                                               "port_socket", "region",    "networks"};
constexpr std::string_view kNetworkKeys[] = {"id", "kind", "mtu"};
constexpr std::string_view kTypeWords[] = {"none", "etcd"};
constexpr std::string_view kInterfacePlaceholder = "{interface}";
constexpr size_t kMaxUnixSocketPath = 107;  // sizeof(sockaddr_un::sun_path) - 1
constexpr size_t kMaxInterfaceName = 15;    // IFNAMSIZ - 1
// networking-calico's limit: the namespace "openstack-region-<region>" is a DNS label (63).
constexpr size_t kMaxRegion = 63 - std::string_view{"openstack-region-"}.size();

// http://HOST[:PORT] or https://HOST[:PORT], nothing after but an optional '/'.
bool is_endpoint_url(std::string_view url) {
    for (std::string_view scheme : {"http://", "https://"}) {
        if (!url.starts_with(scheme)) continue;
        std::string_view rest = url.substr(scheme.size());
        if (rest.ends_with('/')) rest.remove_suffix(1);
        return !rest.empty() && std::ranges::none_of(rest, [](char c) {
            return c == '/' || c == ' ' || c == '\t' || c == '?' || c == '#' || c == '@';
        });
    }
    return false;
}

// A DNS label, as networking-calico requires of openstack_region.
bool is_dns_label(std::string_view text) {
    const auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    return !text.empty() && alnum(text.front()) && alnum(text.back()) &&
           std::ranges::all_of(text, [&](char c) { return alnum(c) || c == '-'; });
}

void read_type(Parser& parser, const Field& f, DatastoreConfig& ds) {
    const auto type = parser.scalar(f, "'type'", "none or etcd");
    if (!type) return;
    if (*type == "none")
        ds.type = DatastoreType::none;
    else if (*type == "etcd")
        ds.type = DatastoreType::etcd;
    else
        parser.error(f, "'type' must be none or etcd, got '{}'{}", *type, suggestion(*type, kTypeWords));
}

void read_endpoints(Parser& parser, const Field& f, DatastoreConfig& ds) {
    const auto items = parser.list(f, "'endpoints'");
    if (!items) return;
    if (items->empty()) {
        parser.error(f, "'endpoints' must name at least one etcd client URL");
        return;
    }
    std::vector<std::string> urls;
    for (const Field& item : *items) {
        const auto url = parser.scalar(item, "entry of 'endpoints'", "a URL like http://127.0.0.1:2379");
        if (!url) continue;
        if (!is_endpoint_url(*url)) {
            parser.error(item, "entry of 'endpoints' must be a URL like http://127.0.0.1:2379 (http or https, "
                               "host and port, no path), got '{}'",
                         *url);
            continue;
        }
        urls.push_back(*url);
    }
    ds.endpoints = std::move(urls);
}

void read_prefix(Parser& parser, const Field& f, DatastoreConfig& ds) {
    const auto prefix = parser.scalar(f, "'prefix'", "a key prefix like /calico");
    if (!prefix) return;
    if (!prefix->starts_with('/') || prefix->size() < 2 || prefix->ends_with('/') ||
        std::ranges::any_of(*prefix, [](char c) { return c == ' ' || c == '\t' || c == '\n'; }))
        parser.error(f, "'prefix' must be a key prefix like /calico: a leading '/', no trailing '/', no spaces; "
                        "got '{}'",
                     *prefix);
    else
        ds.prefix = *prefix;
}

// An absolute path with "{interface}" once, short enough for any interface name.
void read_port_socket(Parser& parser, const Field& f, DatastoreConfig& ds) {
    const auto path = parser.scalar(f, "'port_socket'", "a socket path with {interface} in it");
    if (!path) return;
    const size_t at = path->find(kInterfacePlaceholder);
    const bool once = at != std::string::npos && path->find(kInterfacePlaceholder, at + 1) == std::string::npos;
    const size_t longest = path->size() - kInterfacePlaceholder.size() + kMaxInterfaceName;
    if (!path->starts_with('/')) {
        parser.error(f, "'port_socket' must be an absolute path, got '{}'", *path);
    } else if (!once) {
        parser.error(f,
                     "'port_socket' must contain {} exactly once (each endpoint's interfaceName takes its place), "
                     "got '{}'",
                     kInterfacePlaceholder, *path);
    } else if (std::ranges::count(*path, '{') != 1 || std::ranges::count(*path, '}') != 1) {
        parser.error(f, "'port_socket' may contain no braces but those of {}, got '{}'", kInterfacePlaceholder,
                     *path);
    } else if (longest > kMaxUnixSocketPath) {
        parser.error(f,
                     "'port_socket' is too long: with a {}-byte interface name it is {} bytes, and a unix "
                     "socket path holds at most {}",
                     kMaxInterfaceName, longest, kMaxUnixSocketPath);
    } else {
        ds.port_socket = *path;
    }
}

void read_region(Parser& parser, const Field& f, DatastoreConfig& ds) {
    const auto region = parser.scalar(f, "'region'", "networking-calico's openstack_region");
    if (!region) return;
    if (!is_dns_label(*region) || region->size() > kMaxRegion)
        parser.error(f,
                     "'region' must be networking-calico's openstack_region: lower-case letters, digits and '-', "
                     "starting and ending with a letter or digit, at most {} characters; got '{}'",
                     kMaxRegion, *region);
    else
        ds.region = *region;
}

void read_network(Parser& parser, const Field& field, DatastoreConfig& ds,
                  std::map<std::string, int, std::less<>>& ids) {
    const auto m = parser.mapping(field, "entry of 'networks'", "in datastore network", kNetworkKeys);
    if (!m) return;
    parser.report_duplicates(*m, "in datastore network");
    DatastoreNetwork net;
    net.where = parser.at(m->node);
    bool ok = true;
    if (const Field* f = m->get("id")) {
        if (auto id = parser.name(*f, "network")) {
            const auto [it, inserted] = ids.try_emplace(*id, parser.at(*f).line);
            if (!inserted) {
                parser.error(*f, "network '{}' is listed twice (first at line {})", *id, it->second);
                ok = false;
            }
            net.id = std::move(*id);
        } else {
            ok = false;
        }
    }
    parser.require(*m, "datastore network", std::array<std::string_view, 2>{"id", "kind"});
    if (const Field* f = m->get("kind")) {
        if (const auto kind = read_network_kind(parser, *f))
            net.kind = *kind;
        else
            ok = false;
    }
    // As for a network of the file: 576 (RFC 791) to 9000 (jumbo frames).
    if (const Field* f = m->get("mtu")) {
        if (const auto v = parser.integer(*f, "'mtu'", 576, 9000))
            net.mtu = static_cast<uint16_t>(*v);
        else
            ok = false;
    }
    if (ok && m->get("id") && m->get("kind")) ds.networks.push_back(std::move(net));
}

// With a datastore the site is etcd's; a section of the file that declares part of it too is
// refused where it starts, so that nobody wonders which of the two is in force.
void refuse_site_sections(Parser& parser, const DatastoreConfig& ds) {
    const auto refuse = [&](std::string_view section, const SourceLocation& where) {
        parser.error(where, fmt::format(
                     "'{}' is declared here and the site comes from the datastore (datastore.type etcd, line {}): "
                     "the datastore's {} are the ones in force; remove this section, or set datastore.type to none",
                     section, ds.where.line, section));
    };
    if (!parser.known().networks.empty()) refuse("networks", parser.known().networks.front().config.where);
    if (!parser.config().security_groups.empty())
        refuse("security_groups", parser.config().security_groups.front().where);
    if (!parser.config().instances.empty()) refuse("instances", parser.config().instances.front().where);
}

}  // namespace

void read_datastore(Parser& parser, const Field& field) {
    const auto m = parser.mapping(field, "'datastore'", "in datastore", kDatastoreKeys);
    if (!m) return;
    parser.report_duplicates(*m, "in datastore");
    DatastoreConfig& ds = parser.config().datastore;
    ds.where = parser.at(m->node);
    if (const Field* f = m->get("type")) read_type(parser, *f, ds);
    if (const Field* f = m->get("endpoints")) read_endpoints(parser, *f, ds);
    if (const Field* f = m->get("prefix")) read_prefix(parser, *f, ds);
    if (const Field* f = m->get("port_socket")) read_port_socket(parser, *f, ds);
    if (const Field* f = m->get("region")) read_region(parser, *f, ds);
    if (const Field* f = m->get("networks")) {
        if (const auto items = parser.list(*f, "'networks'")) {
            std::map<std::string, int, std::less<>> ids;
            for (const Field& item : *items) read_network(parser, item, ds, ids);
        }
    }
    if (ds.type == DatastoreType::etcd) refuse_site_sections(parser, ds);
}

}  // namespace calyx::config
