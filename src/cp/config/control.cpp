// control: the control socket calyxctl talks to.
#include "cp/config/sections.hpp"

namespace calyx::config {
namespace {

constexpr std::string_view kControlKeys[] = {"socket"};

}  // namespace

void read_control(Parser& parser, const Field& field) {
    const auto m = parser.mapping(field, "'control'", "in control", kControlKeys);
    if (!m) return;
    parser.report_duplicates(*m, "in control");
    if (const Field* f = m->get("socket"))
        if (auto path = parser.socket_path(*f, "'socket'"))
            parser.config().control.socket = std::move(*path);
}

}  // namespace calyx::config
