// calyx-trafficgen: end-to-end traffic generator for calyx and the peers it is compared with
// (dpdk-testpmd, OVS-DPDK). perf/compare.py drives it; the contract is its command line and
// JSON output, below.
//
// One lcore plays two endpoints over virtio-user ports that connect to the device under
// test's vhost-user sockets (the device is the server), or, for a device under test that has
// no vhost-user (the Linux kernel), over net_af_packet or net_af_xdp ports on the generator's
// ends of veth pairs (--a-iface, --b-iface, --iface-pmd):
//   side A   a "client VM" (--a-mac, --a-ip) that opens flows and sends data;
//   side B   a "server VM" (--b-role vm) or the Internet behind calyx's uplink (--b-role
//            internet: answers ARP for any address, owns --remote-count addresses from
//            --b-ip); it reflects what it receives, statelessly (swap MACs, IPs, ports; TCP
//            seq = ack, ack = seq + length; a SYN gets a SYN-ACK).
// Flow i (destinations vary fastest): B's port dst-port-min + i % ports, B's address
// b-ip + (i / ports) % remote-count, A's port 1024 + (i / (ports * remote-count)) % 64512.
//
//   established  open every flow (UDP: a datagram reflected; TCP: SYN, SYN-ACK, ACK; at most
//                1024 unanswered at a time), retrying the unanswered after 200 ms up to 5
//                times; warm up, drain; for --duration seconds send data over the flows round
//                robin as fast as the ring accepts while B reflects it (B does not answer pure
//                ACKs); drain 200 ms.
//   new          A sends the first packet (datagram or SYN) of each never-repeated tuple, B
//                counts and does not answer; until --flows are sent or --duration is over. No
//                warmup: it would use up tuples.
//
//   calyx-trafficgen --a-socket /tmp/a.sock --b-socket /tmp/b.sock --b-role vm
//       --a-mac 52:54:00:00:01:01 --a-ip 203.0.113.10 --b-mac 52:54:00:00:02:01
//       --b-ip 203.0.113.20 --gateway-mac ee:ee:ee:ee:ee:ee --proto tcp --mode established
//       --flows 10000 --dst-port-min 5000 --dst-port-max 5000 --frame-size 64 --json
//
// Every frame either side receives is checked, and a wrong one is counted as bad, not as
// received (nor reflected): addressed to the receiver's MAC; the flow it belongs to (from the
// flow index after A's L4 header, or a TCP SYN's or handshake ACK's initial sequence number)
// sent to that flow's destination address and port; from A's address and port, or with
// --translated-ip (a masquerading target) from that address and a port of --translated-ports,
// the same port for the whole life of an established flow; replies reaching A addressed to
// A's own flow; IPv4 and TCP/UDP checksums valid (every 8th frame, every 64th above 256
// bytes: a full checksum costs more than forwarding the frame).
//
// --frame-size counts the FCS (RFC 2544 sizes): an mbuf carries frame-size - 4 bytes; TCP SYNs
// and handshake ACKs are header-only. Exit code 0: run completed (even with loss); 1: setup
// failed (EAL, ports, links, fewer than 99% of flows established); 2: bad arguments.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <rte_arp.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_log.h>
#include <rte_mbuf.h>
#include <rte_memcpy.h>
#include <rte_tcp.h>
#include <rte_udp.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <array>
#include <boost/program_options.hpp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <expected>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace calyx::trafficgen {
namespace {

constexpr uint16_t kBurst = 32;
constexpr uint16_t kRingSize = 1024;
constexpr uint32_t kFirstSourcePort = 1024;
constexpr uint32_t kSourcePorts = 65536 - kFirstSourcePort;
constexpr uint32_t kNoFlow = UINT32_MAX;
constexpr uint16_t kTcpMss = 1460;
constexpr uint16_t kTcpWindow = 65535;
constexpr int kOpenAttempts = 5;
// Opening packets not yet answered, at most: more would only overflow the device's rings.
constexpr uint32_t kOpenWindow = kRingSize;
constexpr double kRetransmitSeconds = 0.2;
constexpr double kDrainSeconds = 0.2;
constexpr int kLinkTimeoutSeconds = 10;
constexpr double kSetupTimeoutSeconds = 120;
constexpr size_t kL3Offset = sizeof(rte_ether_hdr);
constexpr size_t kL4Offset = kL3Offset + sizeof(rte_ipv4_hdr);

volatile std::sig_atomic_t g_stop = 0;

enum class Role { vm, internet };
enum class Proto { udp, tcp };
enum class Mode { established, new_flows };
enum class PortKind { virtio_user, af_packet, af_xdp };

struct Options {
    std::string a_socket, b_socket;  // virtio-user: the device's vhost-user sockets
    std::string a_iface, b_iface;    // af_packet / af_xdp: the generator's veth ends
    PortKind port_kind = PortKind::virtio_user;
    Role b_role = Role::vm;
    rte_ether_addr a_mac{}, b_mac{}, gateway_mac{};
    uint32_t a_ip = 0, b_ip = 0;  // host order
    uint32_t remote_count = 1;
    Proto proto = Proto::udp;
    Mode mode = Mode::established;
    uint32_t flows = 0;
    uint16_t dst_port_min = 0, dst_port_max = 0;
    uint32_t frame_size = 64;
    double duration = 5, warmup = 1;
    uint16_t queues = 1;
    unsigned cpu = 0;
    std::string file_prefix;
    bool no_huge = false, json = false;
    // What B sees as the source of A's flows: A's own address and ports unless translated.
    std::optional<uint32_t> translated_ip;  // host order
    uint16_t translated_port_min = 1, translated_port_max = 65535;
    uint32_t checksum_every = 0;  // 0: every 8th frame, every 64th above 256 bytes
};

// ---------------------------------------------------------------------------------------
// Command line

// nullopt: --help was printed.
std::expected<std::optional<Options>, std::string> parse_options(int argc, char** argv) {
    namespace po = boost::program_options;
    po::options_description desc("calyx-trafficgen options");
    std::string iface_pmd, b_role, a_mac, b_mac, gateway_mac, a_ip, b_ip, proto, mode, translated_ip,
        translated_ports;
    int64_t remote_count, flows, port_min, port_max, frame_size, queues, cpu;
    Options o;
    // clang-format off
    desc.add_options()
        ("help", "this text")
        ("a-socket", po::value(&o.a_socket), "vhost-user socket of side A")
        ("b-socket", po::value(&o.b_socket), "vhost-user socket of side B")
        ("a-iface", po::value(&o.a_iface), "instead of a socket: side A's network interface")
        ("b-iface", po::value(&o.b_iface), "instead of a socket: side B's network interface")
        ("iface-pmd", po::value(&iface_pmd)->default_value("af_packet"),
         "the PMD of --a-iface/--b-iface: af_packet | af_xdp")
        ("b-role", po::value(&b_role)->required(), "vm | internet")
        ("a-mac", po::value(&a_mac)->required(), "side A's MAC")
        ("a-ip", po::value(&a_ip)->required(), "side A's IPv4 address")
        ("b-mac", po::value(&b_mac)->required(), "side B's MAC")
        ("b-ip", po::value(&b_ip)->required(), "side B's (first) IPv4 address")
        ("remote-count", po::value(&remote_count)->default_value(1),
         "internet role: addresses owned by B, from --b-ip")
        ("gateway-mac", po::value(&gateway_mac)->required(), "destination MAC of A's frames")
        ("proto", po::value(&proto)->required(), "udp | tcp")
        ("mode", po::value(&mode)->required(), "established | new")
        ("flows", po::value(&flows)->required(), "flows to open (established) or at most (new)")
        ("dst-port-min", po::value(&port_min)->required(), "first destination port")
        ("dst-port-max", po::value(&port_max)->required(), "last destination port")
        ("frame-size", po::value(&frame_size)->required(), "64..1518, including the FCS")
        ("duration", po::value(&o.duration)->default_value(5.0), "measurement seconds")
        ("warmup", po::value(&o.warmup)->default_value(1.0), "warmup seconds (established)")
        ("queues", po::value(&queues)->default_value(1), "queue pairs per port")
        ("cpu", po::value(&cpu)->default_value(0), "CPU of the generator's lcore")
        ("file-prefix", po::value(&o.file_prefix), "EAL file prefix (calyx-gen-<pid>)")
        ("translated-ip", po::value(&translated_ip),
         "B must see A's flows from this address (a masquerading target), not A's")
        ("translated-ports", po::value(&translated_ports),
         "with --translated-ip: MIN-MAX of the source ports B may see (default 1-65535)")
        ("checksum-every", po::value(&o.checksum_every)->default_value(0),
         "verify the checksums of every Nth frame received, a power of two (0: 8, above 256 bytes 64)")
        ("no-huge", po::bool_switch(&o.no_huge), "--no-huge -m 1024 instead of hugepages")
        ("json", po::bool_switch(&o.json), "one JSON object on stdout");
    // clang-format on
    try {
        po::variables_map vm;
        po::store(po::parse_command_line(argc, argv, desc), vm);
        if (vm.count("help")) {
            std::cout << desc << '\n';
            return std::nullopt;
        }
        po::notify(vm);
    } catch (const po::error& e) {
        return std::unexpected(e.what());
    }

    if (o.a_socket.empty() == o.a_iface.empty() || o.b_socket.empty() == o.b_iface.empty() ||
        o.a_socket.empty() != o.b_socket.empty())
        return std::unexpected("either --a-socket and --b-socket, or --a-iface and --b-iface");
    if (iface_pmd != "af_packet" && iface_pmd != "af_xdp")
        return std::unexpected("--iface-pmd: af_packet or af_xdp");
    o.port_kind = !o.a_socket.empty() ? PortKind::virtio_user
                  : iface_pmd == "af_xdp" ? PortKind::af_xdp
                                          : PortKind::af_packet;
    if (b_role != "vm" && b_role != "internet") return std::unexpected("--b-role: vm or internet");
    if (proto != "udp" && proto != "tcp") return std::unexpected("--proto: udp or tcp");
    if (mode != "established" && mode != "new") return std::unexpected("--mode: established|new");
    o.b_role = b_role == "vm" ? Role::vm : Role::internet;
    o.proto = proto == "udp" ? Proto::udp : Proto::tcp;
    o.mode = mode == "new" ? Mode::new_flows : Mode::established;
    for (auto [text, mac] : {std::pair{&a_mac, &o.a_mac}, std::pair{&b_mac, &o.b_mac},
                             std::pair{&gateway_mac, &o.gateway_mac}})
        if (rte_ether_unformat_addr(text->c_str(), mac) != 0)
            return std::unexpected(fmt::format("bad MAC address '{}'", *text));
    for (auto [text, ip] : {std::pair{&a_ip, &o.a_ip}, std::pair{&b_ip, &o.b_ip}}) {
        in_addr addr;
        if (inet_pton(AF_INET, text->c_str(), &addr) != 1)
            return std::unexpected(fmt::format("bad IPv4 address '{}'", *text));
        *ip = ntohl(addr.s_addr);
    }
    if (!translated_ip.empty()) {
        in_addr addr;
        if (inet_pton(AF_INET, translated_ip.c_str(), &addr) != 1)
            return std::unexpected(fmt::format("bad IPv4 address '{}'", translated_ip));
        o.translated_ip = ntohl(addr.s_addr);
    }
    if (!translated_ports.empty()) {
        unsigned lo = 0, hi = 0;
        char dash = 0, extra = 0;
        if (!o.translated_ip || std::sscanf(translated_ports.c_str(), "%u%c%u%c", &lo, &dash, &hi, &extra) != 3 ||
            dash != '-' || lo < 1 || hi > 65535 || lo > hi)
            return std::unexpected("--translated-ports: MIN-MAX within 1-65535, with --translated-ip");
        o.translated_port_min = uint16_t(lo);
        o.translated_port_max = uint16_t(hi);
    }
    if (o.checksum_every & (o.checksum_every - 1))
        return std::unexpected("--checksum-every: a power of two (or 0)");
    if (remote_count < 1 || o.b_ip + uint64_t(remote_count) - 1 > UINT32_MAX)
        return std::unexpected("--remote-count: at least 1, within the IPv4 space");
    if (o.b_role == Role::vm && remote_count != 1)
        return std::unexpected("--remote-count is for the internet role (a VM has one address)");
    o.remote_count = uint32_t(remote_count);
    if (port_min < 1 || port_max > 65535 || port_min > port_max)
        return std::unexpected("--dst-port-min/max: 1 <= min <= max <= 65535");
    o.dst_port_min = uint16_t(port_min);
    o.dst_port_max = uint16_t(port_max);
    const uint64_t distinct = uint64_t(kSourcePorts) * (port_max - port_min + 1) * o.remote_count;
    if (flows < 1 || uint64_t(flows) > std::min<uint64_t>(distinct, UINT32_MAX - 1))
        return std::unexpected(fmt::format(
            "--flows: 1..{} (distinct tuples of the ports and addresses given)", distinct));
    o.flows = uint32_t(flows);
    if (frame_size < 64 || frame_size > RTE_ETHER_MAX_LEN)
        return std::unexpected("--frame-size: 64..1518");
    o.frame_size = uint32_t(frame_size);
    if (!(o.duration > 0) || !(o.warmup >= 0))
        return std::unexpected("--duration > 0 and --warmup >= 0 seconds");
    if (queues < 1 || queues > 16) return std::unexpected("--queues: 1..16");
    o.queues = uint16_t(queues);
    if (cpu < 0 || cpu >= sysconf(_SC_NPROCESSORS_ONLN))
        return std::unexpected("--cpu: no such CPU");
    o.cpu = unsigned(cpu);
    if (o.file_prefix.empty()) o.file_prefix = fmt::format("calyx-gen-{}", getpid());
    return o;
}

// ---------------------------------------------------------------------------------------
// Flows and frames

struct FlowSpace {
    uint32_t first_remote_ip;
    uint16_t first_remote_port;
    uint32_t remote_ports;
    uint32_t remote_ips;
    uint32_t flows;

    // Destinations vary fastest, so consecutive flows spread over all of them: a NAT maps each
    // destination's flows on its own port range, which then fills evenly.
    uint32_t destinations() const { return remote_ports * remote_ips; }
    uint16_t local_port(uint32_t flow) const {
        return kFirstSourcePort + (flow / destinations()) % kSourcePorts;
    }
    uint16_t remote_port(uint32_t flow) const { return first_remote_port + flow % remote_ports; }
    uint32_t remote_ip(uint32_t flow) const { return first_remote_ip + (flow / remote_ports) % remote_ips; }
    // The inverse, for what A receives: its own (untranslated) tuple. kNoFlow if not ours.
    uint32_t flow_of(uint32_t remote_ip, uint16_t remote_port, uint16_t local_port) const {
        const uint32_t ip_index = remote_ip - first_remote_ip;
        const uint32_t port_index = uint16_t(remote_port - first_remote_port);
        if (local_port < kFirstSourcePort || port_index >= remote_ports || ip_index >= remote_ips)
            return kNoFlow;
        const uint64_t flow = uint64_t(local_port - kFirstSourcePort) * destinations() +
                              ip_index * uint64_t(remote_ports) + port_index;
        return flow < flows ? uint32_t(flow) : kNoFlow;
    }
};

// Spread initial sequence numbers so that flows do not share sequence space.
constexpr uint32_t kSeqFactor = 2654435761u;
uint32_t initial_seq(uint32_t flow) {
    return flow * kSeqFactor;
}

// The inverse of kSeqFactor modulo 2^32 (it is odd; Newton's iteration doubles the correct
// bits each step), so that a SYN's sequence number names its flow.
constexpr uint32_t kSeqInverse = [] {
    uint32_t x = kSeqFactor;
    for (int i = 0; i < 5; ++i) x *= 2 - kSeqFactor * x;
    return x;
}();
static_assert(kSeqFactor * kSeqInverse == 1);

uint16_t fold(uint32_t sum) {
    sum = (sum & 0xffff) + (sum >> 16);
    return uint16_t((sum & 0xffff) + (sum >> 16));
}

// RFC 1624: a checksum after a region whose ones' complement sum was old_sum now sums to
// new_sum.
uint16_t checksum_adjust(uint16_t checksum, uint16_t old_sum, uint16_t new_sum) {
    return uint16_t(~fold(uint32_t(uint16_t(~checksum)) + uint16_t(~old_sum) + new_sum));
}

enum class FrameKind { data, syn, ack };

// A frame of side A with everything constant filled in. Only its first `stamped` bytes
// (headers and the flow index) change per packet: the tx pool's mbufs are preloaded with the
// data frame, so the payload after them is never copied, and its checksum is precomputed.
struct FrameTemplate {
    std::array<uint8_t, RTE_ETHER_MAX_LEN> bytes{};
    uint16_t length = 0;    // bytes in the mbuf (no FCS)
    uint16_t stamped = 0;   // prefix rewritten per packet
    uint16_t payload = 0;   // L4 payload length (TCP sequence space)
    uint16_t tail_sum = 0;  // ones' complement sum of bytes [stamped, length)
};

FrameTemplate make_template(const Options& o, FrameKind kind) {
    const bool tcp = o.proto == Proto::tcp;
    const size_t mss_option = 4;
    const size_t l4_header = !tcp                     ? sizeof(rte_udp_hdr)
                             : kind == FrameKind::syn ? sizeof(rte_tcp_hdr) + mss_option
                                                      : sizeof(rte_tcp_hdr);
    const size_t headers = kL4Offset + l4_header;
    FrameTemplate t;
    t.length = uint16_t(kind == FrameKind::data ? o.frame_size - RTE_ETHER_CRC_LEN : headers);
    t.payload = uint16_t(t.length - headers);
    t.stamped = uint16_t(kind == FrameKind::data ? headers + sizeof(uint32_t) : headers);

    auto* eth = reinterpret_cast<rte_ether_hdr*>(t.bytes.data());
    eth->dst_addr = o.gateway_mac;
    eth->src_addr = o.a_mac;
    eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(t.bytes.data() + kL3Offset);
    ip->version_ihl = RTE_IPV4_VHL_DEF;
    ip->total_length = rte_cpu_to_be_16(uint16_t(t.length - kL3Offset));
    ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
    ip->time_to_live = 64;
    ip->next_proto_id = tcp ? IPPROTO_TCP : IPPROTO_UDP;
    ip->src_addr = rte_cpu_to_be_32(o.a_ip);
    uint8_t* l4 = t.bytes.data() + kL4Offset;
    if (tcp) {
        auto* th = reinterpret_cast<rte_tcp_hdr*>(l4);
        th->data_off = uint8_t(l4_header / 4 << 4);
        th->tcp_flags = kind == FrameKind::syn   ? RTE_TCP_SYN_FLAG
                        : kind == FrameKind::ack ? RTE_TCP_ACK_FLAG
                                                 : RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG;
        th->rx_win = rte_cpu_to_be_16(kTcpWindow);
        if (kind == FrameKind::syn) {
            const uint8_t mss[] = {2, 4, kTcpMss >> 8, kTcpMss & 0xff};
            std::memcpy(l4 + sizeof(rte_tcp_hdr), mss, sizeof mss);
        }
    } else {
        reinterpret_cast<rte_udp_hdr*>(l4)->dgram_len =
            rte_cpu_to_be_16(uint16_t(t.length - kL4Offset));
    }
    for (size_t i = headers; i < t.length; ++i) t.bytes[i] = uint8_t(i);
    t.tail_sum = rte_raw_cksum(t.bytes.data() + t.stamped, t.length - t.stamped);
    return t;
}

void preload_frame(rte_mempool*, void* frame, void* object, unsigned) {
    auto* m = static_cast<rte_mbuf*>(object);
    auto* t = static_cast<const FrameTemplate*>(frame);
    std::memcpy(static_cast<uint8_t*>(m->buf_addr) + RTE_PKTMBUF_HEADROOM, t->bytes.data(),
                t->length);
}

// An IPv4 packet of the generator's protocol: its headers, or l4 == nullptr.
struct Parsed {
    rte_ether_hdr* eth = nullptr;
    rte_ipv4_hdr* ip = nullptr;
    uint8_t* l4 = nullptr;
};

Parsed parse_ours(rte_mbuf* m, uint8_t proto) {
    Parsed p;
    p.eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    if (m->data_len < kL4Offset + sizeof(rte_udp_hdr) ||
        p.eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4))
        return p;
    p.ip = reinterpret_cast<rte_ipv4_hdr*>(p.eth + 1);
    const size_t l4_offset = kL3Offset + rte_ipv4_hdr_len(p.ip);
    const size_t l4_min = proto == IPPROTO_TCP ? sizeof(rte_tcp_hdr) : sizeof(rte_udp_hdr);
    if (p.ip->next_proto_id != proto || m->data_len < l4_offset + l4_min) return p;
    p.l4 = reinterpret_cast<uint8_t*>(p.eth) + l4_offset;
    return p;
}

uint32_t tcp_payload_length(const rte_ipv4_hdr* ip, const rte_tcp_hdr* tcp) {
    return rte_be_to_cpu_16(ip->total_length) - rte_ipv4_hdr_len(ip) - (tcp->data_off >> 4) * 4u;
}

// Turns an ARP request for the owner's address (any address: the Internet) into its reply,
// in place.
bool answer_arp(rte_mbuf* m, const rte_ether_addr& mac, uint32_t owned_ip, bool any_address) {
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    if (m->data_len < sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr) ||
        eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP))
        return false;
    auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
    auto& a = arp->arp_data;
    if (arp->arp_opcode != rte_cpu_to_be_16(RTE_ARP_OP_REQUEST) ||
        (!any_address && a.arp_tip != rte_cpu_to_be_32(owned_ip)))
        return false;
    arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
    a.arp_tha = a.arp_sha;
    a.arp_sha = mac;
    const uint32_t requested = a.arp_tip;
    a.arp_tip = a.arp_sip;
    a.arp_sip = requested;
    eth->dst_addr = eth->src_addr;
    eth->src_addr = mac;
    m->data_len = m->pkt_len = sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr);
    return true;
}

// ---------------------------------------------------------------------------------------
// The generator

enum class FlowPhase : uint8_t { idle, syn_sent, established };

// Side A's view of a flow. TCP: its next seq and the server's next seq (A's ack).
struct FlowState {
    uint32_t a_next_seq = 0;
    uint32_t b_next_seq = 0;
    uint16_t b_sees_port = 0;  // the source port B saw first (0: none yet)
    FlowPhase phase = FlowPhase::idle;
};

struct Counters {
    uint64_t sent_a = 0, received_b = 0, sent_b = 0, received_a = 0;
    // A's transmit bursts, and those the ring took only in part: a device under test that
    // keeps up with the generator never refuses (the generator is then the limit of the run).
    uint64_t bursts_a = 0, bursts_a_refused = 0;
};

// Frames that arrived wrong, over the whole run (setup included): not counted as received.
struct BadFrames {
    uint64_t checksum = 0;  // IPv4 or TCP/UDP checksum does not verify
    uint64_t header = 0;    // MAC, address, port or length not what the flow's frame must carry
    std::string first;      // what was wrong with the first one
    uint64_t total() const { return checksum + header; }
};

struct SetupResult {
    uint32_t established;
    double seconds;
};

class Generator {
  public:
    Generator(const Options& o, uint16_t port_a, uint16_t port_b, rte_mempool* tx_pool)
        : o_(o), port_a_(port_a), port_b_(port_b), tx_pool_(tx_pool) {}

    SetupResult open_flows() noexcept {
        const uint64_t start = rte_rdtsc();
        const uint64_t give_up = start + seconds_to_tsc(kSetupTimeoutSeconds);
        last_established_tsc_ = start;
        for (int attempt = 0; attempt < kOpenAttempts && established_ < o_.flows; ++attempt) {
            cursor_ = 0;
            opens_unanswered_ = 0;
            last_answer_tsc_ = rte_rdtsc();
            run(
                give_up, [this](rte_mbuf* m) { return fill_opening(m); },
                [this] { return cursor_ == o_.flows; });
            run(
                std::min(give_up, rte_rdtsc() + seconds_to_tsc(kRetransmitSeconds)),
                [this](rte_mbuf* m) { return fill_handshake_ack(m); },
                [this] { return established_ == o_.flows; });
            fmt::print(stderr, "setup attempt {}: {} of {} flows established\n", attempt + 1,
                       established_, o_.flows);
        }
        return {established_, double(last_established_tsc_ - start) / hz_};
    }

    // Returns the measured seconds; counters_ then hold the measurement and its drain.
    double measure_established() noexcept {
        auto fill = [this](rte_mbuf* m) { return fill_data(m); };
        auto never = [] { return false; };
        cursor_ = 0;
        run(rte_rdtsc() + seconds_to_tsc(o_.warmup), fill, never);
        drain();  // so that no reflection of the warmup counts in the measurement
        counters_ = {};
        const uint64_t start = rte_rdtsc();
        run(start + seconds_to_tsc(o_.duration), fill, never);
        const uint64_t end = rte_rdtsc();
        drain();
        return double(end - start) / hz_;
    }

    double measure_new() noexcept {
        cursor_ = 0;
        const uint64_t start = rte_rdtsc();
        run(
            start + seconds_to_tsc(o_.duration), [this](rte_mbuf* m) { return fill_first(m); },
            [this] { return cursor_ == o_.flows && tx_pending_ == 0; });
        const uint64_t end = rte_rdtsc();
        drain();
        return double(end - start) / hz_;
    }

    const Counters& counters() const { return counters_; }
    const BadFrames& bad_frames() const { return bad_; }

  private:
    uint64_t seconds_to_tsc(double s) const { return uint64_t(s * double(hz_)); }

    // The hot loop: B reflects, A learns, A sends what `fill` stamps.
    template <typename Fill, typename Done>
    void run(uint64_t deadline_tsc, Fill&& fill, Done&& done) noexcept {
        while (!g_stop && !done() && rte_rdtsc() < deadline_tsc) {
            poll_b();
            poll_a();
            transmit_a(fill);
        }
    }

    // Stops sending (unsent frames are not loss) and counts what is still in flight.
    void drain() noexcept {
        rte_pktmbuf_free_bulk(tx_pending_frames_.data(), tx_pending_);
        tx_pending_ = 0;
        const uint64_t deadline = rte_rdtsc() + seconds_to_tsc(kDrainSeconds);
        while (!g_stop && rte_rdtsc() < deadline) {
            poll_b();
            poll_a();
        }
    }

    // Frames the ring refused stay pending and go first next time: TCP sequence space has
    // already been used for them.
    template <typename Fill>
    void transmit_a(Fill& fill) noexcept {
        if (tx_pending_ < kBurst) {
            rte_mbuf** slots = tx_pending_frames_.data() + tx_pending_;
            const uint16_t room = kBurst - tx_pending_;
            if (rte_pktmbuf_alloc_bulk(tx_pool_, slots, room) == 0) {
                uint16_t filled = 0;
                while (filled < room && fill(slots[filled])) ++filled;
                rte_pktmbuf_free_bulk(slots + filled, room - filled);
                tx_pending_ += filled;
            }
        }
        if (tx_pending_ == 0) return;
        const uint16_t sent =
            rte_eth_tx_burst(port_a_, next_tx_queue(), tx_pending_frames_.data(), tx_pending_);
        counters_.sent_a += sent;
        ++counters_.bursts_a;
        counters_.bursts_a_refused += sent < tx_pending_;
        tx_pending_ -= sent;
        std::memmove(tx_pending_frames_.data(), tx_pending_frames_.data() + sent,
                     tx_pending_ * sizeof(rte_mbuf*));
    }

    uint16_t next_tx_queue() noexcept {
        const uint16_t q = tx_queue_;
        tx_queue_ = uint16_t(q + 1 == o_.queues ? 0 : q + 1);
        return q;
    }

    void stamp(rte_mbuf* m, const FrameTemplate& t, uint32_t flow, uint32_t seq,
               uint32_t ack) const noexcept {
        auto* frame = rte_pktmbuf_mtod(m, uint8_t*);
        rte_memcpy(frame, t.bytes.data(), t.stamped);
        m->data_len = t.length;
        m->pkt_len = t.length;
        auto* ip = reinterpret_cast<rte_ipv4_hdr*>(frame + kL3Offset);
        ip->dst_addr = rte_cpu_to_be_32(space_.remote_ip(flow));
        ip->hdr_checksum = rte_ipv4_cksum(ip);
        uint8_t* l4 = frame + kL4Offset;
        auto* udp = reinterpret_cast<rte_udp_hdr*>(l4);  // TCP's ports are at the same place
        udp->src_port = rte_cpu_to_be_16(space_.local_port(flow));
        udp->dst_port = rte_cpu_to_be_16(space_.remote_port(flow));
        if (tcp_) {
            auto* tcp = reinterpret_cast<rte_tcp_hdr*>(l4);
            tcp->sent_seq = rte_cpu_to_be_32(seq);
            tcp->recv_ack = rte_cpu_to_be_32(ack);
        }
        if (t.payload != 0) {
            const uint32_t index = rte_cpu_to_be_32(flow);
            std::memcpy(frame + t.stamped - sizeof index, &index, sizeof index);
        }
        // The template's checksum field is zero; the payload past the prefix is constant.
        const uint16_t sum = ~fold(uint32_t(rte_ipv4_phdr_cksum(ip, 0)) +
                                   rte_raw_cksum(l4, t.stamped - kL4Offset) + t.tail_sum);
        if (tcp_)
            reinterpret_cast<rte_tcp_hdr*>(l4)->cksum = sum;
        else
            udp->dgram_cksum = sum == 0 ? 0xffff : sum;  // zero would mean "no checksum"
    }

    void note_answer() noexcept {
        if (opens_unanswered_ > 0) --opens_unanswered_;
        last_answer_tsc_ = rte_rdtsc();
    }

    void note_established() noexcept {
        ++established_;
        last_established_tsc_ = rte_rdtsc();
    }

    bool fill_handshake_ack(rte_mbuf* m) noexcept {
        while (acks_due_ > 0) {
            const uint32_t flow = ack_due_flows_[--acks_due_];
            FlowState& f = flows_[flow];
            if (f.phase != FlowPhase::syn_sent) continue;  // answered twice
            stamp(m, ack_, flow, f.a_next_seq, f.b_next_seq);
            f.phase = FlowPhase::established;
            note_established();
            return true;
        }
        return false;
    }

    // Handshake ACKs first (they complete flows), then first packets of unopened flows while
    // fewer than kOpenWindow are unanswered; after 200 ms without an answer, those are lost.
    bool fill_opening(rte_mbuf* m) noexcept {
        if (fill_handshake_ack(m)) return true;
        if (opens_unanswered_ >= kOpenWindow) {
            const uint64_t now = rte_rdtsc();
            if (now - last_answer_tsc_ < seconds_to_tsc(kRetransmitSeconds)) return false;
            opens_unanswered_ = 0;
            last_answer_tsc_ = now;  // the next window gets its 200 ms too
        }
        while (cursor_ < o_.flows && flows_[cursor_].phase == FlowPhase::established) ++cursor_;
        if (cursor_ == o_.flows) return false;
        const uint32_t flow = cursor_++;
        ++opens_unanswered_;
        if (tcp_) {
            flows_[flow].a_next_seq = initial_seq(flow) + 1;
            flows_[flow].phase = FlowPhase::syn_sent;
        }
        fill_first_packet(m, flow);
        return true;
    }

    void fill_first_packet(rte_mbuf* m, uint32_t flow) const noexcept {
        if (tcp_)
            stamp(m, syn_, flow, initial_seq(flow), 0);
        else
            stamp(m, data_, flow, 0, 0);
    }

    bool fill_first(rte_mbuf* m) noexcept {
        if (cursor_ == o_.flows) return false;
        fill_first_packet(m, cursor_++);
        return true;
    }

    // Round robin over the established flows (at least 99% of them, so the skip is short).
    bool fill_data(rte_mbuf* m) noexcept {
        uint32_t flow = cursor_;
        while (flows_[flow].phase != FlowPhase::established) flow = next_flow(flow);
        cursor_ = next_flow(flow);
        FlowState& f = flows_[flow];
        stamp(m, data_, flow, f.a_next_seq, f.b_next_seq);
        f.a_next_seq += data_.payload;
        return true;
    }

    uint32_t next_flow(uint32_t flow) const { return flow + 1 == o_.flows ? 0 : flow + 1; }

    // Side B: answers ARP, counts arrivals and (established mode) reflects them in place.
    void poll_b() noexcept {
        const uint8_t proto = tcp_ ? IPPROTO_TCP : IPPROTO_UDP;
        for (uint16_t q = 0; q < o_.queues; ++q) {
            std::array<rte_mbuf*, kBurst> rx, reflected, dropped;
            const uint16_t n = rte_eth_rx_burst(port_b_, q, rx.data(), kBurst);
            uint16_t n_reflected = 0, n_dropped = 0;
            for (uint16_t i = 0; i < n; ++i) {
                rte_mbuf* m = rx[i];
                const Parsed p = parse_ours(m, proto);
                if (p.l4 != nullptr) {
                    if (!check_at_b(p, m)) {
                        dropped[n_dropped++] = m;
                        continue;
                    }
                    ++counters_.received_b;
                    if (o_.mode == Mode::established && reflect(p)) {
                        reflected[n_reflected++] = m;
                        continue;
                    }
                } else if (answer_arp(m, o_.b_mac, o_.b_ip, o_.b_role == Role::internet)) {
                    send_one(port_b_, q, m);
                    continue;
                }
                dropped[n_dropped++] = m;
            }
            rte_pktmbuf_free_bulk(dropped.data(), n_dropped);
            if (n_reflected == 0) continue;
            const uint16_t sent = rte_eth_tx_burst(port_b_, q, reflected.data(), n_reflected);
            counters_.sent_b += sent;
            rte_pktmbuf_free_bulk(reflected.data() + sent, n_reflected - sent);
        }
    }

    // Stateless reflection. Swapping addresses and ports leaves the L4 checksum unchanged;
    // TCP's seq, ack and flags are adjusted incrementally. Pure ACKs are not answered.
    bool reflect(const Parsed& p) const noexcept {
        std::swap(p.eth->src_addr, p.eth->dst_addr);
        const uint32_t src_ip = p.ip->src_addr;  // packed fields: no std::swap
        p.ip->src_addr = p.ip->dst_addr;
        p.ip->dst_addr = src_ip;
        auto* udp = reinterpret_cast<rte_udp_hdr*>(p.l4);
        const uint16_t src_port = udp->src_port;
        udp->src_port = udp->dst_port;
        udp->dst_port = src_port;
        if (!tcp_) return true;
        auto* tcp = reinterpret_cast<rte_tcp_hdr*>(p.l4);
        const bool syn = tcp->tcp_flags & RTE_TCP_SYN_FLAG;
        const uint32_t length = tcp_payload_length(p.ip, tcp);
        if (!syn && length == 0) return false;
        // seq, ack and flags: bytes 4..13 of the TCP header
        uint8_t* changed = p.l4 + offsetof(rte_tcp_hdr, sent_seq);
        const size_t changed_len = offsetof(rte_tcp_hdr, rx_win) - offsetof(rte_tcp_hdr, sent_seq);
        const uint16_t old_sum = rte_raw_cksum(changed, changed_len);
        const uint32_t seq = rte_be_to_cpu_32(tcp->sent_seq);
        tcp->sent_seq = tcp->recv_ack;
        tcp->recv_ack = rte_cpu_to_be_32(seq + length + (syn ? 1 : 0));
        if (syn) tcp->tcp_flags = RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG;
        tcp->cksum = checksum_adjust(tcp->cksum, old_sum, rte_raw_cksum(changed, changed_len));
        return true;
    }

    // Side A: answers ARP, counts reflections and learns flows' state from them.
    void poll_a() noexcept {
        const uint8_t proto = tcp_ ? IPPROTO_TCP : IPPROTO_UDP;
        for (uint16_t q = 0; q < o_.queues; ++q) {
            std::array<rte_mbuf*, kBurst> rx, done;
            const uint16_t n = rte_eth_rx_burst(port_a_, q, rx.data(), kBurst);
            uint16_t n_done = 0;
            for (uint16_t i = 0; i < n; ++i) {
                rte_mbuf* m = rx[i];
                const Parsed p = parse_ours(m, proto);
                if (p.l4 != nullptr) {
                    if (const uint32_t flow = check_at_a(p, m); flow != kNoFlow) learn(p, flow);
                } else if (answer_arp(m, o_.a_mac, o_.a_ip, false)) {
                    send_one(port_a_, q, m);
                    continue;
                }
                done[n_done++] = m;
            }
            rte_pktmbuf_free_bulk(done.data(), n_done);
        }
    }

    // ---- Checks of what arrives (see the top of this file)

    // The frame's IPv4 datagram fits the mbuf and holds its L4 header. False: counted bad.
    bool lengths_ok(const Parsed& p, const rte_mbuf* m, const char* side) noexcept {
        const uint32_t total = rte_be_to_cpu_16(p.ip->total_length);
        const uint32_t ihl = rte_ipv4_hdr_len(p.ip);
        const uint32_t header = tcp_ ? sizeof(rte_tcp_hdr) : sizeof(rte_udp_hdr);
        if (kL3Offset + total > m->data_len || total < ihl + header ||
            (tcp_ && total < ihl + (reinterpret_cast<const rte_tcp_hdr*>(p.l4)->data_off >> 4) * 4u))
            return bad_header(p, side, "IPv4 total length does not match the frame");
        return true;
    }

    // The flow index A wrote after the L4 header of a data frame, or kNoFlow without one.
    uint32_t flow_index_in_payload(const Parsed& p) const noexcept {
        const uint32_t l4_len = rte_be_to_cpu_16(p.ip->total_length) - rte_ipv4_hdr_len(p.ip);
        const uint32_t header = tcp_ ? (reinterpret_cast<const rte_tcp_hdr*>(p.l4)->data_off >> 4) * 4u
                                     : uint32_t(sizeof(rte_udp_hdr));
        if (l4_len < header + sizeof(uint32_t)) return kNoFlow;
        uint32_t index;
        std::memcpy(&index, p.l4 + header, sizeof index);
        return rte_be_to_cpu_32(index);
    }

    // Side B: a frame of A's, as the device under test delivered it.
    bool check_at_b(const Parsed& p, const rte_mbuf* m) noexcept {
        if (!lengths_ok(p, m, "B")) return false;
        if (!rte_is_same_ether_addr(&p.eth->dst_addr, &o_.b_mac))
            return bad_header(p, "B", "not addressed to B's MAC");
        uint32_t flow = flow_index_in_payload(p);
        if (flow == kNoFlow && tcp_) {  // a SYN or a handshake ACK: its sequence number
            const auto* tcp = reinterpret_cast<const rte_tcp_hdr*>(p.l4);
            const uint32_t isn = rte_be_to_cpu_32(tcp->sent_seq) - (tcp->tcp_flags & RTE_TCP_SYN_FLAG ? 0 : 1);
            flow = isn * kSeqInverse;
        }
        if (flow >= o_.flows) return bad_header(p, "B", "belongs to no flow of A's");
        const auto* udp = reinterpret_cast<const rte_udp_hdr*>(p.l4);  // TCP's ports are at the same place
        if (rte_be_to_cpu_32(p.ip->dst_addr) != space_.remote_ip(flow) ||
            rte_be_to_cpu_16(udp->dst_port) != space_.remote_port(flow))
            return bad_header(p, "B", "not sent to its flow's destination");
        const uint32_t src = rte_be_to_cpu_32(p.ip->src_addr);
        const uint16_t src_port = rte_be_to_cpu_16(udp->src_port);
        if (!o_.translated_ip) {
            if (src != o_.a_ip || src_port != space_.local_port(flow))
                return bad_header(p, "B", "source is not A's address and port");
        } else {
            if (src != *o_.translated_ip || src_port < o_.translated_port_min || src_port > o_.translated_port_max)
                return bad_header(p, "B", "source is not the translated address and a port of its range");
            if (flow < tracked_) {
                uint16_t& seen = flows_[flow].b_sees_port;
                if (seen == 0) seen = src_port;
                if (seen != src_port) return bad_header(p, "B", "the flow's translated port changed");
            }
        }
        return checksums_ok(p, "B");
    }

    // Side A: a reflection of B's, as the device under test delivered it (translated back).
    // Returns the flow, or kNoFlow (counted bad).
    uint32_t check_at_a(const Parsed& p, const rte_mbuf* m) noexcept {
        if (!lengths_ok(p, m, "A")) return kNoFlow;
        if (!rte_is_same_ether_addr(&p.eth->dst_addr, &o_.a_mac) || rte_be_to_cpu_32(p.ip->dst_addr) != o_.a_ip)
            return bad_header(p, "A", "not addressed to A's MAC and address"), kNoFlow;
        const auto* udp = reinterpret_cast<const rte_udp_hdr*>(p.l4);
        const uint32_t flow = space_.flow_of(rte_be_to_cpu_32(p.ip->src_addr), rte_be_to_cpu_16(udp->src_port),
                                             rte_be_to_cpu_16(udp->dst_port));
        if (flow == kNoFlow) return bad_header(p, "A", "a reply to no flow of A's"), kNoFlow;
        if (const uint32_t index = flow_index_in_payload(p); index != kNoFlow && index != flow)
            return bad_header(p, "A", "another flow's data delivered on this flow's addresses"), kNoFlow;
        return checksums_ok(p, "A") ? flow : kNoFlow;
    }

    // IPv4 header and TCP/UDP checksums (with the pseudo-header), on a sample of frames. A UDP
    // checksum of 0 ("none") is wrong too: A always sends one and a router must keep it. (A
    // TCP checksum may be 0: ones' complement has two zeros.)
    bool checksums_ok(const Parsed& p, const char* side) noexcept {
        if ((++frames_checked_ & checksum_sample_mask_) != 0) return true;
        const uint32_t ihl = rte_ipv4_hdr_len(p.ip);
        if (rte_raw_cksum(p.ip, ihl) != 0xffff) return bad_checksum(p, side, "IPv4 header checksum");
        const uint32_t l4_len = rte_be_to_cpu_16(p.ip->total_length) - ihl;
        const uint16_t stored = tcp_ ? reinterpret_cast<const rte_tcp_hdr*>(p.l4)->cksum
                                     : reinterpret_cast<const rte_udp_hdr*>(p.l4)->dgram_cksum;
        const uint32_t sum = uint32_t(rte_ipv4_phdr_cksum(p.ip, 0)) + rte_raw_cksum(p.l4, l4_len);
        if ((!tcp_ && stored == 0) || fold(sum) != 0xffff)
            return bad_checksum(p, side, tcp_ ? "TCP checksum" : "UDP checksum");
        return true;
    }

    bool bad_header(const Parsed& p, const char* side, const char* what) noexcept {
        ++bad_.header;
        note_bad(p, side, what);
        return false;
    }
    bool bad_checksum(const Parsed& p, const char* side, const char* what) noexcept {
        ++bad_.checksum;
        note_bad(p, side, what);
        return false;
    }
    void note_bad(const Parsed& p, const char* side, const char* what) noexcept {
        if (!bad_.first.empty()) return;
        const auto* udp = reinterpret_cast<const rte_udp_hdr*>(p.l4);
        const auto ip = [](uint32_t be) {
            const uint32_t a = rte_be_to_cpu_32(be);
            return fmt::format("{}.{}.{}.{}", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff);
        };
        bad_.first = fmt::format("{} received {}:{} -> {}:{}: {}", side, ip(p.ip->src_addr),
                                 rte_be_to_cpu_16(udp->src_port), ip(p.ip->dst_addr),
                                 rte_be_to_cpu_16(udp->dst_port), what);
    }

    void learn(const Parsed& p, uint32_t flow) noexcept {
        ++counters_.received_a;
        FlowState& f = flows_[flow];
        if (!tcp_) {
            if (f.phase != FlowPhase::established) {
                f.phase = FlowPhase::established;
                note_answer();
                note_established();
            }
            return;
        }
        const auto* tcp = reinterpret_cast<const rte_tcp_hdr*>(p.l4);
        const uint32_t seq = rte_be_to_cpu_32(tcp->sent_seq);
        if (tcp->tcp_flags & RTE_TCP_SYN_FLAG) {
            if (f.phase == FlowPhase::syn_sent && acks_due_ < ack_due_flows_.size()) {
                f.b_next_seq = seq + 1;
                ack_due_flows_[acks_due_++] = flow;
                note_answer();
            }  // else: a late duplicate, or no room (the SYN is retried)
            return;
        }
        const uint32_t end = seq + tcp_payload_length(p.ip, tcp);
        if (int32_t(end - f.b_next_seq) > 0) f.b_next_seq = end;
    }

    static void send_one(uint16_t port, uint16_t queue, rte_mbuf* m) noexcept {
        if (rte_eth_tx_burst(port, queue, &m, 1) == 0) rte_pktmbuf_free(m);
    }

    const Options& o_;
    const uint16_t port_a_, port_b_;
    rte_mempool* const tx_pool_;
    const bool tcp_ = o_.proto == Proto::tcp;
    const uint64_t hz_ = rte_get_tsc_hz();
    const FrameTemplate data_ = make_template(o_, FrameKind::data);
    const FrameTemplate syn_ = make_template(o_, FrameKind::syn);
    const FrameTemplate ack_ = make_template(o_, FrameKind::ack);
    // new mode keeps no per-flow state: flow_of then finds no flow
    const uint32_t tracked_ = o_.mode == Mode::established ? o_.flows : 0;
    const FlowSpace space_{o_.b_ip, o_.dst_port_min,
                           uint32_t(o_.dst_port_max - o_.dst_port_min + 1), o_.remote_count,
                           tracked_};
    std::vector<FlowState> flows_ = std::vector<FlowState>(tracked_);
    Counters counters_;
    BadFrames bad_;
    uint64_t frames_checked_ = 0;
    // Checksums of every 8th frame, every 64th of large frames (see the top of this file).
    const uint64_t checksum_sample_mask_ = o_.checksum_every ? o_.checksum_every - 1 : o_.frame_size <= 256 ? 7 : 63;
    uint32_t cursor_ = 0;
    uint32_t established_ = 0;
    uint64_t last_established_tsc_ = 0;
    uint32_t opens_unanswered_ = 0;
    uint64_t last_answer_tsc_ = 0;
    std::array<rte_mbuf*, kBurst> tx_pending_frames_{};
    uint16_t tx_pending_ = 0;
    uint16_t tx_queue_ = 0;
    std::array<uint32_t, 4096> ack_due_flows_{};
    uint32_t acks_due_ = 0;
};

// ---------------------------------------------------------------------------------------
// EAL, ports and the run

// The ethdev name of side A (0) or B (1).
std::string port_name(const Options& o, size_t side) {
    switch (o.port_kind) {
    case PortKind::af_packet: return fmt::format("net_af_packet{}", side);
    case PortKind::af_xdp: return fmt::format("net_af_xdp{}", side);
    case PortKind::virtio_user: break;
    }
    return fmt::format("net_virtio_user{}", side);
}

std::vector<std::string> eal_arguments(const Options& o) {
    std::vector<std::string> args{"calyx-trafficgen", "--lcores",      fmt::format("0@{}", o.cpu),
                                  "--no-pci",         "--file-prefix", o.file_prefix,
                                  "--log-level",      "notice"};
    const std::pair<const std::string*, const rte_ether_addr*> sides[] = {{&o.a_socket, &o.a_mac},
                                                                          {&o.b_socket, &o.b_mac}};
    const std::string* ifaces[] = {&o.a_iface, &o.b_iface};
    for (size_t i = 0; i < 2; ++i) {
        char mac[RTE_ETHER_ADDR_FMT_SIZE];
        rte_ether_format_addr(mac, sizeof mac, sides[i].second);
        args.push_back("--vdev");
        switch (o.port_kind) {
        case PortKind::virtio_user:
            args.push_back(fmt::format("{},path={},queues={},queue_size={},mac={}", port_name(o, i),
                                       *sides[i].first, o.queues, kRingSize, mac));
            break;
        case PortKind::af_packet:  // the interface's own MAC: the caller sets it to the side's
            // rings of kRingSize frames like the virtio queues (the PMD's default is 512)
            args.push_back(fmt::format("{},iface={},qpairs={},framecnt={}", port_name(o, i), *ifaces[i],
                                       o.queues, kRingSize));
            break;
        case PortKind::af_xdp:
            args.push_back(fmt::format("{},iface={},start_queue=0,queue_count={}", port_name(o, i),
                                       *ifaces[i], o.queues));
            break;
        }
    }
    if (o.no_huge) {
        args.insert(args.end(), {"--no-huge", "-m", "1024"});
    } else if (o.port_kind == PortKind::virtio_user) {
        // virtio-user shares memory with the vhost server by file descriptor: one per list
        args.push_back("--single-file-segments");
    }
    return args;
}

// EAL leaves its runtime directory and hugepage files behind; they would eat the pool.
void remove_eal_files(const std::string& prefix) {
    std::error_code ec;
    std::filesystem::remove_all(std::filesystem::path("/var/run/dpdk") / prefix, ec);
    std::ifstream mounts("/proc/mounts");
    std::string device, dir, type, rest;
    while (mounts >> device >> dir >> type && std::getline(mounts, rest)) {
        if (type != "hugetlbfs") continue;
        for (const auto& entry : std::filesystem::directory_iterator(dir, ec))
            if (entry.path().filename().string().starts_with(prefix + "map_"))
                std::filesystem::remove(entry.path(), ec);
    }
}

std::expected<uint16_t, std::string> start_port(const std::string& name, const std::string& socket,
                                                uint16_t queues, rte_mempool* rx_pool) {
    uint16_t port;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &port) != 0)
        return std::unexpected(
            fmt::format("no port for {} (is a vhost-user server or the interface there?)", socket));
    rte_eth_conf conf{};
    const int socket_id = rte_eth_dev_socket_id(port);
    int rc = rte_eth_dev_configure(port, queues, queues, &conf);
    for (uint16_t q = 0; rc == 0 && q < queues; ++q) {
        rc = rte_eth_rx_queue_setup(port, q, kRingSize, socket_id, nullptr, rx_pool);
        if (rc == 0) rc = rte_eth_tx_queue_setup(port, q, kRingSize, socket_id, nullptr);
    }
    if (rc == 0) rc = rte_eth_dev_start(port);
    if (rc != 0)
        return std::unexpected(fmt::format("port {} ({}): {}", name, socket, rte_strerror(-rc)));
    // The device under test may forward frames not addressed to the port's own MAC.
    // (virtio-user without a control queue has no filter to open: -ENOTSUP.)
    if (rc = rte_eth_promiscuous_enable(port); rc != 0 && rc != -ENOTSUP)
        fmt::print(stderr, "{}: promiscuous mode: {}\n", name, rte_strerror(-rc));
    return port;
}

bool wait_for_links(uint16_t port_a, uint16_t port_b) {
    for (int waited_ms = 0; !g_stop && waited_ms < kLinkTimeoutSeconds * 1000; waited_ms += 10) {
        rte_eth_link a{}, b{};
        if (rte_eth_link_get_nowait(port_a, &a) == 0 && rte_eth_link_get_nowait(port_b, &b) == 0 &&
            a.link_status == RTE_ETH_LINK_UP && b.link_status == RTE_ETH_LINK_UP)
            return true;
        usleep(10'000);
    }
    return false;
}

// The contract's JSON object: on stdout with --json, else on stderr for people to read.
void report(const Options& o, std::optional<SetupResult> setup, const Counters& c, const BadFrames& bad,
            double seconds) {
    std::string json =
        fmt::format("{{\"mode\":\"{}\",\"proto\":\"{}\",\"flows\":{},\"frame_size\":{},"
                    "\"bad_frames\":{{\"checksum\":{},\"header\":{}}}",
                    o.mode == Mode::new_flows ? "new" : "established",
                    o.proto == Proto::tcp ? "tcp" : "udp", o.flows, o.frame_size, bad.checksum, bad.header);
    if (bad.total() != 0)
        fmt::print(stderr, "{} bad frames ({} checksums, {} headers); the first: {}\n", bad.total(), bad.checksum,
                   bad.header, bad.first);
    if (!setup) {
        json += fmt::format(
            ",\"measure\":{{\"seconds\":{:.6f},\"sent_a\":{},\"received_b\":{},"
            "\"new_per_second\":{:.0f},\"offered_per_second\":{:.0f},\"bursts_a\":{},"
            "\"bursts_a_refused\":{}}}}}",
            seconds, c.sent_a, c.received_b, c.received_b / seconds, c.sent_a / seconds, c.bursts_a,
            c.bursts_a_refused);
    } else {
        const double delivered = double(c.received_b + c.received_a);
        const double offered = double(c.sent_a + c.sent_b);
        const double mpps = delivered / seconds / 1e6;
        json += fmt::format(
            ",\"setup\":{{\"attempted\":{},\"established\":{},\"seconds\":{:.6f},"
            "\"per_second\":{:.0f}}},\"measure\":{{\"seconds\":{:.6f},\"sent_a\":{},"
            "\"received_b\":{},\"sent_b\":{},\"received_a\":{},\"delivered_mpps\":{:.6f},"
            "\"gbps\":{:.6f},\"loss\":{:.6f},\"offered_mpps\":{:.6f},\"bursts_a\":{},"
            "\"bursts_a_refused\":{}}}}}",
            o.flows, setup->established, setup->seconds,
            setup->seconds > 0 ? setup->established / setup->seconds : 0, seconds, c.sent_a,
            c.received_b, c.sent_b, c.received_a, mpps, mpps * o.frame_size * 8 / 1000,
            offered > 0 ? 1 - delivered / offered : 0, offered / seconds / 1e6, c.bursts_a,
            c.bursts_a_refused);
    }
    fmt::print(o.json ? stdout : stderr, "{}\n", json);
}

int run(const Options& o) {
    // rx pool: both ports' rx rings, B's tx ring (reflections) and bursts in hand;
    // tx pool: A's tx ring and its pending burst. Only A's frames ever live in the tx pool,
    // so preloading it with the data frame leaves just the headers to write per packet.
    const unsigned rx_frames = 4u * o.queues * kRingSize + 4096 - 1;
    const unsigned tx_frames = 2u * o.queues * kRingSize + 2048 - 1;
    rte_mempool* rx_pool = rte_pktmbuf_pool_create("gen_rx", rx_frames, 256, 0,
                                                   RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
    rte_mempool* tx_pool = rte_pktmbuf_pool_create("gen_tx", tx_frames, 256, 0,
                                                   RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
    if (rx_pool == nullptr || tx_pool == nullptr) {
        fmt::print(stderr, "mbuf pools: {}\n", rte_strerror(rte_errno));
        return 1;
    }
    FrameTemplate data = make_template(o, FrameKind::data);
    rte_mempool_obj_iter(tx_pool, preload_frame, &data);

    const std::string& where_a = o.a_socket.empty() ? o.a_iface : o.a_socket;
    const std::string& where_b = o.b_socket.empty() ? o.b_iface : o.b_socket;
    auto port_a = start_port(port_name(o, 0), where_a, o.queues, rx_pool);
    std::expected<uint16_t, std::string> port_b = std::unexpected(std::string());
    if (port_a) port_b = start_port(port_name(o, 1), where_b, o.queues, rx_pool);
    int rc = 0;
    if (!port_a || !port_b) {
        fmt::print(stderr, "{}\n", port_a ? port_b.error() : port_a.error());
        rc = 1;
    } else if (!wait_for_links(*port_a, *port_b)) {
        fmt::print(stderr, "the links to {} and {} did not come up within {} s\n", where_a, where_b,
                   kLinkTimeoutSeconds);
        rc = 1;
    } else {
        Generator gen(o, *port_a, *port_b, tx_pool);
        if (o.mode == Mode::new_flows) {
            const double seconds = gen.measure_new();
            report(o, std::nullopt, gen.counters(), gen.bad_frames(), seconds);
        } else if (const SetupResult setup = gen.open_flows();
                   uint64_t(setup.established) * 100 < uint64_t(o.flows) * 99) {
            fmt::print(stderr, "only {} of {} flows established{}\n", setup.established, o.flows,
                       gen.bad_frames().total() ? "; bad frames: " + gen.bad_frames().first : std::string());
            rc = 1;
        } else {
            const double seconds = gen.measure_established();
            report(o, setup, gen.counters(), gen.bad_frames(), seconds);
        }
    }
    for (auto port : {port_a, port_b}) {
        if (!port) continue;
        rte_eth_dev_stop(*port);
        rte_eth_dev_close(*port);
    }
    rte_mempool_free(tx_pool);
    rte_mempool_free(rx_pool);
    return g_stop ? 1 : rc;
}

}  // namespace
}  // namespace calyx::trafficgen

int main(int argc, char** argv) {
    using namespace calyx::trafficgen;
    auto options = parse_options(argc, argv);
    if (!options) {
        fmt::print(stderr, "calyx-trafficgen: {} (see --help)\n", options.error());
        return 2;
    }
    if (!*options) return 0;
    const Options& o = **options;
    std::signal(SIGINT, [](int) { g_stop = 1; });
    std::signal(SIGTERM, [](int) { g_stop = 1; });

    // EAL logs to stdout by default; stdout is for the JSON object.
    rte_openlog_stream(stderr);
    std::vector<std::string> args = eal_arguments(o);
    std::vector<char*> argv_eal;
    for (auto& a : args) argv_eal.push_back(a.data());
    argv_eal.push_back(nullptr);
    if (rte_eal_init(int(args.size()), argv_eal.data()) < 0) {
        fmt::print(stderr, "EAL initialisation failed ({}): {}\n", fmt::join(args, " "),
                   rte_strerror(rte_errno));
        remove_eal_files(o.file_prefix);
        return 1;
    }
    const int rc = run(o);
    rte_eal_cleanup();
    remove_eal_files(o.file_prefix);
    return rc;
}
