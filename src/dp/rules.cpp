#include "dp/rules.hpp"

#include <algorithm>
#include <map>

#include "calyx/headers.hpp"

namespace calyx::dp {

uint16_t rule_key(uint8_t protocol, uint16_t dst_port, uint8_t icmp_type, uint8_t icmp_code) {
    if (keyed_by_port(protocol)) return dst_port;
    if (protocol == ipproto::kIcmp) return static_cast<uint16_t>(icmp_type << 8 | icmp_code);
    return 0;
}

RuleTable::RuleTable(const std::vector<RuleSpec>& rules) {
    for (const auto& r : rules) origins_.push_back(r.origin);
    // Protocols named by some rule get their own key table; every other protocol shares the
    // table of the "any protocol" rules (index 0).
    key_tables_.push_back(build_key_table(rules, std::nullopt));
    std::vector<bool> named(256, false);
    for (const auto& r : rules)
        if (r.protocol) named[*r.protocol] = true;
    for (int p = 0; p < 256; ++p) {
        if (!named[p]) continue;
        table_of_protocol_[p] = static_cast<uint16_t>(key_tables_.size());
        key_tables_.push_back(build_key_table(rules, static_cast<uint8_t>(p)));
    }
    memo_.clear();
    memo_.shrink_to_fit();
}

RuleTable::KeyTable RuleTable::build_key_table(const std::vector<RuleSpec>& rules,
                                               std::optional<uint8_t> protocol) {
    // The rules that apply to this protocol, with their key range in its key space.
    struct Applicable {
        uint32_t id;
        uint32_t min, max;
    };
    std::vector<Applicable> applicable;
    for (uint32_t id = 0; id < rules.size(); ++id) {
        const RuleSpec& r = rules[id];
        if (r.protocol && r.protocol != protocol) continue;
        // "any protocol" rules, and rules of protocols without keys, cover the whole space.
        const bool keyed = r.protocol && (keyed_by_port(*r.protocol) || *r.protocol == ipproto::kIcmp);
        applicable.push_back({id, keyed ? r.key_min : 0u, keyed ? r.key_max : 0xffffu});
    }
    std::vector<uint32_t> bounds{0};
    for (const auto& a : applicable) {
        bounds.push_back(a.min);
        if (a.max < 0xffff) bounds.push_back(a.max + 1);
    }
    std::sort(bounds.begin(), bounds.end());
    bounds.erase(std::unique(bounds.begin(), bounds.end()), bounds.end());

    KeyTable table;
    std::vector<uint32_t> ids;
    for (uint32_t start : bounds) {
        ids.clear();
        for (const auto& a : applicable)
            if (a.min <= start && start <= a.max) ids.push_back(a.id);
        const int32_t set = ids.empty() ? -1 : address_set_for(rules, ids);
        // Neighbouring intervals with the same rules merge into one.
        if (!table.address.empty() && table.address.back() == set) continue;
        table.start.push_back(start);
        table.address.push_back(set);
    }
    return table;
}

int32_t RuleTable::address_set_for(const std::vector<RuleSpec>& rules,
                                   const std::vector<uint32_t>& ids) {
    for (const auto& [key, index] : memo_)
        if (key == ids) return index;
    // Sweep over the prefixes' ends; at each point the allowing rule is the first active one.
    struct Event {
        uint64_t at;
        bool opens;
        uint32_t rule;
    };
    std::vector<Event> events;
    for (uint32_t id : ids)
        for (const auto& p : rules[id].remotes) {
            events.push_back({p.addr.value, true, id});
            events.push_back({uint64_t{p.broadcast().value} + 1, false, id});
        }
    std::sort(events.begin(), events.end(),
              [](const Event& a, const Event& b) { return a.at < b.at; });
    AddressSet set;
    std::map<uint32_t, uint32_t> active;  // rule -> how many of its prefixes cover this point
    for (size_t i = 0; i < events.size();) {
        const uint64_t at = events[i].at;
        for (; i < events.size() && events[i].at == at; ++i) {
            if (events[i].opens) {
                ++active[events[i].rule];
            } else if (--active[events[i].rule] == 0) {
                active.erase(events[i].rule);
            }
        }
        if (active.empty() || at > 0xffffffffull) continue;
        const uint64_t next = i < events.size() ? events[i].at : 0x100000000ull;
        const uint32_t rule = active.begin()->first;
        if (!set.rule.empty() && set.rule.back() == rule && uint64_t{set.last.back()} + 1 == at) {
            set.last.back() = static_cast<uint32_t>(next - 1);
        } else {
            set.first.push_back(static_cast<uint32_t>(at));
            set.last.push_back(static_cast<uint32_t>(next - 1));
            set.rule.push_back(rule);
        }
    }
    address_sets_.push_back(std::move(set));
    const auto index = static_cast<int32_t>(address_sets_.size() - 1);
    memo_.emplace_back(ids, index);
    return index;
}

uint32_t RuleTable::match(uint8_t protocol, uint16_t key, Ipv4Addr remote) const noexcept {
    if (key_tables_.empty()) return kNoRule;
    const KeyTable& t = key_tables_[table_of_protocol_[protocol]];
    const auto k = std::upper_bound(t.start.begin(), t.start.end(), uint32_t{key});
    const int32_t set_index = t.address[static_cast<size_t>(k - t.start.begin()) - 1];
    if (set_index < 0) return kNoRule;
    const AddressSet& set = address_sets_[static_cast<size_t>(set_index)];
    const auto a = std::upper_bound(set.first.begin(), set.first.end(), remote.value);
    if (a == set.first.begin()) return kNoRule;
    const size_t i = static_cast<size_t>(a - set.first.begin()) - 1;
    return remote.value <= set.last[i] ? set.rule[i] : kNoRule;
}

}  // namespace calyx::dp
