// metrics: where the Prometheus endpoint listens.
#include "cp/config/sections.hpp"

namespace calyx::config {
namespace {

constexpr std::string_view kMetricsKeys[] = {"listen"};

// "HOST:PORT" with HOST an IPv4 address or "localhost" and PORT in 1..65535.
bool is_listen_address(std::string_view text) {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return false;
    const std::string_view host = text.substr(0, colon);
    if (host != "localhost" && !Ipv4Addr::parse(host)) return false;
    const auto port = parse_unsigned(text.substr(colon + 1));
    return port && *port >= 1 && *port <= 65535;
}

}  // namespace

void read_metrics(Parser& parser, const Field& field) {
    const auto m = parser.mapping(field, "'metrics'", "in metrics", kMetricsKeys);
    if (!m) return;
    parser.report_duplicates(*m, "in metrics");
    const Field* f = m->get("listen");
    if (!f) return;
    const auto text = parser.scalar(*f, "'listen'", "HOST:PORT");
    if (!text) return;
    if (!is_listen_address(*text)) {
        parser.error(*f,
                     "'listen' must be HOST:PORT with HOST an IPv4 address or 'localhost' and PORT "
                     "between 1 and 65535, got '{}'",
                     *text);
        return;
    }
    parser.config().metrics.listen = *text;
}

}  // namespace calyx::config
