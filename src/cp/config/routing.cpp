// routing: the kernel routing tables calyx exports its instances to and imports the site's
// routes from (config.hpp, RoutingConfig). Imported next hops are hosts of the uplink subnet,
// so routing needs an uplink.
#include "cp/config/sections.hpp"

#include <array>

namespace calyx::config {
namespace {

constexpr std::string_view kRoutingKeys[] = {"export_table", "import_table"};

// The kernel's own tables (rtnetlink.h): calyx must never own them.
struct KernelTable {
    uint32_t id;
    std::string_view name;
};
constexpr KernelTable kKernelTables[] = {{253, "default"}, {254, "main"}, {255, "local"}};

std::optional<uint32_t> table(Parser& parser, const Field& f, std::string_view label) {
    const auto v = parser.integer(f, label, 1, kMaxU32);
    if (!v) return std::nullopt;
    for (const KernelTable& k : kKernelTables) {
        if (*v == k.id) {
            parser.error(f,
                         "{} {} is the kernel's '{}' table; calyx adds and removes every route of "
                         "its own in its tables, so give it tables of their own (e.g. 100 and 101)",
                         label, *v, k.name);
            return std::nullopt;
        }
    }
    return static_cast<uint32_t>(*v);
}

}  // namespace

void read_routing(Parser& parser, const Field& field) {
    const auto m = parser.mapping(field, "'routing'", "in routing", kRoutingKeys);
    if (!m) return;
    parser.report_duplicates(*m, "in routing");
    parser.require(*m, "routing", kRoutingKeys);
    RoutingConfig routing;
    routing.where = parser.at(m->node);
    const Field* ex = m->get("export_table");
    const Field* im = m->get("import_table");
    std::optional<uint32_t> export_table, import_table;
    if (ex) export_table = table(parser, *ex, "'export_table'");
    if (im) import_table = table(parser, *im, "'import_table'");
    if (!export_table || !import_table) return;
    if (*export_table == *import_table) {
        parser.error(*im,
                     "'import_table' is 'export_table' ({}): calyx would import its own routes; "
                     "BIRD learns from one table and writes into the other",
                     *import_table);
        return;
    }
    if (!parser.config().uplink) {
        parser.error(field.key,
                     "routing needs an uplink: the routes it imports lead to other hosts on the "
                     "uplink's subnet");
        return;
    }
    routing.export_table = *export_table;
    routing.import_table = *import_table;
    parser.config().routing = routing;
}

}  // namespace calyx::config
