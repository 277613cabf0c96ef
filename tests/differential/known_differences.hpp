// Where calyx's verdict differs from Linux's on purpose: each class is documented in
// doc/architecture.md ("Where calyx's conntrack differs from Linux, and why"), and the
// differential test accepts a difference only if one of these classes explains exactly that
// packet: its kind, both verdicts and calyx's drop reason.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "calyx/drop_reason.hpp"
#include "scenarios.hpp"

namespace calyx::difftest {

// One packet on which the two routers disagreed.
struct Difference {
    const Scenario& scenario;
    size_t at;  // index of the packet in the scenario
    bool linux_passed;
    bool calyx_passed;
    DropReason calyx_reason;  // when calyx dropped it
};

struct KnownDifference {
    std::string_view name;  // as in doc/architecture.md
    bool (*explains)(const Difference&);
};

// Every class, in the order of the documentation.
std::span<const KnownDifference> known_differences();

// The class that explains `d`, if any.
std::optional<std::string_view> explain(const Difference& d);

}  // namespace calyx::difftest
