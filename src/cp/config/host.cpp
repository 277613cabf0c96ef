// host: this compute host's name. Instances whose `host` is another are that host's: this
// calyx opens no port for them but knows them (routing checks, remote_group, explain).
#include "cp/config/sections.hpp"

namespace calyx::config {

void read_host(Parser& parser, const Field& field) {
    if (auto name = parser.name(field, "host")) parser.config().host = std::move(*name);
}

}  // namespace calyx::config
