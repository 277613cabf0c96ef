// YAML -> validated Config.
//
// One pass over the YAML tree reads every section and records every error with the location
// of the node it concerns; cross-entry rules (unique names, MACs, addresses, sockets, network
// overlap, instance -> network) are checked as entries are read, against the entries before
// them; the uplink is read after every network and checked against all of them. Errors are
// sorted by position at the end, so the user reads them top to bottom.
// yaml-cpp throws; nothing it throws leaves this file.
#include "calyx/config.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <span>
#include <sstream>

#include <fmt/format.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include "calyx/headers.hpp"

namespace calyx::config {

std::string Error::to_string() const {
    return fmt::format("{}:{}:{}: {}", where.file, where.line, where.column, message);
}

std::string_view to_string(VhostMode mode) {
    switch (mode) {
        case VhostMode::server:
            return "server";
        case VhostMode::client:
            return "client";
    }
    return "?";
}

std::string_view to_string(UplinkPortType type) {
    switch (type) {
        case UplinkPortType::tap:
            return "tap";
        case UplinkPortType::af_packet:
            return "af_packet";
        case UplinkPortType::pci:
            return "pci";
        case UplinkPortType::vhost_user:
            return "vhost-user";
    }
    return "?";
}

const NetworkConfig* Config::find_network(std::string_view name) const {
    auto it = std::ranges::find(networks, name, &NetworkConfig::name);
    return it == networks.end() ? nullptr : &*it;
}

std::string_view to_string(RuleDirection direction) {
    switch (direction) {
        case RuleDirection::ingress:
            return "ingress";
        case RuleDirection::egress:
            return "egress";
    }
    return "?";
}

const InstanceConfig* Config::find_instance(std::string_view name) const {
    auto it = std::ranges::find(instances, name, &InstanceConfig::name);
    return it == instances.end() ? nullptr : &*it;
}

const SecurityGroupConfig* Config::find_security_group(std::string_view name) const {
    auto it = std::ranges::find(security_groups, name, &SecurityGroupConfig::name);
    return it == security_groups.end() ? nullptr : &*it;
}

namespace {

using YAML::Node;
using Keys = std::span<const std::string_view>;

constexpr std::string_view kTopKeys[] = {"dataplane", "control",         "metrics", "networks",
                                         "instances", "security_groups", "uplink"};
constexpr std::string_view kDataplaneKeys[] = {
    "workers",           "eal_args", "gateway_mac", "icmp_errors_per_second",
    "icmp_errors_burst", "mbufs",    "conntrack"};
constexpr std::string_view kControlKeys[] = {"socket"};
constexpr std::string_view kMetricsKeys[] = {"listen"};
constexpr std::string_view kNetworkKeys[] = {"name",   "kind", "cidr",          "gateway", "dns",
                                             "domain", "mtu",  "lease_seconds", "routes"};
// `ports` is not a key of the contract; it is accepted here only to explain why an instance
// cannot have more than one.
constexpr std::string_view kInstanceKeys[] = {"name", "network",         "mac",  "ipv4",
                                              "port", "security_groups", "ports"};
constexpr std::string_view kPortKeys[] = {"type", "socket", "mode", "queues"};
constexpr std::string_view kGroupKeys[] = {"name", "rules"};
constexpr std::string_view kUplinkKeys[] = {"port", "address", "gateway", "nat_ports"};
// Every key of every uplink port type; which ones a port may have depends on its type.
constexpr std::string_view kUplinkPortKeys[] = {"type", "name", "iface", "address", "socket", "queues"};
constexpr std::string_view kRuleKeys[] = {"direction", "protocol", "ports",       "icmp_type",
                                          "icmp_code", "remote",   "remote_group"};

// The per-state lifetimes of dataplane.conntrack, each keyed by its ConntrackConfig field name.
struct ConntrackTimeout {
    std::string_view key;
    uint32_t ConntrackConfig::*field;
};
constexpr ConntrackTimeout kConntrackTimeouts[] = {
    {"tcp_syn_sent", &ConntrackConfig::tcp_syn_sent},
    {"tcp_syn_recv", &ConntrackConfig::tcp_syn_recv},
    {"tcp_established", &ConntrackConfig::tcp_established},
    {"tcp_fin_wait", &ConntrackConfig::tcp_fin_wait},
    {"tcp_close_wait", &ConntrackConfig::tcp_close_wait},
    {"tcp_last_ack", &ConntrackConfig::tcp_last_ack},
    {"tcp_time_wait", &ConntrackConfig::tcp_time_wait},
    {"tcp_close", &ConntrackConfig::tcp_close},
    {"tcp_unacknowledged", &ConntrackConfig::tcp_unacknowledged},
    {"udp_unreplied", &ConntrackConfig::udp_unreplied},
    {"udp_replied", &ConntrackConfig::udp_replied},
    {"icmp", &ConntrackConfig::icmp},
    {"generic", &ConntrackConfig::generic},
    {"fragment", &ConntrackConfig::fragment},
};
constexpr auto kConntrackKeys = [] {
    std::array<std::string_view, std::size(kConntrackTimeouts) + 1> keys{"capacity"};
    for (size_t i = 0; i < std::size(kConntrackTimeouts); ++i)
        keys[i + 1] = kConntrackTimeouts[i].key;
    return keys;
}();

// The protocols a rule may name, and their IP protocol numbers; "any" is no number.
struct ProtocolName {
    std::string_view name;
    uint8_t number;
};
constexpr ProtocolName kProtocolNames[] = {
    {"tcp", ipproto::kTcp}, {"udp", ipproto::kUdp}, {"icmp", ipproto::kIcmp}};
constexpr std::string_view kProtocolWords[] = {"tcp", "udp", "icmp", "any"};
constexpr std::string_view kDirectionWords[] = {"ingress", "egress"};

// The uplink port types and the one key that names each one's device.
struct UplinkPortKind {
    std::string_view word;
    UplinkPortType type;
    std::string_view device_key;
};
constexpr UplinkPortKind kUplinkPortKinds[] = {{"tap", UplinkPortType::tap, "name"},
                                               {"af_packet", UplinkPortType::af_packet, "iface"},
                                               {"pci", UplinkPortType::pci, "address"},
                                               {"vhost-user", UplinkPortType::vhost_user, "socket"}};
constexpr std::string_view kUplinkPortWords[] = {"tap", "af_packet", "pci", "vhost-user"};

constexpr unsigned kMaxLcore = 128;         // RTE_MAX_LCORE of the Debian DPDK build
constexpr size_t kMaxUnixSocketPath = 107;  // sizeof(sockaddr_un::sun_path) - 1 for the NUL
constexpr size_t kMaxInterfaceName = 15;    // IFNAMSIZ - 1 for the NUL
constexpr uint64_t kMaxU32 = std::numeric_limits<uint32_t>::max();
// The connection table is preallocated: below 1024 entries it is useless, above 2^27 its
// memory (about 128 bytes a connection) is more than a host should give it by accident.
constexpr uint64_t kMinConntrackCapacity = 1024;
constexpr uint64_t kMaxConntrackCapacity = uint64_t{1} << 27;
// Masquerade source ports: never the well-known ports, and enough of them to be worth a range.
constexpr uint64_t kMinNatPort = 1024;
constexpr uint64_t kMinNatPorts = 64;

// Address ranges no instance network may use: they are never routed to a host's neighbours.
struct ReservedRange {
    Ipv4Prefix prefix;
    std::string_view what;
};
constexpr ReservedRange kReserved[] = {
    {{Ipv4Addr::from_octets(0, 0, 0, 0), 8}, "'this network'"},
    {{Ipv4Addr::from_octets(127, 0, 0, 0), 8}, "loopback"},
    {{Ipv4Addr::from_octets(224, 0, 0, 0), 4}, "multicast"},
    {{Ipv4Addr::from_octets(240, 0, 0, 0), 4}, "reserved"},
};

constexpr std::string_view kUplinkOverlap =
    "the uplink subnet and the networks share one routing table, so their addresses must not "
    "overlap";

constexpr std::string_view kSecondPort =
    "has a second port: one instance, one interface — a second interface breaks communication "
    "(every interface has its own L2 link to the gateway, and the gateway is always the first "
    "hop)";

// One key/value pair of a mapping. The key is kept because an empty value has no useful
// position of its own (yaml-cpp marks it at the next token), so errors about it point at the key.
struct Field {
    Node key;
    Node value;
};

// The fields of one YAML mapping, by key (first occurrence), plus repeated keys: yaml-cpp keeps
// every pair of a mapping with a repeated key and its lookup silently returns the first one.
struct Mapping {
    Node node;
    std::map<std::string, Field, std::less<>> fields;
    std::vector<Field> duplicates;

    const Field* get(std::string_view key) const {
        auto it = fields.find(key);
        return it == fields.end() ? nullptr : &it->second;
    }
};

size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            const size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
            diagonal = up;
        }
    }
    return row[b.size()];
}

// "; did you mean 'x'?" for the closest candidate within two edits, else "".
template <typename Range>
std::string suggestion(std::string_view word, const Range& candidates) {
    std::string_view best;
    size_t best_distance = 3;
    for (std::string_view candidate : candidates) {
        const size_t d = edit_distance(word, candidate);
        if (d < best_distance && d < word.size()) {
            best = candidate;
            best_distance = d;
        }
    }
    return best.empty() ? std::string{} : fmt::format("; did you mean '{}'?", best);
}

std::string describe(const Node& node) {
    switch (node.Type()) {
        case YAML::NodeType::Scalar:
            return fmt::format("'{}'", node.Scalar());
        case YAML::NodeType::Sequence:
            return "a list";
        case YAML::NodeType::Map:
            return "a mapping";
        case YAML::NodeType::Null:
            return "an empty value";
        case YAML::NodeType::Undefined:
            break;
    }
    return "nothing";
}

// Plain decimal, digits only. A number too large for uint64 comes back as the maximum, which
// every range check rejects.
std::optional<uint64_t> parse_unsigned(std::string_view text) {
    if (text.empty() || !std::ranges::all_of(text, [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc::result_out_of_range) return std::numeric_limits<uint64_t>::max();
    return value;
}

bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

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

// "HOST:PORT" with HOST an IPv4 address or "localhost" and PORT in 1..65535.
bool is_listen_address(std::string_view text) {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return false;
    const std::string_view host = text.substr(0, colon);
    if (host != "localhost" && !Ipv4Addr::parse(host)) return false;
    const auto port = parse_unsigned(text.substr(colon + 1));
    return port && *port >= 1 && *port <= 65535;
}

// The EAL's PCI allow-list options, spelled alone ("-a", "--allow") or joined to their value
// ("-a0000:01:00.0", "--allow=0000:01:00.0").
bool is_pci_allow_arg(std::string_view arg) {
    if (arg.starts_with("--"))
        return arg == "--allow" || arg.starts_with("--allow=") || arg == "--pci-whitelist" ||
               arg.starts_with("--pci-whitelist=");
    return arg.starts_with("-a") || arg.starts_with("-w");
}

// What a Linux interface name must not contain: what the kernel's dev_valid_name() refuses
// ('/', ':', whitespace), and ',', which would end the DPDK device argument (iface=NAME) that
// calyx passes it in.
bool is_interface_name_char(char c) {
    return c != '/' && c != ':' && c != ',' && c != ' ' && c != '\t' && c != '\n' && c != '\v' &&
           c != '\f' && c != '\r';
}

bool is_hex_digits(std::string_view text, size_t count) {
    return text.size() == count && std::ranges::all_of(text, [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
           });
}

// A PCI address split into its fields, each still text: DDDD:BB:DD.F, or BB:DD.F in domain 0.
struct PciFields {
    std::string_view domain = "0000", bus, device, function;
};

std::optional<PciFields> split_pci_address(std::string_view text) {
    PciFields pci;
    const size_t dot = text.rfind('.');
    if (dot == std::string_view::npos) return std::nullopt;
    pci.function = text.substr(dot + 1);
    text = text.substr(0, dot);
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    pci.device = text.substr(colon + 1);
    text = text.substr(0, colon);
    const size_t domain_colon = text.find(':');
    if (domain_colon != std::string_view::npos) {
        pci.domain = text.substr(0, domain_colon);
        text = text.substr(domain_colon + 1);
    }
    pci.bus = text;
    if (!is_hex_digits(pci.domain, 4) || !is_hex_digits(pci.bus, 2) ||
        !is_hex_digits(pci.device, 2) || !is_hex_digits(pci.function, 1))
        return std::nullopt;
    return pci;
}

// Where each of the first three documents of a YAML stream starts.
//
// yaml-cpp 0.7 never consumes a token that cannot start a node (a stray ',' at the start of a
// document: jbeder/yaml-cpp#1040, fixed upstream after 0.8): YAML::Load then returns an empty
// document and ignores the rest of the text, and YAML::LoadAll loops forever, allocating. Walking
// the events of at most three documents is bounded, and a document that starts where the
// previous one did is that stuck token.
class DocumentStarts final : public YAML::EventHandler {
  public:
    std::vector<YAML::Mark> starts;

    void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

std::vector<YAML::Mark> document_starts(const std::string& yaml) {
    std::istringstream stream(yaml);
    YAML::Parser parser(stream);
    DocumentStarts probe;
    for (int i = 0; i < 3 && parser.HandleNextDocument(probe); ++i) {
    }
    return probe.starts;
}

// What instance entries need to know about a network entry, valid or not.
struct NetworkEntry {
    NetworkConfig config;
    bool cidr_valid = false;
    bool gateway_valid = false;
};

// Where a value was first seen, to name it in "already used" errors.
struct FirstUse {
    std::string owner;  // "instance 'web-1'", "the uplink"
    int line = 0;
};

// The first entry of an instance name, to tell a repeated entry from a second port.
struct FirstInstance {
    int line = 0;
    std::string socket;
};

class Parser {
  public:
    explicit Parser(std::string_view file) : file_(file) {}

    std::expected<Config, Errors> parse(std::string_view text);

  private:
    // --- errors and locations ---
    SourceLocation at(const Node& node) const {
        const YAML::Mark mark = node.Mark();
        if (mark.is_null()) return {file_, 1, 1};
        return {file_, mark.line + 1, mark.column + 1};
    }
    SourceLocation at(const Field& field) const {
        const bool use_key = field.value.IsNull() || field.value.Mark().is_null();
        return at(use_key ? field.key : field.value);
    }
    void error(SourceLocation where, std::string message) {
        errors_.push_back(Error{std::move(where), std::move(message)});
    }
    template <typename... Args>
    void error(const Field& field, fmt::format_string<Args...> format, Args&&... args) {
        error(at(field), fmt::format(format, std::forward<Args>(args)...));
    }
    template <typename... Args>
    void error(const Node& node, fmt::format_string<Args...> format, Args&&... args) {
        error(at(node), fmt::format(format, std::forward<Args>(args)...));
    }

    // --- generic readers: each reports its own errors and returns nullopt on any ---
    // Unknown keys are suggested from `suggest` if given, else from `known`.
    std::optional<Mapping> mapping(const Field& field, std::string_view label,
                                   std::string_view context, Keys known, Keys suggest = {});
    void duplicate_key(const Mapping& mapping, const Field& duplicate, std::string_view context);
    void report_duplicates(const Mapping& mapping, std::string_view context);
    void require(const Mapping& mapping, std::string_view owner, Keys required);
    std::optional<std::vector<Field>> list(const Field& field, std::string_view label);
    std::optional<std::string> scalar(const Field& field, std::string_view label,
                                      std::string_view expected);
    std::optional<uint64_t> integer(const Field& field, std::string_view label, uint64_t min,
                                    uint64_t max);
    std::optional<Ipv4Addr> ipv4(const Field& field, std::string_view label);
    std::optional<Ipv4Prefix> prefix(const Field& field, std::string_view label);
    std::optional<MacAddr> unicast_mac(const Field& field, std::string_view label);
    std::optional<std::string> name(const Field& field, std::string_view what);
    std::optional<std::string> socket_path(const Field& field, std::string_view label);
    std::optional<std::string> interface_name(const Field& field, std::string_view label);
    std::optional<std::string> pci_address(const Field& field, std::string_view label);

    // --- sections ---
    void dataplane(const Field& field);
    void conntrack(const Field& field);
    void control(const Field& field);
    void metrics(const Field& field);
    void network(const Field& field);
    void network_addresses(const Mapping& m, NetworkEntry& entry);
    bool network_cidr_usable(const Field& field, const Ipv4Prefix& cidr);
    void instance(const Field& field);
    void instance_addresses(const Mapping& m, InstanceConfig& instance, bool check_unique);
    std::optional<PortConfig> port(const Field& field);
    void instance_groups(const Field& field, InstanceConfig& instance);
    void security_group(const Field& field);
    std::optional<RuleConfig> rule(const Field& field, std::string_view owner);
    bool rule_protocol(const Mapping& m, RuleConfig& rule);
    void rule_ports(const Mapping& m, RuleConfig& rule, bool protocol_known);
    void rule_icmp(const Mapping& m, RuleConfig& rule, bool protocol_known);
    void rule_remote(const Mapping& m, RuleConfig& rule);
    void check_group_reference(const Field& field, const std::string& group);
    void uplink(const Field& field);
    void uplink_port(const Field& field, UplinkConfig& uplink);
    bool uplink_address(const Field& field, UplinkConfig& uplink);
    void uplink_gateway(const Field& field, UplinkConfig& uplink, bool subnet_valid);
    void uplink_nat_ports(const Field& field, UplinkConfig& uplink);

    std::string file_;
    Errors errors_;
    Config config_;
    std::optional<MacAddr> gateway_mac_ = config_.dataplane.gateway_mac;  // nullopt if invalid
    std::vector<NetworkEntry> networks_;
    std::map<std::string, FirstUse, std::less<>> network_names_;
    std::map<std::string, FirstInstance, std::less<>> instance_names_;
    std::map<MacAddr, FirstUse> macs_;
    std::map<Ipv4Addr, FirstUse> addresses_;
    std::map<std::string, FirstUse, std::less<>> sockets_;
    std::map<std::string, FirstUse, std::less<>> group_names_;
    // remote_group values, checked once every group is known: a rule may name a later group.
    std::vector<Field> remote_groups_;
};

std::optional<Mapping> Parser::mapping(const Field& field, std::string_view label,
                                       std::string_view context, Keys known, Keys suggest) {
    if (!field.value.IsMap()) {
        error(field, "{} must be a mapping, got {}", label, describe(field.value));
        return std::nullopt;
    }
    Mapping m{field.value, {}, {}};
    for (const auto& pair : field.value) {
        const Field entry{pair.first, pair.second};
        if (!entry.key.IsScalar()) {
            error(entry.key, "keys {} must be strings, got {}", context, describe(entry.key));
            continue;
        }
        const std::string& key = entry.key.Scalar();
        if (std::ranges::find(known, key) == known.end()) {
            error(entry.key, "unknown key '{}' {}{}", key, context,
                  suggestion(key, suggest.empty() ? known : suggest));
            continue;
        }
        if (!m.fields.try_emplace(key, entry).second) m.duplicates.push_back(entry);
    }
    return m;
}

void Parser::duplicate_key(const Mapping& m, const Field& dup, std::string_view context) {
    error(dup.key, "duplicate key '{}' {} (first at line {})", dup.key.Scalar(), context,
          at(m.get(dup.key.Scalar())->key).line);
}

void Parser::report_duplicates(const Mapping& m, std::string_view context) {
    for (const Field& dup : m.duplicates) duplicate_key(m, dup, context);
}

void Parser::require(const Mapping& m, std::string_view owner, Keys required) {
    for (std::string_view key : required)
        if (!m.get(key)) error(m.node, "{} is missing required key '{}'", owner, key);
}

std::optional<std::vector<Field>> Parser::list(const Field& field, std::string_view label) {
    if (!field.value.IsSequence()) {
        error(field, "{} must be a list, got {}", label, describe(field.value));
        return std::nullopt;
    }
    std::vector<Field> items;
    for (const auto& item : field.value) items.push_back(Field{field.key, item});
    return items;
}

std::optional<std::string> Parser::scalar(const Field& field, std::string_view label,
                                          std::string_view expected) {
    if (field.value.IsScalar()) return field.value.Scalar();
    error(field, "{} must be {}, got {}", label, expected, describe(field.value));
    return std::nullopt;
}

std::optional<uint64_t> Parser::integer(const Field& field, std::string_view label, uint64_t min,
                                        uint64_t max) {
    const auto text = scalar(field, label, "an integer");
    if (!text) return std::nullopt;
    const auto value = parse_unsigned(*text);
    if (!value) {
        error(field, "{} must be an integer, got '{}'", label, *text);
        return std::nullopt;
    }
    if (*value < min || *value > max) {
        error(field, "{} must be between {} and {}, got {}", label, min, max, *text);
        return std::nullopt;
    }
    return value;
}

std::optional<Ipv4Addr> Parser::ipv4(const Field& field, std::string_view label) {
    constexpr std::string_view kExpected = "an IPv4 address like 192.0.2.1";
    const auto text = scalar(field, label, kExpected);
    if (!text) return std::nullopt;
    const auto addr = Ipv4Addr::parse(*text);
    if (!addr) error(field, "{} must be {}, got '{}'", label, kExpected, *text);
    return addr;
}

std::optional<Ipv4Prefix> Parser::prefix(const Field& field, std::string_view label) {
    constexpr std::string_view kExpected = "an IPv4 prefix like 192.0.2.0/24";
    const auto text = scalar(field, label, kExpected);
    if (!text) return std::nullopt;
    if (const auto p = Ipv4Prefix::parse(*text)) return p;
    if (const auto p = Ipv4Prefix::parse(*text, /*allow_host_bits=*/true)) {
        error(field, "{} {} has host bits set; did you mean {}?", label, *text, p->to_string());
    } else {
        error(field, "{} must be {}, got '{}'", label, kExpected, *text);
    }
    return std::nullopt;
}

std::optional<MacAddr> Parser::unicast_mac(const Field& field, std::string_view label) {
    constexpr std::string_view kExpected = "a MAC address like 52:54:00:00:01:01";
    const auto text = scalar(field, label, kExpected);
    if (!text) return std::nullopt;
    const auto mac = MacAddr::parse(*text);
    if (!mac) {
        error(field, "{} must be {}, got '{}'", label, kExpected, *text);
    } else if (mac->is_zero()) {
        error(field, "{} must not be the zero MAC address", label);
    } else if (mac->is_multicast()) {
        error(field,
              "{} {} is a multicast address; it must be unicast (lowest bit of the first "
              "byte clear)",
              label, mac->to_string());
    } else {
        return mac;
    }
    return std::nullopt;
}

// Names of networks and instances appear in logs, metrics labels and calyxctl arguments.
std::optional<std::string> Parser::name(const Field& field, std::string_view what) {
    const auto text = scalar(field, fmt::format("{} name", what), "a string");
    if (!text) return std::nullopt;
    if (text->empty()) {
        error(field, "{} name must not be empty", what);
        return std::nullopt;
    }
    if (!std::ranges::all_of(*text, is_name_char)) {
        error(field, "{} name '{}' may contain only letters, digits, '_', '.' and '-'", what,
              *text);
        return std::nullopt;
    }
    return text;
}

std::optional<std::string> Parser::socket_path(const Field& field, std::string_view label) {
    const auto text = scalar(field, label, "an absolute path");
    if (!text) return std::nullopt;
    if (!text->starts_with('/')) {
        error(field, "{} must be an absolute path, got '{}'", label, *text);
        return std::nullopt;
    }
    if (text->size() > kMaxUnixSocketPath) {
        error(field, "{} is {} bytes long; a unix socket path holds at most {}", label,
              text->size(), kMaxUnixSocketPath);
        return std::nullopt;
    }
    return text;
}

// A Linux network interface name: 1 to 15 bytes, not '.' or '..', none of the characters
// is_interface_name_char refuses.
std::optional<std::string> Parser::interface_name(const Field& field, std::string_view label) {
    const auto text = scalar(field, label, "a Linux interface name");
    if (!text) return std::nullopt;
    if (text->empty()) {
        error(field, "{} must not be empty", label);
    } else if (text->size() > kMaxInterfaceName) {
        error(field, "{} is {} bytes long; a Linux interface name holds at most {}", label,
              text->size(), kMaxInterfaceName);
    } else if (*text == "." || *text == "..") {
        error(field, "{} must be a Linux interface name, not '{}'", label, *text);
    } else if (!std::ranges::all_of(*text, is_interface_name_char)) {
        error(field,
              "{} must be a Linux interface name without '/', ':', ',' or whitespace, got '{}'",
              label, *text);
    } else {
        return text;
    }
    return std::nullopt;
}

// DPDK's form of a PCI address, DDDD:BB:DD.F in hex, or BB:DD.F for domain 0000. Returned in
// the long form and in lowercase, as DPDK and sysfs print it.
std::optional<std::string> Parser::pci_address(const Field& field, std::string_view label) {
    constexpr std::string_view kExpected = "a PCI address like 0000:01:00.0";
    const auto text = scalar(field, label, kExpected);
    if (!text) return std::nullopt;
    const auto pci = split_pci_address(*text);
    if (!pci) {
        error(field, "{} must be {}, got '{}'", label, kExpected, *text);
        return std::nullopt;
    }
    // Five bits of device, three of function.
    const auto hex = [](std::string_view digits) {
        unsigned value = 0;
        std::from_chars(digits.data(), digits.data() + digits.size(), value, 16);
        return value;
    };
    if (hex(pci->device) > 0x1f || hex(pci->function) > 7) {
        error(field,
              "{} {} is not a PCI address: the device is at most 1f and the function at most 7",
              label, *text);
        return std::nullopt;
    }
    std::string normal =
        fmt::format("{}:{}:{}.{}", pci->domain, pci->bus, pci->device, pci->function);
    std::ranges::transform(normal, normal.begin(), [](char c) {
        return c >= 'A' && c <= 'F' ? static_cast<char>(c - 'A' + 'a') : c;
    });
    return normal;
}

std::expected<Config, Errors> Parser::parse(std::string_view text) {
    try {
        const std::string yaml{text};
        // Checked first: Load would silently drop what the probe finds.
        const std::vector<YAML::Mark> starts = document_starts(yaml);
        for (size_t i = 1; i < starts.size(); ++i) {
            if (starts[i].pos == starts[i - 1].pos) {
                const YAML::Mark& m = starts[i];
                error(SourceLocation{file_, m.line + 1, m.column + 1},
                      fmt::format("invalid YAML: unexpected '{}'", yaml[m.pos]));
                return std::unexpected(std::move(errors_));
            }
        }
        if (starts.size() > 1) {
            error(SourceLocation{file_, starts[1].line + 1, starts[1].column + 1},
                  "a configuration is one YAML document; this is a second one");
        }
        const Node root = YAML::Load(yaml);
        if (root.IsNull()) {
            error(SourceLocation{file_, 1, 1},
                  "the configuration is empty; it must be a mapping with 'networks' and "
                  "'instances'");
        } else if (const auto top = mapping(Field{root, root}, "the configuration",
                                            "at the top level", kTopKeys)) {
            report_duplicates(*top, "at the top level");
            // Networks and security groups before instances whatever the order in the file:
            // instances refer to them.
            if (const Field* f = top->get("dataplane")) dataplane(*f);
            if (const Field* f = top->get("control")) control(*f);
            if (const Field* f = top->get("metrics")) metrics(*f);
            if (const Field* f = top->get("networks"))
                if (const auto items = list(*f, "'networks'"))
                    for (const Field& item : *items) network(item);
            // After the networks, which its subnet must not overlap.
            if (const Field* f = top->get("uplink")) uplink(*f);
            // Security groups before instances, which name them; rules may name any group.
            if (const Field* f = top->get("security_groups"))
                if (const auto items = list(*f, "'security_groups'"))
                    for (const Field& item : *items) security_group(item);
            for (const Field& f : remote_groups_) check_group_reference(f, f.value.Scalar());
            if (const Field* f = top->get("instances"))
                if (const auto items = list(*f, "'instances'"))
                    for (const Field& item : *items) instance(item);
        }
    } catch (const YAML::Exception& e) {
        // A syntax error: the text cannot be read, so nothing else is checked.
        const bool no_mark = e.mark.is_null();
        error(SourceLocation{file_, no_mark ? 1 : e.mark.line + 1, no_mark ? 1 : e.mark.column + 1},
              fmt::format("invalid YAML: {}", e.msg));
    } catch (const std::exception& e) {
        error(SourceLocation{file_, 0, 0}, fmt::format("cannot parse: {}", e.what()));
    }

    if (!errors_.empty()) {
        std::ranges::stable_sort(errors_, [](const Error& a, const Error& b) {
            return std::pair{a.where.line, a.where.column} <
                   std::pair{b.where.line, b.where.column};
        });
        return std::unexpected(std::move(errors_));
    }
    for (NetworkEntry& entry : networks_) config_.networks.push_back(std::move(entry.config));
    return std::move(config_);
}

void Parser::dataplane(const Field& field) {
    const auto m = mapping(field, "'dataplane'", "in dataplane", kDataplaneKeys);
    if (!m) return;
    report_duplicates(*m, "in dataplane");
    DataplaneConfig& dp = config_.dataplane;

    if (const Field* f = m->get("workers")) {
        if (const auto items = list(*f, "'workers'")) {
            dp.workers.clear();
            if (items->empty()) error(*f, "'workers' must list at least one lcore");
            for (const Field& item : *items) {
                const auto lcore = integer(item, "entry of 'workers'", 0, kMaxU32);
                if (!lcore) continue;
                if (*lcore == 0) {
                    error(item,
                          "lcore 0 is the main lcore, which does control only; workers "
                          "must be other lcores");
                } else if (*lcore >= kMaxLcore) {
                    error(item, "lcore {} is out of range: lcore ids are below {}", *lcore,
                          kMaxLcore);
                } else if (std::ranges::find(dp.workers, *lcore) != dp.workers.end()) {
                    error(item, "lcore {} is listed twice in 'workers'", *lcore);
                } else {
                    dp.workers.push_back(static_cast<unsigned>(*lcore));
                }
            }
        }
    }
    if (const Field* f = m->get("eal_args")) {
        if (const auto items = list(*f, "'eal_args'")) {
            for (const Field& item : *items) {
                const auto arg = scalar(item, "entry of 'eal_args'", "a string");
                if (!arg) continue;
                if (is_pci_allow_arg(*arg)) {
                    error(item,
                          "eal_args must not contain '{}': PCI devices are given to calyx "
                          "as the uplink port, never via eal_args (calyx passes -a with the "
                          "address of a pci uplink, and --no-pci otherwise)",
                          *arg);
                    continue;
                }
                dp.eal_args.push_back(*arg);
            }
        }
    }
    if (const Field* f = m->get("gateway_mac")) {
        gateway_mac_ = unicast_mac(*f, "'gateway_mac'");
        if (gateway_mac_) dp.gateway_mac = *gateway_mac_;
    }
    if (const Field* f = m->get("icmp_errors_per_second"))
        if (const auto v = integer(*f, "'icmp_errors_per_second'", 0, kMaxU32))
            dp.icmp_errors_per_second = static_cast<uint32_t>(*v);
    if (const Field* f = m->get("icmp_errors_burst"))
        if (const auto v = integer(*f, "'icmp_errors_burst'", 1, kMaxU32))
            dp.icmp_errors_burst = static_cast<uint32_t>(*v);
    // DPDK sizes each port's queues from the pool; fewer than 1023 buffers cannot fill even one
    // default-sized ring pair.
    if (const Field* f = m->get("mbufs"))
        if (const auto v = integer(*f, "'mbufs'", 1023, kMaxU32))
            dp.mbufs = static_cast<uint32_t>(*v);
    if (const Field* f = m->get("conntrack")) conntrack(*f);
}

void Parser::conntrack(const Field& field) {
    const auto m = mapping(field, "'conntrack'", "in conntrack", kConntrackKeys);
    if (!m) return;
    report_duplicates(*m, "in conntrack");
    ConntrackConfig& ct = config_.dataplane.conntrack;
    if (const Field* f = m->get("capacity"))
        if (const auto v = integer(*f, "'capacity'", kMinConntrackCapacity, kMaxConntrackCapacity))
            ct.capacity = static_cast<uint32_t>(*v);
    for (const ConntrackTimeout& timeout : kConntrackTimeouts) {
        const Field* f = m->get(timeout.key);
        if (!f) continue;
        if (const auto v = integer(*f, fmt::format("'{}'", timeout.key), 1, kMaxU32))
            ct.*timeout.field = static_cast<uint32_t>(*v);
    }
}

void Parser::control(const Field& field) {
    const auto m = mapping(field, "'control'", "in control", kControlKeys);
    if (!m) return;
    report_duplicates(*m, "in control");
    if (const Field* f = m->get("socket"))
        if (auto path = socket_path(*f, "'socket'")) config_.control.socket = std::move(*path);
}

void Parser::metrics(const Field& field) {
    const auto m = mapping(field, "'metrics'", "in metrics", kMetricsKeys);
    if (!m) return;
    report_duplicates(*m, "in metrics");
    const Field* f = m->get("listen");
    if (!f) return;
    const auto text = scalar(*f, "'listen'", "HOST:PORT");
    if (!text) return;
    if (!is_listen_address(*text)) {
        error(*f,
              "'listen' must be HOST:PORT with HOST an IPv4 address or 'localhost' and PORT "
              "between 1 and 65535, got '{}'",
              *text);
        return;
    }
    config_.metrics.listen = *text;
}

void Parser::network(const Field& field) {
    const auto m = mapping(field, "entry of 'networks'", "in network", kNetworkKeys);
    if (!m) return;
    report_duplicates(*m, "in network");
    NetworkEntry entry;
    NetworkConfig& net = entry.config;
    net.where = at(m->node);

    std::string owner = "network";
    if (const Field* f = m->get("name")) {
        if (const auto n = name(*f, "network")) {
            net.name = *n;
            owner = fmt::format("network '{}'", *n);
            const auto [it, inserted] = network_names_.try_emplace(*n, *n, at(*f).line);
            if (!inserted)
                error(*f, "duplicate network name '{}' (first at line {})", *n, it->second.line);
        }
    }
    require(*m, owner, std::array<std::string_view, 4>{"name", "kind", "cidr", "gateway"});

    if (const Field* f = m->get("kind")) {
        if (const auto kind = scalar(*f, "'kind'", "public, nat or private")) {
            if (*kind == "public")
                net.kind = NetworkKind::public_;
            else if (*kind == "nat")
                net.kind = NetworkKind::nat;
            else if (*kind == "private")
                net.kind = NetworkKind::private_;
            else
                error(*f, "'kind' must be public, nat or private, got '{}'", *kind);
        }
    }
    network_addresses(*m, entry);
    if (const Field* f = m->get("dns")) {
        if (const auto items = list(*f, "'dns'"))
            for (const Field& item : *items)
                if (const auto addr = ipv4(item, "entry of 'dns'")) net.dns.push_back(*addr);
    }
    if (const Field* f = m->get("domain")) {
        if (const auto domain = scalar(*f, "'domain'", "a DNS name")) {
            if (is_dns_name(*domain))
                net.domain = *domain;
            else
                error(*f,
                      "'domain' must be a DNS name (dot-separated labels of 1 to 63 "
                      "letters, digits and '-'), got '{}'",
                      *domain);
        }
    }
    // 576: the minimum datagram every IPv4 host must accept (RFC 791); 9000: jumbo frames.
    if (const Field* f = m->get("mtu"))
        if (const auto v = integer(*f, "'mtu'", 576, 9000)) net.mtu = static_cast<uint16_t>(*v);
    if (const Field* f = m->get("lease_seconds"))
        if (const auto v = integer(*f, "'lease_seconds'", 60, uint64_t{1} << 31))
            net.lease_seconds = static_cast<uint32_t>(*v);
    if (const Field* f = m->get("routes")) {
        if (const auto items = list(*f, "'routes'"))
            for (const Field& item : *items)
                if (const auto p = prefix(item, "route")) net.routes.push_back(*p);
    }
    networks_.push_back(std::move(entry));
}

void Parser::network_addresses(const Mapping& m, NetworkEntry& entry) {
    NetworkConfig& net = entry.config;
    if (const Field* f = m.get("cidr")) {
        if (const auto cidr = prefix(*f, "'cidr'")) {
            net.cidr = *cidr;
            entry.cidr_valid = network_cidr_usable(*f, *cidr);
        }
    }
    const Field* f = m.get("gateway");
    if (!f) return;
    const auto gateway = ipv4(*f, "'gateway'");
    if (!gateway) return;
    net.gateway = *gateway;
    if (!entry.cidr_valid) return;  // nothing to check it against
    const std::string text = gateway->to_string();
    const std::string cidr = net.cidr.to_string();
    if (!net.cidr.contains(*gateway)) {
        error(*f, "gateway {} is outside cidr {}", text, cidr);
    } else if (*gateway == net.cidr.addr) {
        error(*f, "gateway {} is the network address of {}", text, cidr);
    } else if (*gateway == net.cidr.broadcast()) {
        error(*f, "gateway {} is the broadcast address of {}", text, cidr);
    } else {
        entry.gateway_valid = true;
    }
}

// The size of a network, and its place among reserved ranges and the networks before it.
bool Parser::network_cidr_usable(const Field& f, const Ipv4Prefix& cidr) {
    const std::string text = cidr.to_string();
    if (cidr.length < 8) {
        error(f,
              "cidr {} is too large: the whole cidr is routed to this network's instances, so "
              "a prefix shorter than /8 would capture a large share of all IPv4 destinations",
              text);
        return false;
    }
    if (cidr.length > 30) {
        error(f,
              "cidr {} is too small: a network needs a network address, a gateway, at least "
              "one instance address and a broadcast address, so its prefix is at most /30",
              text);
        return false;
    }
    for (const auto& reserved : kReserved) {
        if (reserved.prefix.contains(cidr)) {
            error(f, "cidr {} is inside {} ({}), which is never assigned to hosts", text,
                  reserved.prefix.to_string(), reserved.what);
            return false;
        }
    }
    // Checked against the networks before this one, so each overlap is reported once.
    bool usable = true;
    for (const NetworkEntry& other : networks_) {
        const Ipv4Prefix& theirs = other.config.cidr;
        if (other.cidr_valid && (theirs.contains(cidr) || cidr.contains(theirs))) {
            error(f,
                  "cidr {} overlaps {} of network '{}' (line {}): networks share one routing "
                  "table, so their addresses must not overlap",
                  text, theirs.to_string(), other.config.name, other.config.where.line);
            usable = false;
        }
    }
    return usable;
}

void Parser::instance(const Field& field) {
    const auto m = mapping(field, "entry of 'instances'", "in instance", kInstanceKeys);
    if (!m) return;
    InstanceConfig inst;
    inst.where = at(m->node);

    std::string owner = "instance";
    const Field* name_field = m->get("name");
    if (name_field) {
        if (const auto n = name(*name_field, "instance")) {
            inst.name = *n;
            owner = fmt::format("instance '{}'", *n);
        }
    }

    // Every way of writing a second port gets the same explanation: a `ports` list, a repeated
    // `port` key, a list under `port`, or (below) the instance listed again with another port.
    const Field* ports = m->get("ports");
    if (ports) {
        if (ports->value.IsSequence() && ports->value.size() > 1)
            error(ports->value[1], "{} {}", owner, kSecondPort);
        else
            error(ports->key, "unknown key 'ports' in instance; did you mean 'port'?");
    }
    for (const Field& dup : m->duplicates) {
        if (dup.key.Scalar() == "port")
            error(dup.key, "{} {}", owner, kSecondPort);
        else
            duplicate_key(*m, dup, "in instance");
    }
    const Field* port_field = m->get("port");
    if (port_field && port_field->value.IsSequence() && port_field->value.size() > 1) {
        error(port_field->value[1], "{} {}", owner, kSecondPort);
    } else if (port_field) {
        if (auto port = this->port(*port_field)) inst.port = std::move(*port);
    }
    // A `ports` key already explains what is wrong with the port; don't also say it is missing.
    if (ports)
        require(*m, owner, std::array<std::string_view, 4>{"name", "network", "mac", "ipv4"});
    else
        require(*m, owner,
                std::array<std::string_view, 5>{"name", "network", "mac", "ipv4", "port"});

    // The same instance listed again: with a different port it is an attempt at a second
    // interface, otherwise a plain duplicate. Either way its addresses would only repeat the
    // first entry's, so they are not checked for uniqueness.
    bool repeated = false;
    if (!inst.name.empty()) {
        const auto [it, inserted] = instance_names_.try_emplace(
            inst.name, FirstInstance{at(*name_field).line, inst.port.socket});
        if (!inserted) {
            repeated = true;
            const FirstInstance& first = it->second;
            if (!inst.port.socket.empty() && !first.socket.empty() &&
                inst.port.socket != first.socket) {
                error(*port_field, "{} {}", owner, kSecondPort);
            } else {
                error(*name_field, "duplicate instance name '{}' (first at line {})", inst.name,
                      first.line);
            }
        }
    }
    instance_addresses(*m, inst, /*check_unique=*/!repeated);

    if (const Field* f = m->get("security_groups")) instance_groups(*f, inst);
    config_.instances.push_back(std::move(inst));
}

// Each entry names a defined group, once.
void Parser::instance_groups(const Field& field, InstanceConfig& inst) {
    const auto items = list(field, "'security_groups'");
    if (!items) return;
    for (const Field& item : *items) {
        const auto group = scalar(item, "entry of 'security_groups'", "a security group name");
        if (!group) continue;
        if (std::ranges::find(inst.security_groups, *group) != inst.security_groups.end()) {
            error(item, "security group '{}' is listed twice in 'security_groups'", *group);
            continue;
        }
        check_group_reference(item, *group);
        inst.security_groups.push_back(*group);
    }
}

void Parser::check_group_reference(const Field& field, const std::string& group) {
    if (group_names_.contains(group)) return;
    std::vector<std::string_view> names;
    for (const auto& [name, first] : group_names_) names.push_back(name);
    error(field, "unknown security group '{}'{}", group, suggestion(group, names));
}

// network, mac, ipv4 and the port's socket: each valid on its own and, if check_unique, not
// already used by another instance.
void Parser::instance_addresses(const Mapping& m, InstanceConfig& inst, bool check_unique) {
    const FirstUse use{fmt::format("instance '{}'", inst.name), inst.where.line};
    const auto claim = [&](auto& uses, const auto& key, const Field& f, std::string_view what,
                           const std::string& text) {
        if (!check_unique) return;
        const auto [it, inserted] = uses.try_emplace(key, use);
        if (!inserted)
            error(f, "{} {} is already used by {} (line {})", what, text,
                  it->second.owner, it->second.line);
    };

    const NetworkEntry* net = nullptr;
    if (const Field* f = m.get("network")) {
        if (const auto n = scalar(*f, "'network'", "a network name")) {
            inst.network = *n;
            const auto it = std::ranges::find(
                networks_, *n,
                [](const NetworkEntry& e) -> const std::string& { return e.config.name; });
            if (it != networks_.end()) {
                net = &*it;
            } else {
                std::vector<std::string_view> names;
                for (const NetworkEntry& e : networks_) names.push_back(e.config.name);
                error(*f, "unknown network '{}'{}", *n, suggestion(*n, names));
            }
        }
    }

    if (const Field* f = m.get("mac")) {
        if (const auto mac = unicast_mac(*f, "'mac'")) {
            inst.mac = *mac;
            if (gateway_mac_ && *mac == *gateway_mac_)
                error(*f,
                      "mac {} is the gateway MAC (dataplane.gateway_mac); an instance needs "
                      "its own",
                      mac->to_string());
            else
                claim(macs_, *mac, *f, "mac", mac->to_string());
        }
    }

    if (const Field* f = m.get("ipv4")) {
        if (const auto addr = ipv4(*f, "'ipv4'")) {
            inst.ipv4 = *addr;
            const std::string text = addr->to_string();
            if (!net || !net->cidr_valid) {
                claim(addresses_, *addr, *f, "ipv4", text);
            } else if (const Ipv4Prefix& cidr = net->config.cidr; !cidr.contains(*addr)) {
                error(*f, "ipv4 {} is outside network '{}' ({})", text, net->config.name,
                      cidr.to_string());
            } else if (*addr == cidr.addr) {
                error(*f, "ipv4 {} is the network address of {}", text, cidr.to_string());
            } else if (*addr == cidr.broadcast()) {
                error(*f, "ipv4 {} is the broadcast address of {}", text, cidr.to_string());
            } else if (net->gateway_valid && *addr == net->config.gateway) {
                error(*f, "ipv4 {} is the gateway address of network '{}'", text, net->config.name);
            } else {
                claim(addresses_, *addr, *f, "ipv4", text);
            }
        }
    }

    // A socket is set only when `port` is one valid mapping with a `socket` key.
    if (!inst.port.socket.empty()) {
        const Field* port = m.get("port");
        const Field f{port->key, port->value["socket"]};
        if (inst.port.socket == config_.control.socket)
            error(f, "socket {} is the control socket (control.socket)", inst.port.socket);
        else
            claim(sockets_, inst.port.socket, f, "socket", inst.port.socket);
    }
}

std::optional<PortConfig> Parser::port(const Field& field) {
    const auto m = mapping(field, "'port'", "in port", kPortKeys);
    if (!m) return std::nullopt;
    report_duplicates(*m, "in port");
    require(*m, "port", std::array<std::string_view, 2>{"type", "socket"});
    bool ok = m->get("type") && m->get("socket");
    PortConfig port;
    port.where = at(m->node);

    if (const Field* f = m->get("type")) {
        const auto type = scalar(*f, "'type'", "a port type");
        if (type == "vhost-user") {
            port.type = PortType::vhost_user;
        } else if (type == "tap" || type == "af_packet" || type == "pci") {
            error(*f,
                  "port type '{}' is for the uplink, not for instances: instances attach "
                  "over vhost-user",
                  *type);
            ok = false;
        } else if (type) {
            error(*f, "port type '{}' is unknown; instances attach over 'vhost-user'", *type);
            ok = false;
        } else {
            ok = false;
        }
    }
    if (const Field* f = m->get("socket")) {
        if (auto path = socket_path(*f, "'socket'"))
            port.socket = std::move(*path);
        else
            ok = false;
    }
    if (const Field* f = m->get("mode")) {
        if (const auto mode = scalar(*f, "'mode'", "server or client")) {
            if (*mode == "server")
                port.mode = VhostMode::server;
            else if (*mode == "client")
                port.mode = VhostMode::client;
            else
                error(*f, "'mode' must be server or client, got '{}'", *mode);
        }
    }
    if (const Field* f = m->get("queues"))
        if (const auto v = integer(*f, "'queues'", 1, 8)) port.queues = static_cast<uint16_t>(*v);
    if (!ok) return std::nullopt;
    return port;
}

void Parser::uplink(const Field& field) {
    const auto m = mapping(field, "'uplink'", "in uplink", kUplinkKeys);
    if (!m) return;
    report_duplicates(*m, "in uplink");
    require(*m, "uplink", std::array<std::string_view, 3>{"port", "address", "gateway"});
    UplinkConfig up;
    up.where = at(m->node);

    if (const Field* f = m->get("port")) uplink_port(*f, up);
    const Field* address = m->get("address");
    const bool subnet_valid = address && uplink_address(*address, up);
    if (const Field* f = m->get("gateway")) uplink_gateway(*f, up, subnet_valid);
    if (const Field* f = m->get("nat_ports")) uplink_nat_ports(*f, up);
    config_.uplink = std::move(up);
}

// The keys a port may have depend on its type, so the type is looked at before the mapping
// is read: a typo is then suggested among that type's keys, and another type's device key
// among them gets this type's one.
void Parser::uplink_port(const Field& field, UplinkConfig& up) {
    const UplinkPortKind* kind = nullptr;
    if (field.value.IsMap()) {
        // A missing key is an invalid node, which throws on anything but IsDefined.
        if (const Node type = field.value["type"]; type.IsDefined() && type.IsScalar()) {
            const auto it =
                std::ranges::find(kUplinkPortKinds, type.Scalar(), &UplinkPortKind::word);
            if (it != std::end(kUplinkPortKinds)) kind = &*it;
        }
    }
    const std::array<std::string_view, 3> own_keys{"type", kind ? kind->device_key : "", "queues"};
    const std::string context = kind ? fmt::format("in {} port", kind->word) : "in uplink port";
    const auto m =
        mapping(field, "'port'", context, kUplinkPortKeys, kind ? Keys{own_keys} : Keys{});
    if (!m) return;
    report_duplicates(*m, context);
    require(*m, "uplink port", std::array<std::string_view, 1>{"type"});
    if (kind) {
        up.type = kind->type;
        require(*m, fmt::format("{} port", kind->word),
                std::array<std::string_view, 1>{kind->device_key});
    } else if (const Field* f = m->get("type")) {
        if (const auto type = scalar(*f, "'type'", "tap, af_packet, pci or vhost-user"))
            error(*f, "'type' must be tap, af_packet, pci or vhost-user, got '{}'{}", *type,
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
            error(f->key, "unknown key '{}' {}{}", owner.device_key, context, hint);
            continue;
        }
        const std::string label = fmt::format("'{}'", owner.device_key);
        switch (owner.type) {
            case UplinkPortType::tap:
                if (auto v = interface_name(*f, label)) up.tap_name = std::move(*v);
                break;
            case UplinkPortType::af_packet:
                if (auto v = interface_name(*f, label)) up.af_packet_iface = std::move(*v);
                break;
            case UplinkPortType::pci:
                if (auto v = pci_address(*f, label)) up.pci_address = std::move(*v);
                break;
            case UplinkPortType::vhost_user:
                if (auto v = socket_path(*f, label)) {
                    up.vhost_socket = std::move(*v);
                    if (up.vhost_socket == config_.control.socket)
                        error(*f, "socket {} is the control socket (control.socket)", up.vhost_socket);
                    else
                        sockets_.try_emplace(up.vhost_socket, FirstUse{"the uplink", f->key.Mark().line + 1});
                }
                break;
        }
    }
    if (const Field* f = m->get("queues")) {
        const size_t workers = config_.dataplane.workers.size();
        if (const auto v = integer(*f, "'queues'", 1, 8)) {
            if (*v < workers)
                error(*f, "'queues' is {} but dataplane.workers lists {} workers, each of which transmits on "
                          "an uplink queue of its own: at least {}",
                      *v, workers, workers);
            else
                up.queues = static_cast<uint16_t>(*v);
        }
    }
}

// "a.b.c.d/len": the host's address with the length of its subnet. True if the subnet is
// usable, so that the gateway can be checked against it.
bool Parser::uplink_address(const Field& f, UplinkConfig& up) {
    constexpr std::string_view kExpected =
        "an IPv4 address with its prefix length like 198.51.100.10/24";
    const auto text = scalar(f, "'address'", kExpected);
    if (!text) return false;
    const auto parsed = Ipv4Prefix::parse(*text, /*allow_host_bits=*/true);
    if (!parsed) {
        if (Ipv4Addr::parse(*text))
            error(f, "'address' {} has no prefix length; write it with its subnet's, like {}/24",
                  *text, *text);
        else
            error(f, "'address' must be {}, got '{}'", kExpected, *text);
        return false;
    }
    up.address = *Ipv4Addr::parse(std::string_view{*text}.substr(0, text->find('/')));
    up.prefix_length = parsed->length;
    const Ipv4Prefix subnet = up.subnet();
    const std::string addr = up.address.to_string();
    const std::string net = subnet.to_string();

    if (subnet.length < 8) {
        error(f,
              "uplink subnet {} is too large: all of it is reached directly on the uplink, so "
              "a prefix shorter than /8 would put a large share of all IPv4 destinations on "
              "one link",
              net);
        return false;
    }
    if (subnet.length > 30) {
        error(f,
              "uplink subnet {} is too small: it needs a network address, the host's address, "
              "the gateway and a broadcast address, so its prefix is at most /30",
              net);
        return false;
    }
    for (const auto& reserved : kReserved) {
        if (reserved.prefix.contains(subnet)) {
            error(f, "address {} is inside {} ({}), which is never assigned to hosts", addr,
                  reserved.prefix.to_string(), reserved.what);
            return false;
        }
    }
    if (up.address == subnet.addr) {
        error(f, "address {} is the network address of {}", addr, net);
        return true;
    }
    if (up.address == subnet.broadcast()) {
        error(f, "address {} is the broadcast address of {}", addr, net);
        return true;
    }
    // Against every network, wherever it is in the file: the uplink is read after them.
    for (const NetworkEntry& other : networks_) {
        const NetworkConfig& n = other.config;
        if (other.gateway_valid && n.gateway == up.address) {
            error(f, "address {} is the gateway address of network '{}'", addr, n.name);
        } else if (!other.cidr_valid) {
            continue;
        } else if (n.cidr.contains(up.address)) {
            error(f, "address {} is inside network '{}' ({}, line {}): {}", addr, n.name,
                  n.cidr.to_string(), n.where.line, kUplinkOverlap);
        } else if (n.cidr.contains(subnet) || subnet.contains(n.cidr)) {
            error(f, "uplink subnet {} overlaps {} of network '{}' (line {}): {}", net,
                  n.cidr.to_string(), n.name, n.where.line, kUplinkOverlap);
        }
    }
    return true;
}

// The upstream router: another host of the uplink subnet.
void Parser::uplink_gateway(const Field& f, UplinkConfig& up, bool subnet_valid) {
    const auto gateway = ipv4(f, "'gateway'");
    if (!gateway) return;
    up.gateway = *gateway;
    if (!subnet_valid) return;  // nothing to check it against
    const Ipv4Prefix subnet = up.subnet();
    const std::string text = gateway->to_string();
    if (!subnet.contains(*gateway))
        error(f, "gateway {} is outside the uplink subnet {}", text, subnet.to_string());
    else if (*gateway == subnet.addr)
        error(f, "gateway {} is the network address of {}", text, subnet.to_string());
    else if (*gateway == subnet.broadcast())
        error(f, "gateway {} is the broadcast address of {}", text, subnet.to_string());
    else if (*gateway == up.address)
        error(f, "gateway {} is the uplink address itself; it must be the upstream router's", text);
}

// "min-max", inclusive: the source ports masquerade may give connections.
void Parser::uplink_nat_ports(const Field& f, UplinkConfig& up) {
    constexpr std::string_view kExpected = "a port range like 20000-59999";
    const auto text = scalar(f, "'nat_ports'", kExpected);
    if (!text) return;
    const std::string_view range{*text};
    const size_t dash = range.find('-');
    const auto first =
        dash == std::string_view::npos ? std::nullopt : parse_unsigned(range.substr(0, dash));
    const auto last =
        dash == std::string_view::npos ? std::nullopt : parse_unsigned(range.substr(dash + 1));
    if (!first || !last) {
        error(f, "'nat_ports' must be {}, got '{}'", kExpected, *text);
        return;
    }
    const auto in_range = [](uint64_t port) { return port >= kMinNatPort && port <= 65535; };
    if (!in_range(*first) || !in_range(*last)) {
        error(f, "'nat_ports' must be between {} and 65535 at both ends, got {}", kMinNatPort,
              *text);
        return;
    }
    if (*first > *last) {
        error(f, "'nat_ports' range {} is reversed; did you mean {}-{}?", *text, *last, *first);
        return;
    }
    if (const uint64_t count = *last - *first + 1; count < kMinNatPorts) {
        error(f, "'nat_ports' range {} has only {} port{}; masquerade needs at least {}", *text,
              count, count == 1 ? "" : "s", kMinNatPorts);
        return;
    }
    up.nat_port_min = static_cast<uint16_t>(*first);
    up.nat_port_max = static_cast<uint16_t>(*last);
}

void Parser::security_group(const Field& field) {
    const auto m = mapping(field, "entry of 'security_groups'", "in security group", kGroupKeys);
    if (!m) return;
    report_duplicates(*m, "in security group");
    SecurityGroupConfig group;
    group.where = at(m->node);

    std::string owner = "security group";
    if (const Field* f = m->get("name")) {
        if (const auto n = name(*f, "security group")) {
            group.name = *n;
            owner = fmt::format("security group '{}'", *n);
            const auto [it, inserted] = group_names_.try_emplace(*n, *n, at(*f).line);
            if (!inserted)
                error(*f, "duplicate security group name '{}' (first at line {})", *n,
                      it->second.line);
        }
    }
    require(*m, owner, std::array<std::string_view, 1>{"name"});

    // A group without rules allows nothing, but its members can still be a remote_group.
    if (const Field* f = m->get("rules")) {
        if (const auto items = list(*f, "'rules'")) {
            const std::string rule_owner = fmt::format("rule of {}", owner);
            for (const Field& item : *items)
                if (auto r = rule(item, rule_owner)) group.rules.push_back(std::move(*r));
        }
    }
    config_.security_groups.push_back(std::move(group));
}

std::optional<RuleConfig> Parser::rule(const Field& field, std::string_view owner) {
    const auto m = mapping(field, "entry of 'rules'", "in rule", kRuleKeys);
    if (!m) return std::nullopt;
    report_duplicates(*m, "in rule");
    require(*m, owner, std::array<std::string_view, 1>{"direction"});
    RuleConfig r;
    r.where = at(m->node);

    if (const Field* f = m->get("direction")) {
        if (const auto direction = scalar(*f, "'direction'", "ingress or egress")) {
            if (*direction == "ingress")
                r.direction = RuleDirection::ingress;
            else if (*direction == "egress")
                r.direction = RuleDirection::egress;
            else
                error(*f, "'direction' must be ingress or egress, got '{}'{}", *direction,
                      suggestion(*direction, kDirectionWords));
        }
    }
    const bool protocol_known = rule_protocol(*m, r);
    rule_ports(*m, r, protocol_known);
    rule_icmp(*m, r, protocol_known);
    rule_remote(*m, r);
    return r;
}

// "tcp", "udp", "icmp", "any" or a number; a number that has a name means the same as the name.
// False if the protocol is invalid, so that what depends on it is not checked against a guess.
bool Parser::rule_protocol(const Mapping& m, RuleConfig& r) {
    const Field* f = m.get("protocol");
    if (!f) return true;  // any
    constexpr std::string_view kExpected = "tcp, udp, icmp, any or a number between 0 and 255";
    const auto text = scalar(*f, "'protocol'", kExpected);
    if (!text) return false;
    if (*text == "any") return true;
    if (const auto it = std::ranges::find(kProtocolNames, *text, &ProtocolName::name);
        it != std::end(kProtocolNames)) {
        r.protocol = it->number;
        return true;
    }
    if (parse_unsigned(*text)) {
        const auto number = integer(*f, "'protocol'", 0, 255);
        if (number) r.protocol = static_cast<uint8_t>(*number);
        return number.has_value();
    }
    error(*f, "'protocol' must be {}, got '{}'{}", kExpected, *text,
          suggestion(*text, kProtocolWords));
    return false;
}

// How a rule's protocol reads in errors: its name if it has one, else its number.
std::string protocol_text(const std::optional<uint8_t>& protocol) {
    if (!protocol) return "any";
    if (const auto it = std::ranges::find(kProtocolNames, *protocol, &ProtocolName::number);
        it != std::end(kProtocolNames))
        return std::string{it->name};
    return fmt::format("{}", *protocol);
}

// One destination port ("443") or an inclusive range ("8000-8080"), TCP and UDP only.
void Parser::rule_ports(const Mapping& m, RuleConfig& r, bool protocol_known) {
    const Field* f = m.get("ports");
    if (!f) return;
    constexpr std::string_view kExpected = "a port like 443 or a range like 8000-8080";
    const auto text = scalar(*f, "'ports'", kExpected);
    if (!text) return;
    if (protocol_known && r.protocol != ipproto::kTcp && r.protocol != ipproto::kUdp)
        error(*f, "ports need protocol tcp or udp, not {}", protocol_text(r.protocol));

    const size_t dash = text->find('-');
    const auto first = parse_unsigned(text->substr(0, dash));
    const auto last = dash == std::string::npos
                          ? first
                          : parse_unsigned(std::string_view{*text}.substr(dash + 1));
    if (!first || !last) {
        error(*f, "'ports' must be {}, got '{}'", kExpected, *text);
        return;
    }
    const auto in_range = [](uint64_t port) { return port >= 1 && port <= 65535; };
    if (dash == std::string::npos && !in_range(*first)) {
        error(*f, "'ports' must be between 1 and 65535, got {}", *text);
        return;
    }
    if (!in_range(*first) || !in_range(*last)) {
        error(*f, "'ports' must be between 1 and 65535 at both ends, got {}", *text);
        return;
    }
    if (*first > *last) {
        error(*f, "'ports' range {} is reversed; did you mean {}-{}?", *text, *last, *first);
        return;
    }
    r.port_min = static_cast<uint16_t>(*first);
    r.port_max = static_cast<uint16_t>(*last);
}

// icmp_type and icmp_code narrow an ICMP rule; a code means nothing without its type.
void Parser::rule_icmp(const Mapping& m, RuleConfig& r, bool protocol_known) {
    const bool icmp = r.protocol == ipproto::kIcmp;
    const Field* type = m.get("icmp_type");
    if (type) {
        if (const auto v = integer(*type, "'icmp_type'", 0, 255)) {
            r.icmp_type = static_cast<uint8_t>(*v);
            if (protocol_known && !icmp)
                error(*type, "icmp_type needs protocol icmp, not {}", protocol_text(r.protocol));
        }
    }
    const Field* code = m.get("icmp_code");
    if (!code) return;
    const auto v = integer(*code, "'icmp_code'", 0, 255);
    if (!v) return;
    r.icmp_code = static_cast<uint8_t>(*v);
    if (protocol_known && !icmp)
        error(*code, "icmp_code needs protocol icmp, not {}", protocol_text(r.protocol));
    else if (!type)
        error(*code, "icmp_code needs icmp_type");
}

// remote (a CIDR) or remote_group (a group's members), not both; neither means anywhere.
void Parser::rule_remote(const Mapping& m, RuleConfig& r) {
    const Field* remote = m.get("remote");
    const Field* group = m.get("remote_group");
    if (remote) r.remote = prefix(*remote, "'remote'");
    if (group) {
        if (const auto name = scalar(*group, "'remote_group'", "a security group name")) {
            r.remote_group = *name;
            remote_groups_.push_back(*group);
        }
    }
    if (remote && group) {
        // Pointed at whichever of the two comes second.
        const SourceLocation a = at(*remote);
        const SourceLocation b = at(*group);
        const bool group_second = std::pair{a.line, a.column} < std::pair{b.line, b.column};
        error(group_second ? b : a, "remote and remote_group are mutually exclusive");
    }
}

}  // namespace

std::expected<Config, Errors> parse_config(std::string_view yaml_text, std::string_view file_name) {
    return Parser{file_name}.parse(yaml_text);
}

std::expected<Config, Errors> load_config_file(const std::string& path) {
    const auto cannot_read = [&](int err) {
        return std::unexpected(
            Errors{Error{{path, 0, 0}, fmt::format("cannot read: {}", std::strerror(err))}});
    };
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (!file) return cannot_read(errno);
    std::string text;
    char buffer[4096];
    size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) text.append(buffer, n);
    const int err = std::ferror(file) ? errno : 0;
    std::fclose(file);
    if (err != 0) return cannot_read(err);

    auto config = parse_config(text, path);
    if (config) config->source_file = path;
    return config;
}

}  // namespace calyx::config
