#include "io/netlink.hpp"

#include <arpa/inet.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <fmt/format.h>
#include <libmnl/libmnl.h>

namespace calyx::io {
namespace {

// Large enough for one message of a dump (the kernel fills up to 32 KiB per read).
constexpr size_t kReceiveBuffer = 32768;
// The event socket's kernel buffer: a full BGP table's worth of route changes at once.
constexpr int kEventSocketBuffer = 8 << 20;

std::string errno_text(int err) { return std::strerror(err); }

uint32_t be_of(Ipv4Addr a) { return htonl(a.value); }
Ipv4Addr addr_of(const void* p) {
    uint32_t be = 0;
    std::memcpy(&be, p, 4);
    return Ipv4Addr{ntohl(be)};
}

struct RouteAttrs {
    const nlattr* tb[RTA_MAX + 1] = {};
};

int route_attr(const nlattr* attr, void* data) {
    const int type = mnl_attr_get_type(attr);
    if (mnl_attr_type_valid(attr, RTA_MAX) < 0) return MNL_CB_OK;  // newer kernels' attributes
    switch (type) {
        case RTA_DST:
        case RTA_GATEWAY:
            if (mnl_attr_validate(attr, MNL_TYPE_U32) < 0) return MNL_CB_ERROR;
            break;
        case RTA_TABLE:
        case RTA_OIF:
        case RTA_PRIORITY:
            if (mnl_attr_validate(attr, MNL_TYPE_U32) < 0) return MNL_CB_ERROR;
            break;
        default: break;
    }
    static_cast<RouteAttrs*>(data)->tb[type] = attr;
    return MNL_CB_OK;
}

// The next hops of RTA_MULTIPATH: struct rtnexthop, each followed by its own attributes.
bool multipath_gateways(const nlattr* attr, std::vector<Ipv4Addr>& out) {
    const auto* nh = static_cast<const rtnexthop*>(mnl_attr_get_payload(attr));
    int len = static_cast<int>(mnl_attr_get_payload_len(attr));
    while (RTNH_OK(nh, len)) {
        RouteAttrs attrs;
        if (nh->rtnh_len > sizeof(rtnexthop) &&
            mnl_attr_parse_payload(RTNH_DATA(nh), nh->rtnh_len - sizeof(rtnexthop), route_attr, &attrs) < 0)
            return false;
        if (attrs.tb[RTA_GATEWAY]) out.push_back(addr_of(mnl_attr_get_payload(attrs.tb[RTA_GATEWAY])));
        else return false;  // a device next hop: no gateway to resolve
        len -= NLMSG_ALIGN(nh->rtnh_len);
        nh = RTNH_NEXT(nh);
    }
    return true;
}

// Where a request's answer is checked: our sequence number and port.
struct Answer {
    const std::function<void(const void*)>* on_message;
};

int answer_message(const nlmsghdr* nlh, void* data) {
    const auto* answer = static_cast<Answer*>(data);
    if (answer->on_message && *answer->on_message) (*answer->on_message)(nlh);
    return MNL_CB_OK;
}

static_assert(KernelRoute::kUnicast == RTN_UNICAST && KernelRoute::kBlackhole == RTN_BLACKHOLE);
static_assert(KernelRoute::kMainTable == RT_TABLE_MAIN);

}  // namespace

std::optional<RouteEvent> decode_route(const void* raw) {
    const auto* nlh = static_cast<const nlmsghdr*>(raw);
    if (nlh->nlmsg_type != RTM_NEWROUTE && nlh->nlmsg_type != RTM_DELROUTE) return std::nullopt;
    if (nlh->nlmsg_len < NLMSG_LENGTH(sizeof(rtmsg))) return std::nullopt;
    const auto* rtm = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(nlh));
    if (rtm->rtm_family != AF_INET || rtm->rtm_dst_len > 32) return std::nullopt;
    RouteAttrs attrs;
    if (mnl_attr_parse(nlh, sizeof(rtmsg), route_attr, &attrs) < 0) return std::nullopt;
    RouteEvent e;
    e.deleted = nlh->nlmsg_type == RTM_DELROUTE;
    KernelRoute& r = e.route;
    const Ipv4Addr dst = attrs.tb[RTA_DST] ? addr_of(mnl_attr_get_payload(attrs.tb[RTA_DST])) : Ipv4Addr{};
    r.prefix = Ipv4Prefix{Ipv4Addr{dst.value & Ipv4Prefix::mask_of(rtm->rtm_dst_len)}, rtm->rtm_dst_len};
    // Tables above 255 are only in RTA_TABLE (rtm_table is then RT_TABLE_UNSPEC or COMPAT).
    r.table = attrs.tb[RTA_TABLE] ? mnl_attr_get_u32(attrs.tb[RTA_TABLE]) : rtm->rtm_table;
    r.protocol = rtm->rtm_protocol;
    r.type = rtm->rtm_type;
    if (attrs.tb[RTA_PRIORITY]) r.priority = mnl_attr_get_u32(attrs.tb[RTA_PRIORITY]);
    if (attrs.tb[RTA_OIF]) r.oif = mnl_attr_get_u32(attrs.tb[RTA_OIF]);
    if (attrs.tb[RTA_GATEWAY]) r.gateways.push_back(addr_of(mnl_attr_get_payload(attrs.tb[RTA_GATEWAY])));
    if (attrs.tb[RTA_MULTIPATH] && !multipath_gateways(attrs.tb[RTA_MULTIPATH], r.gateways)) {
        // A multipath route with a next hop that has no gateway: keep what says so.
        r.gateways.clear();
        r.oif = 0;
        r.type = RTN_UNSPEC;
    }
    return e;
}

std::vector<uint8_t> encode_route(const KernelRoute& route, bool del, uint16_t flags, uint32_t seq) {
    std::vector<uint8_t> buf(MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = del ? RTM_DELROUTE : RTM_NEWROUTE;
    nlh->nlmsg_flags = static_cast<uint16_t>(NLM_F_REQUEST | flags);
    nlh->nlmsg_seq = seq;
    auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(rtmsg)));
    rtm->rtm_family = AF_INET;
    rtm->rtm_dst_len = route.prefix.length;
    rtm->rtm_table = static_cast<uint8_t>(route.table < 256 ? route.table : uint32_t{RT_TABLE_UNSPEC});
    rtm->rtm_protocol = route.protocol;
    rtm->rtm_type = route.type;
    // Gatewayless unicast routes are on-link; blackholes and the like go nowhere.
    rtm->rtm_scope = route.type == RTN_UNICAST && route.gateways.empty() ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
    mnl_attr_put_u32(nlh, RTA_DST, be_of(route.prefix.addr));
    mnl_attr_put_u32(nlh, RTA_TABLE, route.table);
    if (route.priority) mnl_attr_put_u32(nlh, RTA_PRIORITY, route.priority);
    if (route.oif) mnl_attr_put_u32(nlh, RTA_OIF, route.oif);
    if (route.gateways.size() == 1) {
        mnl_attr_put_u32(nlh, RTA_GATEWAY, be_of(route.gateways[0]));
    } else if (route.gateways.size() > 1) {
        nlattr* mp = mnl_attr_nest_start(nlh, RTA_MULTIPATH);
        for (const Ipv4Addr& gw : route.gateways) {
            auto* nh = static_cast<rtnexthop*>(mnl_nlmsg_get_payload_tail(nlh));
            const size_t start = nlh->nlmsg_len;
            nlh->nlmsg_len += static_cast<uint32_t>(RTNH_ALIGN(sizeof(rtnexthop)));
            std::memset(nh, 0, sizeof(rtnexthop));
            nh->rtnh_ifindex = static_cast<int>(route.oif);
            mnl_attr_put_u32(nlh, RTA_GATEWAY, be_of(gw));
            nh->rtnh_len = static_cast<unsigned short>(nlh->nlmsg_len - start);
        }
        mnl_attr_nest_end(nlh, mp);
    }
    buf.resize(nlh->nlmsg_len);
    return buf;
}

std::expected<std::unique_ptr<Netlink>, std::string> Netlink::open(bool route_events) {
    std::unique_ptr<Netlink> nl(new Netlink());
    nl->socket_ = mnl_socket_open(NETLINK_ROUTE);
    if (!nl->socket_) return std::unexpected(fmt::format("netlink socket: {}", errno_text(errno)));
    if (mnl_socket_bind(nl->socket_, 0, MNL_SOCKET_AUTOPID) < 0)
        return std::unexpected(fmt::format("netlink bind: {}", errno_text(errno)));
    nl->port_id_ = mnl_socket_get_portid(nl->socket_);
    nl->seq_ = static_cast<uint32_t>(std::time(nullptr));
    if (route_events) {
        nl->events_ = mnl_socket_open2(NETLINK_ROUTE, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (!nl->events_) return std::unexpected(fmt::format("netlink event socket: {}", errno_text(errno)));
        // As root, beyond net.core.rmem_max; without the privilege, as much as rmem_max allows.
        int size = kEventSocketBuffer;
        if (setsockopt(mnl_socket_get_fd(nl->events_), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
            setsockopt(mnl_socket_get_fd(nl->events_), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        if (mnl_socket_bind(nl->events_, RTMGRP_IPV4_ROUTE, MNL_SOCKET_AUTOPID) < 0)
            return std::unexpected(fmt::format("netlink bind to route events: {}", errno_text(errno)));
    }
    return nl;
}

Netlink::~Netlink() {
    if (socket_) mnl_socket_close(socket_);
    if (events_) mnl_socket_close(events_);
}

std::expected<void, std::string> Netlink::transact(std::vector<uint8_t>& request,
                                                   const std::function<void(const void*)>& on_message) {
    auto* nlh = reinterpret_cast<nlmsghdr*>(request.data());
    // A dump ends with NLMSG_DONE; anything else is answered by an ACK (or an error). (The
    // flag bits do not tell: NLM_F_REPLACE of a new route is NLM_F_ROOT of a dump.)
    if (!on_message) nlh->nlmsg_flags |= NLM_F_ACK;
    nlh->nlmsg_seq = ++seq_;
    if (mnl_socket_sendto(socket_, request.data(), nlh->nlmsg_len) < 0)
        return std::unexpected(errno_text(errno));
    std::vector<uint8_t> buf(kReceiveBuffer);
    Answer answer{&on_message};
    for (;;) {
        const ssize_t n = mnl_socket_recvfrom(socket_, buf.data(), buf.size());
        if (n < 0) return std::unexpected(errno_text(errno));
        const int rc = mnl_cb_run(buf.data(), static_cast<size_t>(n), seq_, port_id_, answer_message, &answer);
        if (rc == MNL_CB_STOP) return {};  // NLMSG_DONE of a dump, or the ACK
        if (rc == MNL_CB_ERROR) return std::unexpected(errno_text(errno));
    }
}

std::expected<std::vector<KernelRoute>, std::string> Netlink::dump_routes(uint32_t table) {
    std::vector<uint8_t> request(MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh = mnl_nlmsg_put_header(request.data());
    nlh->nlmsg_type = RTM_GETROUTE;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(rtmsg)));
    rtm->rtm_family = AF_INET;
    request.resize(nlh->nlmsg_len);
    std::vector<KernelRoute> routes;
    // Every IPv4 route comes; the table is picked here (filtered dumps need strict checking,
    // which older kernels lack).
    auto done = transact(request, [&](const void* msg) {
        if (auto e = decode_route(msg); e && e->route.table == table) routes.push_back(std::move(e->route));
    });
    if (!done) return std::unexpected(fmt::format("dumping routing table {}: {}", table, done.error()));
    return routes;
}

std::expected<void, std::string> Netlink::replace_route(const KernelRoute& route) {
    auto request = encode_route(route, false, NLM_F_CREATE | NLM_F_REPLACE, 0);
    if (auto done = transact(request); !done)
        return std::unexpected(fmt::format("adding route {}: {}", route.to_string(), done.error()));
    return {};
}

std::expected<void, std::string> Netlink::delete_route(const KernelRoute& route) {
    auto request = encode_route(route, true, 0, 0);
    if (auto done = transact(request); !done && done.error() != errno_text(ESRCH))
        return std::unexpected(fmt::format("deleting route {}: {}", route.to_string(), done.error()));
    return {};
}

std::expected<std::optional<std::vector<RouteEvent>>, std::string> Netlink::read_route_events() {
    std::vector<RouteEvent> events;
    if (!events_) return events;
    std::vector<uint8_t> buf(kReceiveBuffer);
    for (;;) {
        const ssize_t n = mnl_socket_recvfrom(events_, buf.data(), buf.size());
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return events;
            if (errno == ENOBUFS) {
                // Events were dropped; what is queued after the overflow is still valid but
                // no help: the caller dumps. Drain it so the next read starts afresh.
                while (mnl_socket_recvfrom(events_, buf.data(), buf.size()) > 0) {
                }
                return std::optional<std::vector<RouteEvent>>{};
            }
            return std::unexpected(fmt::format("reading route events: {}", errno_text(errno)));
        }
        const auto* nlh = reinterpret_cast<const nlmsghdr*>(buf.data());
        size_t len = static_cast<size_t>(n);
        while (mnl_nlmsg_ok(nlh, static_cast<int>(len))) {
            if (auto e = decode_route(nlh)) events.push_back(std::move(*e));
            nlh = mnl_nlmsg_next(nlh, reinterpret_cast<int*>(&len));
        }
    }
}

std::expected<unsigned, std::string> Netlink::link_index(const std::string& name) {
    const unsigned index = if_nametoindex(name.c_str());
    if (index == 0) return std::unexpected(fmt::format("no interface {}: {}", name, errno_text(errno)));
    return index;
}

std::expected<void, std::string> Netlink::set_link_up(unsigned index, uint32_t mtu) {
    std::vector<uint8_t> request(MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh = mnl_nlmsg_put_header(request.data());
    nlh->nlmsg_type = RTM_NEWLINK;
    nlh->nlmsg_flags = NLM_F_REQUEST;
    auto* ifm = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
    ifm->ifi_family = AF_UNSPEC;
    ifm->ifi_index = static_cast<int>(index);
    ifm->ifi_flags = IFF_UP;
    ifm->ifi_change = IFF_UP;
    mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
    request.resize(nlh->nlmsg_len);
    if (auto done = transact(request); !done)
        return std::unexpected(fmt::format("setting link #{} up with MTU {}: {}", index, mtu, done.error()));
    return {};
}

std::expected<void, std::string> Netlink::add_address(unsigned index, Ipv4Addr address, uint8_t prefix_length) {
    std::vector<uint8_t> request(MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh = mnl_nlmsg_put_header(request.data());
    nlh->nlmsg_type = RTM_NEWADDR;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_REPLACE;
    auto* ifa = static_cast<ifaddrmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifaddrmsg)));
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = prefix_length;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = index;
    mnl_attr_put_u32(nlh, IFA_LOCAL, be_of(address));
    mnl_attr_put_u32(nlh, IFA_ADDRESS, be_of(address));
    request.resize(nlh->nlmsg_len);
    if (auto done = transact(request); !done)
        return std::unexpected(
            fmt::format("adding address {}/{} to link #{}: {}", address.to_string(), prefix_length, index, done.error()));
    return {};
}

}  // namespace calyx::io
