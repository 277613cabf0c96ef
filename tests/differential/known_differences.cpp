#include "known_differences.hpp"

#include <array>

namespace calyx::difftest {
namespace {

constexpr std::array<KnownDifference, 0> kClasses{};

}  // namespace

std::span<const KnownDifference> known_differences() { return kClasses; }

std::optional<std::string_view> explain(const Scenario& sc, size_t at, bool linux_passed, bool calyx_passed) {
    for (const auto& c : kClasses)
        if (c.explains(sc, at, linux_passed, calyx_passed)) return c.name;
    return std::nullopt;
}

}  // namespace calyx::difftest
