// Security-group rules compiled for matching.
//
// An instance's rules for one direction become a RuleTable: per IP protocol, the key space
// (TCP/UDP destination port, or ICMP type<<8|code) is cut into elementary intervals at every
// rule boundary; each interval points at the set of remote address ranges its rules allow,
// kept as sorted disjoint [first, last] intervals. A match is two binary searches, however
// many rules there are, and a port range stays one rule (its two ends are two boundaries).
// Identical rule sets share one address table.
//
// Matching runs only on a connection's first packet (and once per connection after a rule
// change), never per packet of an established connection.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "calyx/headers.hpp"
#include "calyx/net.hpp"

namespace calyx::dp {

inline constexpr uint32_t kNoRule = UINT32_MAX;

// Rules for TCP and UDP are keyed by destination port; ICMP rules by type and code.
constexpr bool keyed_by_port(uint8_t protocol) {
    return protocol == ipproto::kTcp || protocol == ipproto::kUdp;
}

// Where a compiled rule came from: indexes into Config::security_groups and its rules (the
// control plane compiles them, cp/policy_compiler.hpp, and explains a match by them).
struct RuleOrigin {
    uint32_t group = 0;
    uint32_t rule = 0;
};

// What one rule allows, in the compiler's terms.
struct RuleSpec {
    RuleOrigin origin;
    std::optional<uint8_t> protocol;  // nullopt: any protocol
    uint16_t key_min = 0;             // port range, or ICMP type<<8|code range
    uint16_t key_max = 0xffff;
    std::vector<Ipv4Prefix> remotes;  // empty: matches nothing (an empty remote group)
};

// The match key of a packet: destination port for TCP/UDP, type<<8|code for ICMP, 0 else.
uint16_t rule_key(uint8_t protocol, uint16_t dst_port, uint8_t icmp_type, uint8_t icmp_code);

class RuleTable {
public:
    RuleTable() = default;
    explicit RuleTable(const std::vector<RuleSpec>& rules);

    // Index of the first (in configuration order) rule that allows the packet, or kNoRule.
    uint32_t match(uint8_t protocol, uint16_t key, Ipv4Addr remote) const noexcept;
    const RuleOrigin& origin(uint32_t id) const { return origins_[id]; }
    size_t size() const { return origins_.size(); }

private:
    struct AddressSet {  // disjoint, sorted
        std::vector<uint32_t> first;
        std::vector<uint32_t> last;
        std::vector<uint32_t> rule;
    };
    struct KeyTable {  // elementary key intervals of one protocol
        std::vector<uint32_t> start;   // start of each interval, ascending, start[0] == 0
        std::vector<int32_t> address;  // AddressSet index per interval, -1: no rule
    };
    KeyTable build_key_table(const std::vector<RuleSpec>& rules, std::optional<uint8_t> protocol);
    int32_t address_set_for(const std::vector<RuleSpec>& rules, const std::vector<uint32_t>& ids);

    std::vector<RuleOrigin> origins_;
    std::vector<AddressSet> address_sets_;
    std::vector<KeyTable> key_tables_;
    std::array<uint16_t, 256> table_of_protocol_{};  // index into key_tables_
    std::vector<std::pair<std::vector<uint32_t>, int32_t>> memo_;  // rule set -> address set
};

struct InstancePolicy {
    RuleTable ingress;
    RuleTable egress;
};

}  // namespace calyx::dp
