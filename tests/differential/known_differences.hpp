// Where calyx's verdict may differ from Linux's on purpose: each class is documented in
// doc/architecture.md ("Where calyx's conntrack differs from Linux, and why"), and the
// differential test accepts a difference only if exactly one of these classes explains it.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "scenarios.hpp"

namespace calyx::difftest {

struct KnownDifference {
    std::string_view name;  // as in doc/architecture.md
    // Whether this class explains the verdicts on packet `at` of `sc`.
    bool (*explains)(const Scenario& sc, size_t at, bool linux_passed, bool calyx_passed);
};

// Every class, in the order of the documentation.
std::span<const KnownDifference> known_differences();

// The class that explains a difference on packet `at`, if any.
std::optional<std::string_view> explain(const Scenario& sc, size_t at, bool linux_passed, bool calyx_passed);

}  // namespace calyx::difftest
