// The parser's core (parser.hpp): the generic readers and the pass over the top-level sections.
#include "cp/config/parser.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <tuple>

#include <unistd.h>

#include <yaml-cpp/eventhandler.h>

#include "cp/config/sections.hpp"

namespace calyx::config {
namespace {

constexpr size_t kMaxUnixSocketPath = 107;  // sizeof(sockaddr_un::sun_path) - 1 for the NUL
constexpr size_t kMaxInterfaceName = 15;    // IFNAMSIZ - 1 for the NUL

bool is_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

// What a Linux interface name must not contain: what the kernel's dev_valid_name() refuses
// ('/', ':', whitespace), and ',', which would end the DPDK device argument (iface=NAME) that
// calyx passes it in.
bool is_interface_name_char(char c) {
    return c != '/' && c != ':' && c != ',' && c != ' ' && c != '\t' && c != '\n' && c != '\v' &&
           c != '\f' && c != '\r';
}

bool is_hex_digits(std::string_view text, size_t count) {
    return text.size() == count && std::ranges::all_of(text, [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
           });
}

// A PCI address split into its fields, each still text: DDDD:BB:DD.F, or BB:DD.F in domain 0.
struct PciFields {
    std::string_view domain = "0000", bus, device, function;
};

std::optional<PciFields> split_pci_address(std::string_view text) {
    PciFields pci;
    const size_t dot = text.rfind('.');
    if (dot == std::string_view::npos) return std::nullopt;
    pci.function = text.substr(dot + 1);
    text = text.substr(0, dot);
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    pci.device = text.substr(colon + 1);
    text = text.substr(0, colon);
    const size_t domain_colon = text.find(':');
    if (domain_colon != std::string_view::npos) {
        pci.domain = text.substr(0, domain_colon);
        text = text.substr(domain_colon + 1);
    }
    pci.bus = text;
    if (!is_hex_digits(pci.domain, 4) || !is_hex_digits(pci.bus, 2) ||
        !is_hex_digits(pci.device, 2) || !is_hex_digits(pci.function, 1))
        return std::nullopt;
    return pci;
}

// Where each of the first three documents of a YAML stream starts.
//
// yaml-cpp 0.7 never consumes a token that cannot start a node (a stray ',' at the start of a
// document: jbeder/yaml-cpp#1040, fixed upstream after 0.8): YAML::Load then returns an empty
// document and ignores the rest of the text, and YAML::LoadAll loops forever, allocating. Walking
// the events of at most three documents is bounded, and a document that starts where the
// previous one did is that stuck token.
class DocumentStarts final : public YAML::EventHandler {
  public:
    std::vector<YAML::Mark> starts;

    void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
};

std::vector<YAML::Mark> document_starts(const std::string& yaml) {
    std::istringstream stream(yaml);
    YAML::Parser parser(stream);
    DocumentStarts probe;
    for (int i = 0; i < 3 && parser.HandleNextDocument(probe); ++i) {
    }
    return probe.starts;
}

}  // namespace

size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            const size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1])});
            diagonal = up;
        }
    }
    return row[b.size()];
}

std::string describe(const Node& node) {
    switch (node.Type()) {
        case YAML::NodeType::Scalar:
            return fmt::format("'{}'", node.Scalar());
        case YAML::NodeType::Sequence:
            return "a list";
        case YAML::NodeType::Map:
            return "a mapping";
        case YAML::NodeType::Null:
            return "an empty value";
        case YAML::NodeType::Undefined:
            break;
    }
    return "nothing";
}

// Plain decimal, digits only. A number too large for uint64 comes back as the maximum, which
// every range check rejects.
std::optional<uint64_t> parse_unsigned(std::string_view text) {
    if (text.empty() || !std::ranges::all_of(text, [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
    uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc::result_out_of_range) return std::numeric_limits<uint64_t>::max();
    return value;
}

std::optional<Mapping> Parser::mapping(const Field& field, std::string_view label,
                                       std::string_view context, Keys known, Keys suggest) {
    if (!field.value.IsMap()) {
        error(field, "{} must be a mapping, got {}", label, describe(field.value));
        return std::nullopt;
    }
    Mapping m{field.value, {}, {}};
    for (const auto& pair : field.value) {
        const Field entry{pair.first, pair.second};
        if (!entry.key.IsScalar()) {
            error(entry.key, "keys {} must be strings, got {}", context, describe(entry.key));
            continue;
        }
        const std::string& key = entry.key.Scalar();
        if (std::ranges::find(known, key) == known.end()) {
            error(entry.key, "unknown key '{}' {}{}", key, context,
                  suggestion(key, suggest.empty() ? known : suggest));
            continue;
        }
        if (!m.fields.try_emplace(key, entry).second) m.duplicates.push_back(entry);
    }
    return m;
}

void Parser::duplicate_key(const Mapping& m, const Field& dup, std::string_view context) {
    error(dup.key, "duplicate key '{}' {} (first at line {})", dup.key.Scalar(), context,
          at(m.get(dup.key.Scalar())->key).line);
}

void Parser::report_duplicates(const Mapping& m, std::string_view context) {
    for (const Field& dup : m.duplicates) duplicate_key(m, dup, context);
}

void Parser::require(const Mapping& m, std::string_view owner, Keys required) {
    for (std::string_view key : required)
        if (!m.get(key)) error(m.node, "{} is missing required key '{}'", owner, key);
}

std::optional<std::vector<Field>> Parser::list(const Field& field, std::string_view label) {
    if (!field.value.IsSequence()) {
        error(field, "{} must be a list, got {}", label, describe(field.value));
        return std::nullopt;
    }
    std::vector<Field> items;
    for (const auto& item : field.value) items.push_back(Field{field.key, item});
    return items;
}

std::optional<std::string> Parser::scalar(const Field& field, std::string_view label,
                                          std::string_view expected) {
    if (field.value.IsScalar()) return field.value.Scalar();
    error(field, "{} must be {}, got {}", label, expected, describe(field.value));
    return std::nullopt;
}

std::optional<uint64_t> Parser::integer(const Field& field, std::string_view label, uint64_t min,
                                        uint64_t max) {
    const auto text = scalar(field, label, "an integer");
    if (!text) return std::nullopt;
    const auto value = parse_unsigned(*text);
    if (!value) {
        error(field, "{} must be an integer, got '{}'", label, *text);
        return std::nullopt;
    }
    if (*value < min || *value > max) {
        error(field, "{} must be between {} and {}, got {}", label, min, max, *text);
        return std::nullopt;
    }
    return value;
}

std::optional<Ipv4Addr> Parser::ipv4(const Field& field, std::string_view label) {
    constexpr std::string_view kExpected = "an IPv4 address like 192.0.2.1";
    const auto text = scalar(field, label, kExpected);
    if (!text) return std::nullopt;
    const auto addr = Ipv4Addr::parse(*text);
    if (!addr) error(field, "{} must be {}, got '{}'", label, kExpected, *text);
    return addr;
}

std::optional<Ipv4Prefix> Parser::prefix(const Field& field, std::string_view label) {
    constexpr std::string_view kExpected = "an IPv4 prefix like 192.0.2.0/24";
    const auto text = scalar(field, label, kExpected);
    if (!text) return std::nullopt;
    if (const auto p = Ipv4Prefix::parse(*text)) return p;
    if (const auto p = Ipv4Prefix::parse(*text, /*allow_host_bits=*/true)) {
        error(field, "{} {} has host bits set; did you mean {}?", label, *text, p->to_string());
    } else {
        error(field, "{} must be {}, got '{}'", label, kExpected, *text);
    }
    return std::nullopt;
}

std::optional<MacAddr> Parser::unicast_mac(const Field& field, std::string_view label) {
    constexpr std::string_view kExpected = "a MAC address like 52:54:00:00:01:01";
    const auto text = scalar(field, label, kExpected);
    if (!text) return std::nullopt;
    const auto mac = MacAddr::parse(*text);
    if (!mac) {
        error(field, "{} must be {}, got '{}'", label, kExpected, *text);
    } else if (mac->is_zero()) {
        error(field, "{} must not be the zero MAC address", label);
    } else if (mac->is_multicast()) {
        error(field,
              "{} {} is a multicast address; it must be unicast (lowest bit of the first "
              "byte clear)",
              label, mac->to_string());
    } else {
        return mac;
    }
    return std::nullopt;
}

std::optional<std::string> Parser::name(const Field& field, std::string_view what) {
    const auto text = scalar(field, fmt::format("{} name", what), "a string");
    if (!text) return std::nullopt;
    if (text->empty()) {
        error(field, "{} name must not be empty", what);
        return std::nullopt;
    }
    if (!std::ranges::all_of(*text, is_name_char)) {
        error(field, "{} name '{}' may contain only letters, digits, '_', '.' and '-'", what,
              *text);
        return std::nullopt;
    }
    return text;
}

std::optional<std::string> Parser::socket_path(const Field& field, std::string_view label) {
    const auto text = scalar(field, label, "an absolute path");
    if (!text) return std::nullopt;
    if (!text->starts_with('/')) {
        error(field, "{} must be an absolute path, got '{}'", label, *text);
        return std::nullopt;
    }
    if (text->size() > kMaxUnixSocketPath) {
        error(field, "{} is {} bytes long; a unix socket path holds at most {}", label,
              text->size(), kMaxUnixSocketPath);
        return std::nullopt;
    }
    return text;
}

// A Linux network interface name: 1 to 15 bytes, not '.' or '..', none of the characters
// is_interface_name_char refuses.
std::optional<std::string> Parser::interface_name(const Field& field, std::string_view label) {
    const auto text = scalar(field, label, "a Linux interface name");
    if (!text) return std::nullopt;
    if (text->empty()) {
        error(field, "{} must not be empty", label);
    } else if (text->size() > kMaxInterfaceName) {
        error(field, "{} is {} bytes long; a Linux interface name holds at most {}", label,
              text->size(), kMaxInterfaceName);
    } else if (*text == "." || *text == "..") {
        error(field, "{} must be a Linux interface name, not '{}'", label, *text);
    } else if (!std::ranges::all_of(*text, is_interface_name_char)) {
        error(field,
              "{} must be a Linux interface name without '/', ':', ',' or whitespace, got '{}'",
              label, *text);
    } else {
        return text;
    }
    return std::nullopt;
}

// DPDK's form of a PCI address, DDDD:BB:DD.F in hex, or BB:DD.F for domain 0000. Returned in
// the long form and in lowercase, as DPDK and sysfs print it.
std::optional<std::string> Parser::pci_address(const Field& field, std::string_view label) {
    constexpr std::string_view kExpected = "a PCI address like 0000:01:00.0";
    const auto text = scalar(field, label, kExpected);
    if (!text) return std::nullopt;
    const auto pci = split_pci_address(*text);
    if (!pci) {
        error(field, "{} must be {}, got '{}'", label, kExpected, *text);
        return std::nullopt;
    }
    // Five bits of device, three of function.
    const auto hex = [](std::string_view digits) {
        unsigned value = 0;
        std::from_chars(digits.data(), digits.data() + digits.size(), value, 16);
        return value;
    };
    if (hex(pci->device) > 0x1f || hex(pci->function) > 7) {
        error(field,
              "{} {} is not a PCI address: the device is at most 1f and the function at most 7",
              label, *text);
        return std::nullopt;
    }
    std::string normal =
        fmt::format("{}:{}:{}.{}", pci->domain, pci->bus, pci->device, pci->function);
    std::ranges::transform(normal, normal.begin(), [](char c) {
        return c >= 'A' && c <= 'F' ? static_cast<char>(c - 'A' + 'a') : c;
    });
    return normal;
}

// The one YAML document of `yaml` (errors located in current_file_), or nullopt when the text
// cannot be read as one.
std::optional<Node> Parser::load(const std::string& yaml) {
    // Checked first: Load would silently drop what the probe finds.
    const std::vector<YAML::Mark> starts = document_starts(yaml);
    for (size_t i = 1; i < starts.size(); ++i) {
        if (starts[i].pos == starts[i - 1].pos) {
            const YAML::Mark& m = starts[i];
            error(SourceLocation{current_file_, m.line + 1, m.column + 1},
                  fmt::format("invalid YAML: unexpected '{}'", yaml[m.pos]));
            return std::nullopt;
        }
    }
    if (starts.size() > 1) {
        error(SourceLocation{current_file_, starts[1].line + 1, starts[1].column + 1},
              "a configuration is one YAML document; this is a second one");
    }
    try {
        return YAML::Load(yaml);
    } catch (const YAML::Exception& e) {
        // A syntax error: the text cannot be read, so nothing else in it is checked.
        const bool no_mark = e.mark.is_null();
        error(SourceLocation{current_file_, no_mark ? 1 : e.mark.line + 1, no_mark ? 1 : e.mark.column + 1},
              fmt::format("invalid YAML: {}", e.msg));
        return std::nullopt;
    }
}

// The top-level fields of `root` (in current_file_) into `top`, and those of the files it
// includes. A section given twice, in any two files, is an error at the second.
void Parser::collect(const Node& root, bool may_include, std::map<std::string, TopField, std::less<>>& top) {
    static constexpr auto kKeys = [] {
        std::array<std::string_view, kTopKeys.size() + 1> keys{};
        std::ranges::copy(kTopKeys, keys.begin());
        keys.back() = "include";
        return keys;
    }();
    const auto m = mapping(Field{root, root}, "the configuration", "at the top level", kKeys);
    if (!m) return;
    report_duplicates(*m, "at the top level");
    for (const auto& [key, field] : m->fields) {
        if (key == "include") {
            if (may_include)
                include(field, top);
            else
                error(field.key, "an included file includes nothing further; list every file in the include of {}", file_);
            continue;
        }
        const auto [it, added] = top.try_emplace(key, TopField{field, current_file_});
        if (!added) {
            const SourceLocation first = [&] {
                const std::string here = current_file_;
                current_file_ = it->second.file;
                const SourceLocation where = at(it->second.field.key);
                current_file_ = here;
                return where;
            }();
            error(field.key, "section '{}' is already given in {} (line {}); each section comes from one file",
                  key, first.file, first.line);
        }
    }
}

void Parser::include(const Field& field, std::map<std::string, TopField, std::less<>>& top) {
    std::vector<Field> items;
    if (field.value.IsSequence()) {
        if (auto list_items = list(field, "'include'")) items = std::move(*list_items);
    } else {
        items.push_back(field);
    }
    const std::filesystem::path base = std::filesystem::path(current_file_).parent_path();
    for (const Field& item : items) {
        const auto name = scalar(item, "'include'", "a file name or a list of them");
        if (!name) continue;
        if (name->empty()) {
            error(item, "'include' names an empty file name");
            continue;
        }
        const std::string path = (base / *name).lexically_normal().string();
        const auto text = reader_(path);
        if (!text) {
            error(item, "cannot read included file {}: {}", path, text.error());
            continue;
        }
        digest(*text);
        const std::string including = current_file_;
        current_file_ = path;
        if (const auto root = load(*text)) {
            if (root->IsNull())
                error(SourceLocation{path, 1, 1}, "the included file is empty");
            else
                collect(*root, false, top);
        }
        current_file_ = including;
    }
}

void Parser::digest(std::string_view text) {
    const uint64_t length = text.size();
    const auto mix = [&](uint8_t byte) {
        digest_ ^= byte;
        digest_ *= 0x100000001b3;
    };
    for (int shift = 0; shift < 64; shift += 8) mix(static_cast<uint8_t>(length >> shift));
    for (const char c : text) mix(static_cast<uint8_t>(c));
}

std::expected<Config, Errors> Parser::parse(std::string_view text) {
    digest(text);
    try {
        const auto root = load(std::string{text});
        if (root && root->IsNull()) {
            error(SourceLocation{file_, 1, 1},
                  "the configuration is empty; it must be a mapping with 'networks' and "
                  "'instances'");
        } else if (root) {
            std::map<std::string, TopField, std::less<>> top;
            collect(*root, true, top);
            for (const Section& section : kSections) {
                const auto it = top.find(section.key);
                if (it == top.end()) continue;
                current_file_ = it->second.file;
                section.read(*this, it->second.field);
            }
            current_file_ = file_;
        }
    } catch (const YAML::Exception& e) {
        const bool no_mark = e.mark.is_null();
        error(SourceLocation{current_file_, no_mark ? 1 : e.mark.line + 1, no_mark ? 1 : e.mark.column + 1},
              fmt::format("invalid YAML: {}", e.msg));
    } catch (const std::exception& e) {
        error(SourceLocation{current_file_, 0, 0}, fmt::format("cannot parse: {}", e.what()));
    }

    if (!errors_.empty()) {
        // The main file's errors first, then each included file's, each top to bottom.
        std::ranges::stable_sort(errors_, [this](const Error& a, const Error& b) {
            return std::tuple{a.where.file != file_, a.where.file, a.where.line, a.where.column} <
                   std::tuple{b.where.file != file_, b.where.file, b.where.line, b.where.column};
        });
        return std::unexpected(std::move(errors_));
    }
    for (NetworkEntry& entry : known_.networks) config_.networks.push_back(std::move(entry.config));
    config_.source_digest = fmt::format("{:016x}", digest_);
    return std::move(config_);
}

std::expected<Config, Errors> parse_config(std::string_view yaml_text, std::string_view file_name) {
    return Parser{file_name}.parse(yaml_text);
}

std::expected<std::string, std::string> read_text_file(const std::string& path) {
    std::FILE* file = std::fopen(path.c_str(), "rb");
    if (!file) return std::unexpected(std::strerror(errno));
    std::string text;
    char buffer[4096];
    size_t n = 0;
    while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) text.append(buffer, n);
    const int err = std::ferror(file) ? errno : 0;
    std::fclose(file);
    if (err != 0) return std::unexpected(std::strerror(err));
    return text;
}

std::string machine_host_name() {
    std::array<char, 256> name{};
    if (gethostname(name.data(), name.size() - 1) != 0) return "localhost";
    return name.data();
}

std::expected<Config, Errors> load_config_file(const std::string& path) {
    const auto text = read_text_file(path);
    if (!text) return std::unexpected(Errors{Error{{path, 0, 0}, fmt::format("cannot read: {}", text.error())}});
    auto config = parse_config(*text, path);
    if (config) config->source_file = path;
    return config;
}

std::optional<NetworkKind> read_network_kind(Parser& parser, const Field& field) {
    static constexpr std::string_view kWords[] = {"public", "nat", "private"};
    const auto kind = parser.scalar(field, "'kind'", "public, nat or private");
    if (!kind) return std::nullopt;
    if (*kind == "public") return NetworkKind::public_;
    if (*kind == "nat") return NetworkKind::nat;
    if (*kind == "private") return NetworkKind::private_;
    parser.error(field, "'kind' must be public, nat or private, got '{}'{}", *kind, suggestion(*kind, kWords));
    return std::nullopt;
}

}  // namespace calyx::config
