// Security groups -> the data plane's rule tables (dp/rules.hpp), and back to words.
//
// Part of building a snapshot: the configuration's groups and rules become one compiled
// InstancePolicy per instance, remote groups resolved to their current members. The data
// plane never sees the groups themselves; a match carries a RuleOrigin, which describe_rule
// turns into text for calyxctl explain.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "calyx/config.hpp"
#include "dp/rules.hpp"

namespace calyx::cp {

// Compiles the security groups of this host's instances, resolving remote groups to their
// current members on every host of the site. The result is indexed like cfg.local_instances()
// (and so like the snapshot's instances); instances with the same list of groups share one
// policy. The other hosts' instances are checked there: egress on the source's host, ingress
// on the destination's.
std::vector<std::shared_ptr<const dp::InstancePolicy>> compile_policies(const config::Config& cfg);

// "tcp/443 from 0.0.0.0/0 (group web, rule 1 at file:line:col)" for explanations; a rule from a
// datastore is "at" its key and place ("/calico/.../ossg.default.<id> spec.ingress[0]").
std::string describe_rule(const config::Config& cfg, const dp::RuleOrigin& origin);

}  // namespace calyx::cp
