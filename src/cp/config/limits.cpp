// limits: what one instance may take of what every instance on the host shares (doc/
// architecture.md, "Limits and isolation"). The top-level section gives every instance's
// defaults; an instance's own `limits:` (instances.cpp) overrides any of them.
#include "cp/config/sections.hpp"

#include <array>

namespace calyx::config {
namespace {

// Each key, its field and its largest value.
struct LimitKey {
    std::string_view key;
    uint32_t LimitsConfig::*field;
    uint64_t max;
};
constexpr LimitKey kLimitKeys[] = {
    {"connections", &LimitsConfig::connections, uint64_t{1} << 27},  // the largest table
    {"new_connections_per_second", &LimitsConfig::new_connections_per_second, 1'000'000'000},
    {"nat_ports", &LimitsConfig::nat_ports, 65535},
};
constexpr auto kLimitsKeys = [] {
    std::array<std::string_view, std::size(kLimitKeys)> keys{};
    for (size_t i = 0; i < std::size(kLimitKeys); ++i) keys[i] = kLimitKeys[i].key;
    return keys;
}();

}  // namespace

void read_limits_into(Parser& parser, const Field& field, LimitsConfig& limits, std::string_view context) {
    const auto m = parser.mapping(field, "'limits'", context, kLimitsKeys);
    if (!m) return;
    parser.report_duplicates(*m, context);
    for (const LimitKey& limit : kLimitKeys)
        if (const Field* f = m->get(limit.key))
            if (const auto v = parser.integer(*f, fmt::format("'{}'", limit.key), 1, limit.max))
                limits.*limit.field = static_cast<uint32_t>(*v);
}

void read_limits(Parser& parser, const Field& field) {
    read_limits_into(parser, field, parser.config().limits, "in limits");
}

}  // namespace calyx::config
