// The top-level sections of the configuration, each read by its own file
// (src/cp/config/<section>.cpp defines `void read_<section>(Parser&, const Field&)`).
//
// Adding a section: its model in calyx/config.hpp, its file here (and in meson.build), and one
// line in CALYX_CONFIG_SECTIONS at the place in the order where what it checks against has
// been read. The list also gives the top-level keys that are allowed.
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "cp/config/parser.hpp"

namespace calyx::config {

// In reading order, whatever the order in the file: a section may check against what the
// sections before it have read (Parser::known, Parser::config).
//   host first: instances of this host need a port, the others need none;
//   networks before uplink: the uplink subnet must not overlap any network;
//   uplink before host_interface and routing: both build on it;
//   security_groups before instances: instances name their groups;
//   limits before instances: an instance's limits start from its defaults;
//   datastore last: with one, the file must not declare the site's sections.
#define CALYX_CONFIG_SECTIONS(X) \
    X(host)                      \
    X(dataplane)                 \
    X(control)                   \
    X(metrics)                   \
    X(networks)                  \
    X(uplink)                    \
    X(host_interface)            \
    X(routing)                   \
    X(security_groups)           \
    X(limits)                    \
    X(instances)                 \
    X(datastore)

#define CALYX_DECLARE_SECTION(key) void read_##key(Parser& parser, const Field& field);
CALYX_CONFIG_SECTIONS(CALYX_DECLARE_SECTION)
#undef CALYX_DECLARE_SECTION

struct Section {
    std::string_view key;
    void (*read)(Parser& parser, const Field& field);
};

inline constexpr Section kSections[] = {
#define CALYX_SECTION_ENTRY(key) {#key, &read_##key},
    CALYX_CONFIG_SECTIONS(CALYX_SECTION_ENTRY)
#undef CALYX_SECTION_ENTRY
};

inline constexpr auto kTopKeys = [] {
    std::array<std::string_view, std::size(kSections)> keys{};
    for (size_t i = 0; i < keys.size(); ++i) keys[i] = kSections[i].key;
    return keys;
}();

// Shared by sections: an error unless `group` names a security group read so far
// (security_groups.cpp).
void check_group_reference(Parser& parser, const Field& field, const std::string& group);
// A `limits:` mapping over `limits` (limits.cpp; instances use it for their own).
void read_limits_into(Parser& parser, const Field& field, LimitsConfig& limits, std::string_view context);

}  // namespace calyx::config
