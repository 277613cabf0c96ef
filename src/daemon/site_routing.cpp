#include "daemon/site_routing.hpp"

#include <fmt/format.h>

#include "cp/site_routes.hpp"

namespace calyx::daemon {
namespace {

std::tuple<uint32_t, uint8_t, uint32_t> key_of(const KernelRoute& r) {
    return {r.prefix.addr.value, r.prefix.length, r.priority};
}

}  // namespace

std::expected<std::unique_ptr<SiteRouting>, std::string> SiteRouting::start(const config::RoutingConfig& tables,
                                                                            uint64_t now_ns) {
    std::unique_ptr<SiteRouting> s(new SiteRouting());
    s->tables_ = tables;
    auto requests = io::Netlink::open();
    if (!requests) return std::unexpected(fmt::format("routing: {}", requests.error()));
    s->requests_ = std::move(*requests);
    // Subscribed before the first dump: a change between the two is seen twice, never missed.
    auto events = io::Netlink::open(/*route_events=*/true);
    if (!events) return std::unexpected(fmt::format("routing: {}", events.error()));
    s->events_ = std::move(*events);
    auto routes = s->requests_->dump_routes(tables.import_table);
    if (!routes) return std::unexpected(fmt::format("routing: {}", routes.error()));
    for (KernelRoute& r : *routes) s->import_[key_of(r)] = std::move(r);
    s->last_import_dump_ns_ = now_ns;
    ++s->stats_.dumps;
    s->publish_import();
    return s;
}

std::expected<void, std::string> SiteRouting::sync_export(const config::Config& cfg, uint64_t now_ns) {
    last_export_sync_ns_ = now_ns;
    const auto current = requests_->dump_routes(tables_.export_table);
    if (!current) return std::unexpected(fmt::format("routing: {}", current.error()));
    const std::vector<KernelRoute> wanted = cp::exported_routes(cfg);
    const cp::ExportPlan plan = cp::plan_export(wanted, *current);
    std::string failed;
    // Removals first: a route moved between instances of the table never exists twice.
    for (const KernelRoute& r : plan.remove)
        if (auto done = requests_->delete_route(r); !done) failed += (failed.empty() ? "" : "; ") + done.error();
    for (const KernelRoute& r : plan.add)
        if (auto done = requests_->replace_route(r); !done) failed += (failed.empty() ? "" : "; ") + done.error();
    stats_.exported = wanted.size();
    if (!plan.add.empty() || !plan.remove.empty())
        fmt::print(stderr, "calyx: routing: export table {}: {} added, {} removed, {} in all\n", tables_.export_table,
                   plan.add.size(), plan.remove.size(), wanted.size());
    if (!failed.empty()) return std::unexpected(fmt::format("routing: {}", failed));
    return {};
}

void SiteRouting::reconcile_export(const config::Config& cfg, uint64_t now_ns) {
    if (now_ns - last_export_sync_ns_ < kReconcileNs) return;
    if (auto done = sync_export(cfg, now_ns); !done) fmt::print(stderr, "calyx: {}\n", done.error());
}

size_t SiteRouting::withdraw() {
    const auto current = requests_->dump_routes(tables_.export_table);
    if (!current) {
        fmt::print(stderr, "calyx: routing: cannot withdraw the exported routes: {}\n", current.error());
        return 0;
    }
    const cp::ExportPlan plan = cp::plan_export({}, *current);
    for (const KernelRoute& r : plan.remove)
        if (auto done = requests_->delete_route(r); !done) fmt::print(stderr, "calyx: routing: {}\n", done.error());
    stats_.exported = 0;
    return plan.remove.size();
}

bool SiteRouting::dump_import(uint64_t now_ns, bool periodic) {
    last_import_dump_ns_ = now_ns;
    auto routes = requests_->dump_routes(tables_.import_table);
    if (!routes) {
        // Keep what is known: a failed read loses nothing; the next tick tries again.
        fmt::print(stderr, "calyx: {}\n", routes.error());
        last_import_dump_ns_ = 0;
        return false;
    }
    ++stats_.dumps;
    std::map<std::tuple<uint32_t, uint8_t, uint32_t>, KernelRoute> fresh;
    for (KernelRoute& r : *routes) fresh[key_of(r)] = std::move(r);
    if (fresh == import_) return false;
    if (periodic) {
        ++stats_.reconcile_changes;
        fmt::print(stderr, "calyx: routing: import table {} differed from its events; reread\n", tables_.import_table);
    }
    import_ = std::move(fresh);
    return true;
}

bool SiteRouting::follow_import(uint64_t now_ns) {
    bool changed = false;
    bool resync = false;
    auto events = events_->read_route_events();
    if (!events) {
        fmt::print(stderr, "calyx: routing: {}\n", events.error());
        resync = true;
    } else if (!*events) {
        ++stats_.overflows;
        fmt::print(stderr, "calyx: routing: route events overflowed; rereading import table {}\n",
                   tables_.import_table);
        resync = true;
    } else {
        for (io::RouteEvent& e : **events) {
            if (e.route.table != tables_.import_table) continue;
            ++stats_.events;
            const auto key = key_of(e.route);
            if (e.deleted) {
                changed |= import_.erase(key) > 0;
            } else {
                auto& slot = import_[key];
                changed |= !(slot == e.route);
                slot = std::move(e.route);
            }
        }
    }
    if (resync || now_ns - last_import_dump_ns_ >= kReconcileNs) changed |= dump_import(now_ns, !resync);
    if (changed) publish_import();
    return changed;
}

void SiteRouting::publish_import() {
    imported_.clear();
    for (const auto& [key, r] : import_) imported_.push_back(r);
}

}  // namespace calyx::daemon
