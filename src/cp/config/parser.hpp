// The configuration parser's core, shared by every section (src/cp/config/<section>.cpp):
// fields and mappings of the YAML tree, errors with the file:line:col of the node they
// concern, suggestions for misspelt words, the readers of common values (integers, addresses,
// names, paths), and what earlier sections have learnt that later ones check against.
//
// The YAML -> Config pass (parser.cpp) reads the top-level sections in the order of
// sections.hpp, whatever their order in the file; each section reads its own part of the tree
// into Parser::config() and records every error it finds. Errors are sorted by position at
// the end, so the user reads them top to bottom. yaml-cpp throws; nothing it throws leaves
// parser.cpp.
//
// Includes: `include: FILE` or `include: [FILE, ...]` at the top level of the main file reads
// the sections of those files (paths relative to the including file) as if they were written
// there, so a host's own file (host, uplink, host_interface, routing) can take the site's
// sections (networks, security groups, instances) from one file shared by every host. Each
// section comes from exactly one file; included files include nothing further. Errors name the
// file they are in.
#pragma once

#include <cstdint>
#include <expected>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "calyx/config.hpp"

namespace calyx::config {

using YAML::Node;
using Keys = std::span<const std::string_view>;

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

inline constexpr uint64_t kMaxU32 = std::numeric_limits<uint32_t>::max();

// Address ranges no instance network and no uplink subnet may use: they are never routed to a
// host's neighbours.
struct ReservedRange {
    Ipv4Prefix prefix;
    std::string_view what;
};
inline constexpr ReservedRange kReserved[] = {
    {{Ipv4Addr::from_octets(0, 0, 0, 0), 8}, "'this network'"},
    {{Ipv4Addr::from_octets(127, 0, 0, 0), 8}, "loopback"},
    {{Ipv4Addr::from_octets(224, 0, 0, 0), 4}, "multicast"},
    {{Ipv4Addr::from_octets(240, 0, 0, 0), 4}, "reserved"},
};

size_t edit_distance(std::string_view a, std::string_view b);

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

// "'text'", "a list", "a mapping", "an empty value": what a node is, for "got ..." in errors.
std::string describe(const Node& node);

// Plain decimal, digits only. A number too large for uint64 comes back as the maximum, which
// every range check rejects.
std::optional<uint64_t> parse_unsigned(std::string_view text);

// What a network entry leaves for the sections after it, valid or not.
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

// What the sections read so far have learnt that later sections check against. A section
// only adds to what it owns (the comments name the owner) and reads what earlier sections own.
struct Known {
    // dataplane: the gateway MAC, nullopt if the configured one is invalid. No instance may
    // use it.
    std::optional<MacAddr> gateway_mac;
    // networks: every network entry, in file order. They become Config::networks at the end.
    std::vector<NetworkEntry> networks;
    // security_groups: the valid group names, for instances and remote_group references.
    std::map<std::string, FirstUse, std::less<>> group_names;
    // Values that no two owners may share: MACs and addresses of instances; the vhost-user
    // sockets of instances and the uplink.
    std::map<MacAddr, FirstUse> macs;
    std::map<Ipv4Addr, FirstUse> addresses;
    std::map<std::string, FirstUse, std::less<>> sockets;
};

// Reads an included file: its text, or what went wrong ("No such file or directory").
using FileReader = std::function<std::expected<std::string, std::string>(const std::string& path)>;
std::expected<std::string, std::string> read_text_file(const std::string& path);

// The machine's host name: the default of `host:`.
std::string machine_host_name();

class Parser {
  public:
    explicit Parser(std::string_view file, FileReader reader = read_text_file)
        : file_(file), current_file_(file), reader_(std::move(reader)) {
        known_.gateway_mac = config_.dataplane.gateway_mac;
        config_.host = machine_host_name();
    }

    // Reads every section of sections.hpp, in its order. The valid Config, or every error,
    // sorted by position. Call once.
    std::expected<Config, Errors> parse(std::string_view text);

    // The configuration being read, and what earlier sections learnt.
    Config& config() { return config_; }
    Known& known() { return known_; }

    // --- errors and locations ---
    // In the file being read (the main file, or an included one).
    SourceLocation at(const Node& node) const {
        const YAML::Mark mark = node.Mark();
        if (mark.is_null()) return {current_file_, 1, 1};
        return {current_file_, mark.line + 1, mark.column + 1};
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
    // Names of networks, instances and groups appear in logs, metrics labels and calyxctl
    // arguments: letters, digits, '_', '.' and '-'.
    std::optional<std::string> name(const Field& field, std::string_view what);
    std::optional<std::string> socket_path(const Field& field, std::string_view label);
    std::optional<std::string> interface_name(const Field& field, std::string_view label);
    std::optional<std::string> pci_address(const Field& field, std::string_view label);

  private:
    // FNV-1a (64 bits) over every text read, in order, each preceded by its length: stable
    // across builds and versions (a successor compares it with its predecessor's). Not the
    // file names: the same file reached by another path (relative, a symlink) is the same
    // configuration.
    void digest(std::string_view text);
    uint64_t digest_ = 0xcbf29ce484222325;
    // A top-level field and the file it is in.
    struct TopField {
        Field field;
        std::string file;
    };
    std::optional<Node> load(const std::string& yaml);
    void collect(const Node& root, bool may_include, std::map<std::string, TopField, std::less<>>& top);
    void include(const Field& field, std::map<std::string, TopField, std::less<>>& top);

    std::string file_;
    std::string current_file_;
    FileReader reader_;
    Errors errors_;
    Config config_;
    Known known_;
};

// A network's `kind:` (public, nat or private), for the file's networks and a datastore's
// alike; a misspelt kind gets an error with the nearest word.
std::optional<NetworkKind> read_network_kind(Parser& parser, const Field& field);

}  // namespace calyx::config
