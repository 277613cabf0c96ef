// The part of Calico's selector language that networking-calico writes, evaluated exactly: a
// policy's own selector and a rule's remote group are both `has(sg.projectcalico.org/openstack-<id>)`,
// the endpoints labelled with security group <id>. Anything else (other labels, ==, !, &&, ||,
// all(), ...) is refused: calyx does not pretend to evaluate what it does not.
#pragma once

#include <expected>
#include <string>
#include <string_view>

namespace calyx::cp::datastore {

// The label networking-calico gives an endpoint for each of its security groups (policy.py's
// SG_LABEL_PREFIX followed by the group's id).
inline constexpr std::string_view kSecurityGroupLabel = "sg.projectcalico.org/openstack-";

// The security group id a selector names, or why calyx does not evaluate it.
std::expected<std::string, std::string> security_group_of_selector(std::string_view selector);

// The id of a security-group label; empty if `label` is not one.
std::string_view security_group_of_label(std::string_view label);

}  // namespace calyx::cp::datastore
