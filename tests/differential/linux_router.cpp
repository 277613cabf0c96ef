#include "linux_router.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "calyx/headers.hpp"
#include "integration/netns.hpp"

namespace calyx::difftest {
namespace {

using test::sh;

// The router's own MACs on its two links.
const MacAddr kRouterClientMac{{0x02, 0xd1, 0xff, 0x00, 0x00, 0x01}};
const MacAddr kRouterServerMac{{0x02, 0xd1, 0xff, 0x00, 0x00, 0x02}};

std::expected<void, std::string> run(const std::string& cmd) {
    const auto r = sh(cmd);
    if (r.status == 0) return {};
    return std::unexpected(fmt::format("`{}` failed: {}", cmd, r.output));
}

// Runs `fn` with this thread in network namespace `ns`, then returns to the original one.
template <typename Fn>
auto in_namespace(const std::string& ns, Fn fn) -> std::expected<decltype(fn()), std::string> {
    const int self = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    const int target = ::open(("/var/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
    if (self < 0 || target < 0 || ::setns(target, CLONE_NEWNET) != 0) {
        const std::string err = std::strerror(errno);
        if (self >= 0) ::close(self);
        if (target >= 0) ::close(target);
        return std::unexpected("cannot enter network namespace " + ns + ": " + err);
    }
    auto result = fn();
    const bool back = ::setns(self, CLONE_NEWNET) == 0;
    ::close(self);
    ::close(target);
    if (!back) return std::unexpected(std::string("cannot return to the test's network namespace"));
    return result;
}

// An AF_PACKET socket on `ifname`, in the current namespace: whole frames, none of its own.
std::expected<int, std::string> packet_socket(const std::string& ifname) {
    const int fd = ::socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (fd < 0) return std::unexpected(fmt::format("AF_PACKET socket: {}", std::strerror(errno)));
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = static_cast<int>(::if_nametoindex(ifname.c_str()));
    const int one = 1, buffer = 16 << 20;
    if (sll.sll_ifindex == 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof sll) != 0 ||
        ::setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) != 0 ||
        ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer, sizeof buffer) != 0) {
        const std::string err = std::strerror(errno);
        ::close(fd);
        return std::unexpected(fmt::format("AF_PACKET socket on {}: {}", ifname, err));
    }
    return fd;
}

}  // namespace

std::string LinuxRouter::ruleset(const std::string& client_if, const std::string& server_if) {
    const std::string c = kClientIp.to_string(), s = kServerIp.to_string();
    return fmt::format(R"(table inet calyx_diff {{
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related counter accept
    ct state invalid counter drop
    iifname "{ci}" oifname "{si}" ip saddr {c} ip daddr {s} tcp dport {sp0}-{sp1} counter accept
    iifname "{ci}" oifname "{si}" ip saddr {c} ip daddr {s} udp dport {sp0}-{sp1} counter accept
    iifname "{ci}" oifname "{si}" ip saddr {c} ip daddr {s} icmp type echo-request counter accept
    iifname "{si}" oifname "{ci}" ip saddr {s} ip daddr {c} tcp dport {cp0}-{cp1} counter accept
    iifname "{si}" oifname "{ci}" ip saddr {s} ip daddr {c} udp dport {cp0}-{cp1} counter accept
    iifname "{si}" oifname "{ci}" ip saddr {s} ip daddr {c} icmp type echo-request counter accept
  }}
}}
)",
                       fmt::arg("ci", client_if), fmt::arg("si", server_if), fmt::arg("c", c), fmt::arg("s", s),
                       fmt::arg("sp0", kServerPorts.first), fmt::arg("sp1", kServerPorts.last),
                       fmt::arg("cp0", kClientPorts.first), fmt::arg("cp1", kClientPorts.last));
}

std::expected<std::unique_ptr<LinuxRouter>, std::string> LinuxRouter::create(const std::string& tag) {
    std::unique_ptr<LinuxRouter> r(new LinuxRouter());
    r->tag_ = tag;
    r->ns_router_ = tag + "-r";
    r->ns_client_ = tag + "-c";
    r->ns_server_ = tag + "-s";
    r->client_end_ = tag + "c";
    r->client_router_ = tag + "rc";
    r->server_end_ = tag + "s";
    r->server_router_ = tag + "rs";
    if (auto ok = r->build(); !ok) return std::unexpected(ok.error());
    return r;
}

std::expected<void, std::string> LinuxRouter::build() {
    const std::string ip = test::kIpTool;
    for (const auto* ns : {&ns_router_, &ns_client_, &ns_server_}) sh(fmt::format("{} netns del {}", ip, *ns));  // leftovers
    created_ = true;
    const std::string c = kClientIp.to_string(), s = kServerIp.to_string();
    std::vector<std::string> steps;
    for (const auto* ns : {&ns_router_, &ns_client_, &ns_server_}) {
        steps.push_back(fmt::format("{} netns add {}", ip, *ns));
        // No IPv6 anywhere: no router solicitations or DAD on the links.
        steps.push_back(fmt::format("{} netns exec {} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1", ip, *ns));
    }
    steps.push_back(fmt::format("{} link add {} type veth peer name {}", ip, client_end_, client_router_));
    steps.push_back(fmt::format("{} link add {} type veth peer name {}", ip, server_end_, server_router_));
    steps.push_back(fmt::format("{} link set {} netns {}", ip, client_end_, ns_client_));
    steps.push_back(fmt::format("{} link set {} netns {}", ip, server_end_, ns_server_));
    steps.push_back(fmt::format("{} link set {} netns {}", ip, client_router_, ns_router_));
    steps.push_back(fmt::format("{} link set {} netns {}", ip, server_router_, ns_router_));
    steps.push_back(fmt::format("{} -n {} link set {} address {}", ip, ns_client_, client_end_, kClientMac.to_string()));
    steps.push_back(fmt::format("{} -n {} link set {} address {}", ip, ns_server_, server_end_, kServerMac.to_string()));
    steps.push_back(fmt::format("{} -n {} link set {} address {}", ip, ns_router_, client_router_, kRouterClientMac.to_string()));
    steps.push_back(fmt::format("{} -n {} link set {} address {}", ip, ns_router_, server_router_, kRouterServerMac.to_string()));
    steps.push_back(fmt::format("{} netns exec {} sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 "
                               "net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.all.send_redirects=0 "
                               "net.netfilter.nf_conntrack_tcp_loose=0 net.netfilter.nf_conntrack_tcp_be_liberal=0",
                               ip, ns_router_));
    steps.push_back(fmt::format("{} -n {} addr add 203.0.113.1/24 dev {}", ip, ns_router_, client_router_));
    steps.push_back(fmt::format("{} -n {} addr add 10.20.0.1/24 dev {}", ip, ns_router_, server_router_));
    for (const auto& [ns, dev] : {std::pair{ns_client_, client_end_}, {ns_server_, server_end_}, {ns_router_, client_router_}, {ns_router_, server_router_}}) {
        steps.push_back(fmt::format("{} netns exec {} ethtool -K {} tx off rx off tso off gso off gro off", ip, ns, dev));
        steps.push_back(fmt::format("{} -n {} link set {} up", ip, ns, dev));
    }
    steps.push_back(fmt::format("{} -n {} neigh replace {} lladdr {} dev {} nud permanent", ip, ns_router_, c, kClientMac.to_string(), client_router_));
    steps.push_back(fmt::format("{} -n {} neigh replace {} lladdr {} dev {} nud permanent", ip, ns_router_, s, kServerMac.to_string(), server_router_));
    const std::string rules_file = fmt::format("/tmp/{}.nft", tag_);
    std::ofstream(rules_file) << ruleset(client_router_, server_router_);
    steps.push_back(fmt::format("{} netns exec {} nft -f {}", ip, ns_router_, rules_file));
    for (const auto& step : steps) {
        if (auto ok = run(step); !ok) {
            std::filesystem::remove(rules_file);
            return ok;
        }
    }
    std::filesystem::remove(rules_file);
    // The sysctls must hold: a kernel that ignored them would make Linux the wrong reference.
    const auto check = sh(fmt::format("{} netns exec {} sysctl -n net.netfilter.nf_conntrack_tcp_loose net.netfilter.nf_conntrack_tcp_be_liberal", ip, ns_router_));
    if (check.status != 0 || check.output != "0\n0\n")
        return std::unexpected("the router's conntrack sysctls did not take: " + check.output);

    for (auto [side, ns, dev] : {std::tuple{Side::client, ns_client_, client_end_}, {Side::server, ns_server_, server_end_}}) {
        auto fd = in_namespace(ns, [&] { return packet_socket(dev); });
        if (!fd) return std::unexpected(fd.error());
        if (!*fd) return std::unexpected(fd->error());
        socket_[static_cast<int>(side)] = **fd;
    }
    return {};
}

LinuxRouter::~LinuxRouter() {
    for (int& fd : socket_)
        if (fd >= 0) ::close(fd);
    if (!created_) return;
    // Deleting a namespace deletes its veth ends, and with them their peers.
    for (const auto* ns : {&ns_router_, &ns_client_, &ns_server_}) sh(fmt::format("{} netns del {}", test::kIpTool, *ns));
}

bool LinuxRouter::send(Side from, const Bytes& ip) {
    Bytes frame(sizeof(EtherHdr));
    const EtherHdr eth{from == Side::client ? kRouterClientMac : kRouterServerMac, mac_of(from),
                       Be16::from_host(ethertype::kIpv4)};
    std::memcpy(frame.data(), &eth, sizeof eth);
    frame.insert(frame.end(), ip.begin(), ip.end());
    for (int attempt = 0; attempt < 100; ++attempt) {
        if (::send(socket_[static_cast<int>(from)], frame.data(), frame.size(), 0) == static_cast<ssize_t>(frame.size()))
            return true;
        if (errno != EAGAIN && errno != ENOBUFS) return false;
        ::usleep(1000);
    }
    return false;
}

void LinuxRouter::receive(Side at, std::vector<Bytes>& out) {
    uint8_t buf[2048];
    for (;;) {
        const ssize_t n = ::recv(socket_[static_cast<int>(at)], buf, sizeof buf, 0);
        if (n < 0) return;  // EAGAIN: nothing more for now
        if (static_cast<size_t>(n) < sizeof(EtherHdr) + sizeof(Ipv4Hdr)) continue;
        EtherHdr eth;
        std::memcpy(&eth, buf, sizeof eth);
        if (eth.type.host() != ethertype::kIpv4) continue;
        out.emplace_back(buf + sizeof eth, buf + n);
    }
}

std::expected<void, std::string> LinuxRouter::flush_conntrack() {
    const auto r = sh(fmt::format("{} netns exec {} conntrack -F", test::kIpTool, ns_router_));
    if (r.status == 0) return {};
    return std::unexpected("conntrack -F: " + r.output);
}

std::string LinuxRouter::diagnostics() const {
    return sh(fmt::format("{0} netns exec {1} nft list ruleset; {0} netns exec {1} conntrack -L | head -50", test::kIpTool, ns_router_)).output;
}

}  // namespace calyx::difftest
