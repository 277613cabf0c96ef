// libFuzzer target: the YAML configuration. Any text either parses into a Config whose snapshot
// the control plane can build, or yields errors that each name a place in the file; nothing
// else (no crash, no exception escaping, no hang: yaml-cpp's known endless loops are avoided by
// the parser). tests/fuzz/corpus/config holds the seed inputs: conf/*.yaml and the test sites.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "calyx/config.hpp"
#include "cp/snapshot_builder.hpp"
#include "dp/conntrack.hpp"
#include "dp/nat.hpp"
#include "dp/neighbor.hpp"
#include "fuzz_site.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    calyx::fuzz::init_eal();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace calyx;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const auto cfg = config::parse_config(text, "fuzz.yaml");
    if (!cfg) {
        CALYX_FUZZ_CHECK(!cfg.error().empty(), "a rejected file has at least one error");
        for (const auto& e : cfg.error()) {
            CALYX_FUZZ_CHECK(e.where.file == "fuzz.yaml", "every error names the file");
            CALYX_FUZZ_CHECK(!e.message.empty(), "every error says something");
        }
        return 0;
    }
    // A valid Config must become a snapshot (the builder's own limits aside, reported as text).
    static std::unique_ptr<dp::ConnTable> table = [] {
        auto t = dp::ConnTable::create(1024, -1);
        CALYX_FUZZ_CHECK(t.has_value(), "connection table");
        return std::move(*t);
    }();
    dp::NeighborTable neighbors;
    std::optional<dp::NatPortAllocator> nat;
    cp::SnapshotInputs in;
    uint16_t next_slot = 0;
    in.port_slot = [&](const config::InstanceConfig&) { return next_slot++; };
    uint16_t next_zone = 1;
    in.zone = [&](const config::NetworkConfig&) { return next_zone++; };
    in.conntrack = table.get();
    if (cfg->uplink) {
        auto n = dp::NatPortAllocator::create({cfg->uplink->nat_port_min, cfg->uplink->nat_port_max},
                                              dp::NatPortAllocator::kDefaultPartitions, 1);
        CALYX_FUZZ_CHECK(n.has_value(), "a valid uplink's NAT range makes an allocator");
        nat.emplace(std::move(*n));
        in.uplink_slot = 1023;
        in.nat = &*nat;
        in.neighbors = &neighbors;
    }
    (void)cp::build_snapshot(*cfg, in, 1);
    return 0;
}
