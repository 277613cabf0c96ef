// What a live reload may change. Everything the snapshot holds (networks, instances, security
// groups, DHCP options, timeouts) can; what was fixed when calyx started (EAL, lcores, buffer
// pool, table sizes, the sockets it listens on) cannot, and a reload that changes it is
// refused as a whole, with the running configuration kept.
#pragma once

#include <optional>
#include <string>

#include "calyx/config.hpp"

namespace calyx::cp {

// nullopt when `next` can be applied to a router running `running`; otherwise why not.
std::optional<std::string> restart_required(const config::Config& running, const config::Config& next);

}  // namespace calyx::cp
