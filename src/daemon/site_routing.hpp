// The netlink side of the site's routes (cp/site_routes.hpp has what they are):
//   export  export_table holds a /32 per instance of this host: reconciled at start (stale
//           entries of an earlier calyx removed), after every reload, and every kReconcileNs
//           (someone may have flushed the table); withdrawn when calyx stops, so BIRD withdraws
//           them. Only calyx's own routes in that table are ever touched.
//   import  import_table as BIRD writes it: dumped at start, then followed by route events; a
//           full dump again when the event socket overflowed (the kernel drops events under
//           load) and every kReconcileNs (it sends no delete for routes of a link that went
//           down, as VPP linux-cp's users found).
// Control plane only (the main lcore's housekeeping and reloads); never blocks on anything but
// the kernel's answers.
#pragma once

#include <cstdint>
#include <expected>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "calyx/config.hpp"
#include "calyx/kernel_route.hpp"
#include "io/netlink.hpp"

namespace calyx::daemon {

class SiteRouting {
public:
    static constexpr uint64_t kReconcileNs = 30'000'000'000;

    // Opens the sockets and dumps import_table once.
    static std::expected<std::unique_ptr<SiteRouting>, std::string> start(const config::RoutingConfig& tables,
                                                                         uint64_t now_ns);

    // Makes export_table hold exactly the /32s of cfg's instances of this host.
    std::expected<void, std::string> sync_export(const config::Config& cfg, uint64_t now_ns);
    // Every kReconcileNs: export_table again, if anyone changed it.
    void reconcile_export(const config::Config& cfg, uint64_t now_ns);
    // Removes every route calyx exported (calyx stops).
    // Returns how many routes it removed.
    size_t withdraw();

    // Reads the route events since the last call (or dumps import_table: after an overflow,
    // every kReconcileNs). True when import_table's routes changed.
    bool follow_import(uint64_t now_ns);
    // import_table as calyx knows it.
    const std::vector<KernelRoute>& imported() const { return imported_; }

    struct Stats {
        uint64_t exported = 0;  // routes calyx keeps in export_table
        uint64_t events = 0;    // route events of import_table
        uint64_t dumps = 0;     // full reads of import_table (start, overflows, reconciles)
        uint64_t overflows = 0;
        uint64_t reconcile_changes = 0;  // periodic dumps that found what events had not said
    };
    const Stats& stats() const { return stats_; }

private:
    SiteRouting() = default;
    bool dump_import(uint64_t now_ns, bool periodic);
    void publish_import();

    config::RoutingConfig tables_;
    std::unique_ptr<io::Netlink> requests_;
    std::unique_ptr<io::Netlink> events_;
    // import_table by (prefix, metric), as the kernel keys routes of one table.
    std::map<std::tuple<uint32_t, uint8_t, uint32_t>, KernelRoute> import_;
    std::vector<KernelRoute> imported_;
    uint64_t last_import_dump_ns_ = 0;
    uint64_t last_export_sync_ns_ = 0;
    Stats stats_;
};

}  // namespace calyx::daemon
