#include "cp/datastore/selector.hpp"

#include <fmt/format.h>

namespace calyx::cp::datastore {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Calico's label key: [prefix/]name of letters, digits and -_./ (its lexer's label token).
bool is_label_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.' || c == '/';
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

}  // namespace

std::string_view security_group_of_label(std::string_view label) {
    if (!label.starts_with(kSecurityGroupLabel)) return {};
    return label.substr(kSecurityGroupLabel.size());
}

std::expected<std::string, std::string> security_group_of_selector(std::string_view selector) {
    const auto refuse = [&] {
        return std::unexpected(fmt::format(
            "selector '{}' is not one calyx evaluates: networking-calico writes has({}<security group id>)",
            selector, kSecurityGroupLabel));
    };
    std::string_view s = trim(selector);
    if (!s.starts_with("has")) return refuse();
    s = trim(s.substr(3));
    if (!s.starts_with('(') || !s.ends_with(')')) return refuse();
    const std::string_view label = trim(s.substr(1, s.size() - 2));
    if (label.empty()) return refuse();
    for (char c : label)
        if (!is_label_char(c)) return refuse();
    const std::string_view id = security_group_of_label(label);
    if (id.empty() || id.find('/') != std::string_view::npos) return refuse();
    return std::string{id};
}

}  // namespace calyx::cp::datastore
