#include "calyx_model.hpp"

#include <cstring>

#include "calyx/headers.hpp"
#include "cp/snapshot_builder.hpp"
#include "dp/batch.hpp"
#include "dp/pipeline.hpp"
#include "dp/worker_context.hpp"

namespace calyx::difftest {
namespace {

const MacAddr kGatewayMac{{0xee, 0xee, 0xee, 0xee, 0xee, 0xee}};  // calyx's default

}  // namespace

std::expected<std::unique_ptr<CalyxModel>, std::string> CalyxModel::create(const std::string& yaml) {
    std::unique_ptr<CalyxModel> m(new CalyxModel());
    auto cfg = config::parse_config(yaml, "calyx.yaml");
    if (!cfg) return std::unexpected("model: " + cfg.error().front().to_string());
    m->config_ = std::move(*cfg);
    auto table = dp::ConnTable::create(m->config_.dataplane.conntrack.capacity, -1);
    if (!table) return std::unexpected("model: " + table.error());
    m->conntrack_ = std::move(*table);
    std::map<std::string, uint16_t> zones;
    cp::SnapshotInputs in;
    in.port_slot = [&](const config::InstanceConfig& i) {
        return m->slots_.try_emplace(i.name, static_cast<uint16_t>(m->slots_.size())).first->second;
    };
    in.zone = [&](const config::NetworkConfig& n) {
        return zones.try_emplace(n.name, static_cast<uint16_t>(zones.size() + 1)).first->second;
    };
    in.conntrack = m->conntrack_.get();
    auto snap = cp::build_snapshot(m->config_, in, 1);
    if (!snap) return std::unexpected("model: " + snap.error());
    m->snapshot_ = std::move(*snap);
    if (!m->slots_.contains("web-1") || !m->slots_.contains("db-1"))
        return std::unexpected(std::string("model: the configuration has no web-1 or db-1"));
    return m;
}

ModelVerdict CalyxModel::run(Side from, const Bytes& ip, uint64_t now_ns) {
    alignas(64) static uint8_t storage[2048 + 128];
    const EtherHdr eth{kGatewayMac, mac_of(from), Be16::from_host(ethertype::kIpv4)};
    std::memcpy(storage + 128, &eth, sizeof eth);
    std::memcpy(storage + 128 + sizeof eth, ip.data(), ip.size());
    dp::Batch batch;
    batch.count = 1;
    batch.frames[0].buf = storage;
    batch.frames[0].buf_len = sizeof storage;
    batch.frames[0].off = 128;
    batch.frames[0].len = static_cast<uint32_t>(sizeof eth + ip.size());
    batch.admit(0, slots_.at(from == Side::client ? "web-1" : "db-1"));
    dp::WorkerContext ctx{*counters_, now_ns, {}, fragments_.get()};
    dp::run_pipeline(batch, *snapshot_, ctx);
    return {batch.meta[0].verdict == dp::Verdict::forward, batch.meta[0].reason};
}

}  // namespace calyx::difftest
