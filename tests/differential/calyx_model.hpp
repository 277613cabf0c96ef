// calyx's own pipeline in the test process, on the same configuration as the calyx under test:
// it says *why* calyx dropped a packet (the drop reason), which the real process does not tell
// per packet. It is also a check on the harness: the real calyx and its model must agree on
// every packet, or a frame was lost on the way and the comparison is void.
#pragma once

#include <expected>
#include <map>
#include <memory>
#include <string>

#include "calyx/config.hpp"
#include "calyx/drop_reason.hpp"
#include "dp/conntrack.hpp"
#include "dp/counters.hpp"
#include "dp/fragments.hpp"
#include "dp/snapshot.hpp"
#include "scenarios.hpp"

namespace calyx::difftest {

struct ModelVerdict {
    bool forwarded = false;
    DropReason reason{};  // when dropped
};

class CalyxModel {
public:
    // `yaml`: the configuration calyx runs (the client is web-1, the server db-1).
    static std::expected<std::unique_ptr<CalyxModel>, std::string> create(const std::string& yaml);

    ModelVerdict run(Side from, const Bytes& ip, uint64_t now_ns);

private:
    CalyxModel() = default;

    config::Config config_;
    std::map<std::string, uint16_t> slots_;
    std::unique_ptr<dp::ConnTable> conntrack_;  // before snapshot_: the snapshot points at it
    std::unique_ptr<dp::Snapshot> snapshot_;
    std::unique_ptr<dp::WorkerCounters> counters_ = std::make_unique<dp::WorkerCounters>();
    std::unique_ptr<dp::FragmentVerdicts> fragments_ = std::make_unique<dp::FragmentVerdicts>();
};

}  // namespace calyx::difftest
