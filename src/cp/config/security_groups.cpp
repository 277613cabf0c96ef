// security_groups: named sets of rules that allow new connections; replies follow by
// connection tracking.
#include "cp/config/sections.hpp"

#include <algorithm>
#include <array>

#include "calyx/headers.hpp"

namespace calyx::config {
namespace {

constexpr std::string_view kGroupKeys[] = {"name", "rules"};
constexpr std::string_view kRuleKeys[] = {"direction", "protocol", "ports",       "icmp_type",
                                          "icmp_code", "remote",   "remote_group"};

// The protocols a rule may name, and their IP protocol numbers; "any" is no number.
struct ProtocolName {
    std::string_view name;
    uint8_t number;
};
constexpr ProtocolName kProtocolNames[] = {
    {"tcp", ipproto::kTcp}, {"udp", ipproto::kUdp}, {"icmp", ipproto::kIcmp}};
constexpr std::string_view kProtocolWords[] = {"tcp", "udp", "icmp", "any"};
constexpr std::string_view kDirectionWords[] = {"ingress", "egress"};

// "tcp", "udp", "icmp", "any" or a number; a number that has a name means the same as the name.
// False if the protocol is invalid, so that what depends on it is not checked against a guess.
bool rule_protocol(Parser& parser, const Mapping& m, RuleConfig& r) {
    const Field* f = m.get("protocol");
    if (!f) return true;  // any
    constexpr std::string_view kExpected = "tcp, udp, icmp, any or a number between 0 and 255";
    const auto text = parser.scalar(*f, "'protocol'", kExpected);
    if (!text) return false;
    if (*text == "any") return true;
    if (const auto it = std::ranges::find(kProtocolNames, *text, &ProtocolName::name);
        it != std::end(kProtocolNames)) {
        r.protocol = it->number;
        return true;
    }
    if (parse_unsigned(*text)) {
        const auto number = parser.integer(*f, "'protocol'", 0, 255);
        if (number) r.protocol = static_cast<uint8_t>(*number);
        return number.has_value();
    }
    parser.error(*f, "'protocol' must be {}, got '{}'{}", kExpected, *text,
                 suggestion(*text, kProtocolWords));
    return false;
}

// How a rule's protocol reads in errors: its name if it has one, else its number.
std::string protocol_text(const std::optional<uint8_t>& protocol) {
    if (!protocol) return "any";
    if (const auto it = std::ranges::find(kProtocolNames, *protocol, &ProtocolName::number);
        it != std::end(kProtocolNames))
        return std::string{it->name};
    return fmt::format("{}", *protocol);
}

// One destination port ("443") or an inclusive range ("8000-8080"), TCP and UDP only.
void rule_ports(Parser& parser, const Mapping& m, RuleConfig& r, bool protocol_known) {
    const Field* f = m.get("ports");
    if (!f) return;
    constexpr std::string_view kExpected = "a port like 443 or a range like 8000-8080";
    const auto text = parser.scalar(*f, "'ports'", kExpected);
    if (!text) return;
    if (protocol_known && r.protocol != ipproto::kTcp && r.protocol != ipproto::kUdp)
        parser.error(*f, "ports need protocol tcp or udp, not {}", protocol_text(r.protocol));

    const size_t dash = text->find('-');
    const auto first = parse_unsigned(text->substr(0, dash));
    const auto last = dash == std::string::npos
                          ? first
                          : parse_unsigned(std::string_view{*text}.substr(dash + 1));
    if (!first || !last) {
        parser.error(*f, "'ports' must be {}, got '{}'", kExpected, *text);
        return;
    }
    const auto in_range = [](uint64_t port) { return port >= 1 && port <= 65535; };
    if (dash == std::string::npos && !in_range(*first)) {
        parser.error(*f, "'ports' must be between 1 and 65535, got {}", *text);
        return;
    }
    if (!in_range(*first) || !in_range(*last)) {
        parser.error(*f, "'ports' must be between 1 and 65535 at both ends, got {}", *text);
        return;
    }
    if (*first > *last) {
        parser.error(*f, "'ports' range {} is reversed; did you mean {}-{}?", *text, *last, *first);
        return;
    }
    r.port_min = static_cast<uint16_t>(*first);
    r.port_max = static_cast<uint16_t>(*last);
}

// icmp_type and icmp_code narrow an ICMP rule; a code means nothing without its type.
void rule_icmp(Parser& parser, const Mapping& m, RuleConfig& r, bool protocol_known) {
    const bool icmp = r.protocol == ipproto::kIcmp;
    const Field* type = m.get("icmp_type");
    if (type) {
        if (const auto v = parser.integer(*type, "'icmp_type'", 0, 255)) {
            r.icmp_type = static_cast<uint8_t>(*v);
            if (protocol_known && !icmp)
                parser.error(*type, "icmp_type needs protocol icmp, not {}",
                             protocol_text(r.protocol));
        }
    }
    const Field* code = m.get("icmp_code");
    if (!code) return;
    const auto v = parser.integer(*code, "'icmp_code'", 0, 255);
    if (!v) return;
    r.icmp_code = static_cast<uint8_t>(*v);
    if (protocol_known && !icmp)
        parser.error(*code, "icmp_code needs protocol icmp, not {}", protocol_text(r.protocol));
    else if (!type)
        parser.error(*code, "icmp_code needs icmp_type");
}

// remote (a CIDR) or remote_group (a group's members), not both; neither means anywhere.
void rule_remote(Parser& parser, const Mapping& m, RuleConfig& r,
                 std::vector<Field>& remote_groups) {
    const Field* remote = m.get("remote");
    const Field* group = m.get("remote_group");
    if (remote) r.remote = parser.prefix(*remote, "'remote'");
    if (group) {
        if (const auto name = parser.scalar(*group, "'remote_group'", "a security group name")) {
            r.remote_group = *name;
            remote_groups.push_back(*group);
        }
    }
    if (remote && group) {
        // Pointed at whichever of the two comes second.
        const SourceLocation a = parser.at(*remote);
        const SourceLocation b = parser.at(*group);
        const bool group_second = std::pair{a.line, a.column} < std::pair{b.line, b.column};
        parser.error(group_second ? b : a, "remote and remote_group are mutually exclusive");
    }
}

std::optional<RuleConfig> rule(Parser& parser, const Field& field, std::string_view owner,
                               std::vector<Field>& remote_groups) {
    const auto m = parser.mapping(field, "entry of 'rules'", "in rule", kRuleKeys);
    if (!m) return std::nullopt;
    parser.report_duplicates(*m, "in rule");
    parser.require(*m, owner, std::array<std::string_view, 1>{"direction"});
    RuleConfig r;
    r.where = parser.at(m->node);

    if (const Field* f = m->get("direction")) {
        if (const auto direction = parser.scalar(*f, "'direction'", "ingress or egress")) {
            if (*direction == "ingress")
                r.direction = RuleDirection::ingress;
            else if (*direction == "egress")
                r.direction = RuleDirection::egress;
            else
                parser.error(*f, "'direction' must be ingress or egress, got '{}'{}", *direction,
                             suggestion(*direction, kDirectionWords));
        }
    }
    const bool protocol_known = rule_protocol(parser, *m, r);
    rule_ports(parser, *m, r, protocol_known);
    rule_icmp(parser, *m, r, protocol_known);
    rule_remote(parser, *m, r, remote_groups);
    return r;
}

// remote_group values go to `remote_groups`, checked once every group is known: a rule may
// name a later group.
void security_group(Parser& parser, const Field& field, std::vector<Field>& remote_groups) {
    const auto m =
        parser.mapping(field, "entry of 'security_groups'", "in security group", kGroupKeys);
    if (!m) return;
    parser.report_duplicates(*m, "in security group");
    SecurityGroupConfig group;
    group.where = parser.at(m->node);

    std::string owner = "security group";
    if (const Field* f = m->get("name")) {
        if (const auto n = parser.name(*f, "security group")) {
            group.name = *n;
            owner = fmt::format("security group '{}'", *n);
            const auto [it, inserted] =
                parser.known().group_names.try_emplace(*n, *n, parser.at(*f).line);
            if (!inserted)
                parser.error(*f, "duplicate security group name '{}' (first at line {})", *n,
                             it->second.line);
        }
    }
    parser.require(*m, owner, std::array<std::string_view, 1>{"name"});

    // A group without rules allows nothing, but its members can still be a remote_group.
    if (const Field* f = m->get("rules")) {
        if (const auto items = parser.list(*f, "'rules'")) {
            const std::string rule_owner = fmt::format("rule of {}", owner);
            for (const Field& item : *items)
                if (auto r = rule(parser, item, rule_owner, remote_groups))
                    group.rules.push_back(std::move(*r));
        }
    }
    parser.config().security_groups.push_back(std::move(group));
}

}  // namespace

void read_security_groups(Parser& parser, const Field& field) {
    const auto items = parser.list(field, "'security_groups'");
    if (!items) return;
    std::vector<Field> remote_groups;
    for (const Field& item : *items) security_group(parser, item, remote_groups);
    for (const Field& f : remote_groups) check_group_reference(parser, f, f.value.Scalar());
}

void check_group_reference(Parser& parser, const Field& field, const std::string& group) {
    if (parser.known().group_names.contains(group)) return;
    std::vector<std::string_view> names;
    for (const auto& [name, first] : parser.known().group_names) names.push_back(name);
    parser.error(field, "unknown security group '{}'{}", group, suggestion(group, names));
}

}  // namespace calyx::config
