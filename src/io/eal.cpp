#include "io/eal.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_errno.h>

namespace calyx::io {

std::vector<std::string> eal_arguments(const config::DataplaneConfig& dp,
                                       const std::optional<config::UplinkConfig>& uplink,
                                       const std::string& argv0) {
    std::vector<std::string> args{argv0};
    auto given = [&](std::string_view opt) {
        return std::any_of(dp.eal_args.begin(), dp.eal_args.end(),
                           [&](const auto& a) { return a.starts_with(opt); });
    };
    // lcore i runs on CPU i, unless the operator maps lcores to CPUs with --lcores (which
    // must then name lcore 0 and the workers).
    if (!given("--lcores")) {
        std::vector<unsigned> lcores{0};
        lcores.insert(lcores.end(), dp.workers.begin(), dp.workers.end());
        args.push_back("-l");
        args.push_back(fmt::format("{}", fmt::join(lcores, ",")));
    }
    args.push_back("--main-lcore");
    args.push_back("0");
    // An allowlist probes exactly the listed devices; without one EAL would probe every PCI
    // NIC it can bind, including the one that carries this machine's own network.
    if (const auto* pci = uplink ? std::get_if<config::PciPort>(&uplink->port) : nullptr) {
        args.push_back("-a");
        args.push_back(pci->address);
    } else {
        args.push_back("--no-pci");
    }
    // No shared runtime files unless asked for: --in-memory with hugepages; --no-huge is
    // legacy memory, which --in-memory refuses, so only the shared config is dropped.
    if (!given("--file-prefix") && !given("--in-memory") && !given("--no-shconf"))
        args.push_back(given("--no-huge") ? "--no-shconf" : "--in-memory");
    args.insert(args.end(), dp.eal_args.begin(), dp.eal_args.end());
    return args;
}

std::expected<void, std::string> init_eal(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    std::vector<std::string> storage = args;  // rte_eal_init may permute argv
    for (auto& a : storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    if (rte_eal_init(static_cast<int>(argv.size() - 1), argv.data()) < 0)
        return std::unexpected(fmt::format("EAL initialisation failed ({}): {}",
                                           fmt::join(args, " "), rte_strerror(rte_errno)));
    return {};
}

std::expected<void, std::string> ensure_lcore_id() {
    if (rte_lcore_id() != LCORE_ID_ANY) return {};
    if (rte_thread_register() != 0)
        return std::unexpected(fmt::format("cannot give this control thread an EAL lcore id: {}",
                                           rte_strerror(rte_errno)));
    // Gives the id back when the thread ends (EAL has only RTE_MAX_LCORE of them).
    struct Registration {
        ~Registration() { rte_thread_unregister(); }
    };
    static thread_local Registration registration;
    (void)registration;
    return {};
}

}  // namespace calyx::io
