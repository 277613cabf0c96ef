#include "dp/policy.hpp"

#include <new>

#include "calyx/headers.hpp"
#include "dp/conntrack.hpp"
#include "dp/nat.hpp"
#include "dp/route.hpp"

namespace calyx::dp {
namespace {

DropReason reason_of(CtVerdict v) {
    switch (v) {
        case CtVerdict::invalid_new: return DropReason::ct_invalid_new;
        case CtVerdict::invalid_flags: return DropReason::ct_invalid_tcp_flags;
        case CtVerdict::out_of_window: return DropReason::ct_out_of_window;
        case CtVerdict::malformed: return DropReason::l4_malformed;
        default: return DropReason::ct_invalid_state;
    }
}

bool is_icmp_error(uint8_t type) {
    return type == icmp::kDestUnreachable || type == icmp::kTimeExceeded ||
           type == icmp::kParameterProblem;
}

size_t index_of(const Snapshot& snap, const InstanceView* inst) {
    return static_cast<size_t>(inst - snap.instances.data());
}

// Ports of a packet for its connection key: TCP/UDP ports, the echo identifier on both sides
// for ICMP echo (request and reply then share a key), nothing for other protocols.
void l4_ports(uint8_t proto, const uint8_t* l4, size_t len, uint16_t& sport, uint16_t& dport) {
    sport = dport = 0;
    if ((proto == ipproto::kTcp || proto == ipproto::kUdp) && len >= 4) {
        sport = static_cast<uint16_t>(l4[0] << 8 | l4[1]);
        dport = static_cast<uint16_t>(l4[2] << 8 | l4[3]);
    } else if (proto == ipproto::kIcmp && len >= 8) {
        sport = dport = static_cast<uint16_t>(l4[4] << 8 | l4[5]);
    }
}

// A refusal by a per-instance limit, counted on the charged instance's port (a connection
// from outside arrives on the uplink but is charged to the instance it reaches).
struct Refusal {
    DropReason reason;
    uint16_t port = kNoPort;  // where it is counted; kNoPort: where the packet arrived
};

// A check's outcome: the packet passes, or a Refusal. One 32-bit word, returned in a
// register: an std::optional<Refusal> came back through the stack, written with narrow stores
// and read at once with a wide load (a store-forwarding stall on every established packet).
class Outcome {
public:
    Outcome(std::nullopt_t) noexcept {}  // passes
    Outcome(Refusal r) noexcept
        : bits_(kRefused | static_cast<uint32_t>(r.reason) << 16 | r.port) {}
    explicit operator bool() const noexcept { return bits_ != 0; }  // refused
    Refusal operator*() const noexcept {
        return {static_cast<DropReason>(bits_ >> 16 & 0xff), static_cast<uint16_t>(bits_)};
    }

private:
    static constexpr uint32_t kRefused = uint32_t{1} << 31;
    uint32_t bits_ = 0;
};
static_assert(sizeof(Outcome) == 4 && sizeof(DropReason) == 1);

void refuse(Batch& batch, uint16_t i, const Refusal& r) {
    batch.drop(i, r.reason);
    batch.meta[i].charged_port = r.port;
}

class PolicyRun {
public:
    PolicyRun(const Snapshot& snap, WorkerContext& ctx)
        : snap_(snap), ctx_(ctx), table_(*snap.conntrack), accounts_(table_.accounts()) {}

    // A packet whose key the lookup found at `pos` (< 0: missed): an established packet is
    // checked against its connection; a first packet the rules allow goes to `opens`.
    Outcome track(uint16_t i, uint16_t k, int32_t pos, PacketMeta& m, PendingOpens& opens) {
        const Flow& f = opens.flows[k];
        const Sides& s = opens.sides[k];
        if (pos >= 0) {
            CtEntry& e = table_.entry(pos);
            e.lock_entry();
            if (!e.dead()) {
                const auto r = existing(e, f, s, m);
                table_.unlock(pos);
                return r;
            }
            e.unlock_entry();  // deleted under us: the packet is a first packet
        }
        PendingOpen& p = *::new (&opens.items[opens.count]) PendingOpen;
        PolicyDecision d;
        if (auto reason = decide_new(f, s, p.fresh, d)) return Refusal{*reason};
        p.packet = i;
        p.flow = k;
        p.masquerade = d.masquerade;
        ++opens.count;
        return std::nullopt;
    }

    // Creating the connection of a pending first packet that forward let through takes two
    // halves, so that a burst's inserts all run before its first new entry is written: each
    // claim() starts loading the lines its connection will write (entry, key record, NAT map
    // slot), which arrive while the next packets claim theirs.
    //
    // claim(): the charges, the NAT port, room in the table and the key's insert; nothing is
    // written into the entry yet. Refused: everything given back. Otherwise `c` holds the
    // position, or c.follows: no port was left, so the packet follows the connection an
    // earlier packet of the burst is making, or whose key an earlier claim of the burst
    // inserted (finish() then refuses it if there is none), or c.waits: resume() it once the
    // earlier claims are finished, or none of these: it followed a connection another worker
    // made, and finish() only keeps its place in the burst (its first fragment is remembered
    // after the earlier packets', as packet by packet: the fragment table's fairness counts
    // a source's datagrams in their order).
    struct Claim {
        int32_t position = -1;
        int32_t external = -1;  // the NAT port taken for it, -1: none
        bool follows = false;
        // The table is full (room) or the key's buckets are (slot): an eviction is due, and the
        // earlier claims of the burst must come alive first, as they would packet by packet,
        // since a claimed connection is not yet one an eviction can take. Then resume().
        enum class Waits : uint8_t { nothing, room, slot } waits = Waits::nothing;
        Outcome refusal = std::nullopt;  // follows: the refusal if nobody made the connection
    };
    // The burst's claims so far that finish() will complete, and a bit (position modulo 64)
    // for each position they hold: with its bit clear a new position is none of theirs, so a
    // burst of new connections does not walk the list for each packet (new-udp: +30 cycles
    // per connection when it did).
    struct Earlier {
        const Claim* claims = nullptr;
        uint16_t count = 0;
        uint64_t positions = 0;
        static uint64_t bit(int32_t position) { return uint64_t{1} << (static_cast<uint32_t>(position) % 64); }
    };
    Outcome claim(const PendingOpen& p, const PendingOpens& opens, PacketMeta& m, Claim& c, const Earlier& earlier) {
        const Flow& f = opens.flows[p.flow];
        const Sides& s = opens.sides[p.flow];
        const InstanceView& charged = s.src ? *s.src : *s.dst;  // the opener, or the one reached
        if (!accounts_.take_opening(charged.account, charged.limits.new_connections_per_second, ctx_.now_ns))
            return Refusal{DropReason::limit_new_connections_per_second, charged.port};
        if (!accounts_.charge_connection(charged.account, charged.limits.connections))
            return Refusal{DropReason::limit_connections, charged.port};
        if (p.masquerade) {
            const auto port = allocate_port(f, s, charged);
            if (!port) {
                accounts_.release_connection(charged.account);
                // An earlier packet of this connection (another worker, or this burst, whose
                // connection finish() makes) may have taken the last port for it: then this
                // one just follows.
                if (auto r = follow_existing(f, s, m)) return *r;
                c.follows = true;
                c.refusal = port.error() == NatRefusal::over_quota
                                ? Outcome(Refusal{DropReason::limit_nat_ports, charged.port})
                                : Outcome(Refusal{DropReason::nat_exhausted});
                return std::nullopt;
            }
            c.external = *port;
            snap_.nat->prefetch_slot(f.key.key.proto, s.dst_ip, f.key.key.port[f.key.src_side ^ 1], *port,
                                     NatPortAllocator::Intent::write);
        }
        if (earlier.count != 0 && table_.reserved() >= table_.capacity()) {
            c.waits = Claim::Waits::room;
            return std::nullopt;
        }
        if (!table_.reserve(1, ctx_.now_ns)) {
            give_back(f, s, c, charged.account, false);
            return Refusal{DropReason::ct_table_full};
        }
        return place(p, opens, c, earlier);
    }

    // A claim that waited (Claim::waits), once the earlier claims of its burst are finished.
    Outcome resume(const PendingOpen& p, const PendingOpens& opens, Claim& c) {
        const Sides& s = opens.sides[p.flow];
        if (c.waits == Claim::Waits::room && !table_.reserve(1, ctx_.now_ns)) {
            give_back(opens.flows[p.flow], s, c, charged_account(s), false);
            return Refusal{DropReason::ct_table_full};
        }
        c.waits = Claim::Waits::nothing;
        return place(p, opens, c, Earlier{});
    }

private:
    // claim()'s insert, the key reserved.
    Outcome place(const PendingOpen& p, const PendingOpens& opens, Claim& c, const Earlier& earlier) {
        const Flow& f = opens.flows[p.flow];
        const Sides& s = opens.sides[p.flow];
        const uint16_t account = charged_account(s);
        if (earlier.count != 0) {
            c.position = table_.insert(f.key.key, key_hash(f));
            if (c.position == -ENOSPC) {
                c.waits = Claim::Waits::slot;
                return std::nullopt;
            }
        } else {
            c.position = insert(f);
        }
        if (c.position < 0) {
            give_back(f, s, c, account, true);
            return Refusal{DropReason::ct_table_full};
        }
        // The key an earlier packet of this burst inserted: its connection is that packet's
        // to make. Packet by packet, the insert found it made and gave everything back at
        // once; so does this one, before the next packets claim (their limits, ports and room
        // must not count it), and it follows that connection in finish().
        for (uint16_t j = 0; (earlier.positions & Earlier::bit(c.position)) != 0 && j < earlier.count; ++j) {
            if (earlier.claims[j].position != c.position) continue;
            give_back(f, s, c, account, true);
            c = Claim{};
            c.follows = true;
            c.refusal = Refusal{DropReason::ct_table_full};  // if the earlier packet's insert fails again
            return std::nullopt;
        }
        table_.prefetch_for_write(c.position);
        return std::nullopt;
    }

public:
    // finish(): the claimed connection comes alive under its entry's lock (or, if another
    // packet made it meanwhile, gives back what claim() took and follows it).
    Outcome finish(const PendingOpen& p, const PendingOpens& opens, PacketMeta& m, Claim c) {
        const Flow& f = opens.flows[p.flow];
        const Sides& s = opens.sides[p.flow];
        if (c.follows) {
            if (auto r = follow_existing(f, s, m)) return *r;
            return c.refusal;
        }
        if (c.position < 0) return std::nullopt;  // claim() followed another worker's connection
        const uint16_t account = charged_account(s);
        // Twice at most: an insert that returned a key just being removed is done again.
        for (int attempt = 0; attempt < 2; ++attempt) {
            if (attempt != 0 && (c.position = insert(f)) < 0) break;
            CtEntry& e = table_.entry(c.position);
            e.lock_entry();
            Outcome r = std::nullopt;
            if (e.retired()) {
                e.unlock_entry();
                continue;
            }
            if (e.dead()) {
                ConnTable::hold_reserved(e);
                table_.record_key(e, c.position, f.key.key);
                start(e, f, p.fresh, account);
                store_nat_binding(e, NatBinding{});
                if (c.external >= 0) bind(e, c.position, f, s, static_cast<uint16_t>(c.external), m);
            } else {
                give_back(f, s, c, account, true);  // an earlier packet (or worker) created it
                r = existing(e, f, s, m);
            }
            table_.unlock(c.position);
            return r;
        }
        give_back(f, s, c, account, true);
        return Refusal{DropReason::ct_table_full};
    }

private:
    std::optional<DropReason> decide_new(const Flow& f, const Sides& s, ConnState& fresh,
                                         PolicyDecision& d) {
        const CtVerdict v = ct_new(fresh, f.info, snap_.ct_timeouts, ctx_.now_ns);
        if (v != CtVerdict::accept) return reason_of(v);
        d = evaluate_new_connection(snap_, s.src, s.dst, s.src_ip, s.dst_ip, f.key.key.proto, f.rule_key, s.site);
        if (!d.allowed) return d.reason;
        return std::nullopt;
    }

    // Protocol state and rule generation of a new incarnation; the NAT binding is the
    // caller's (a reopened connection keeps its external port).
    void start(CtEntry& e, const Flow& f, const ConnState& fresh, uint16_t account) {
        e.state = fresh;
        e.orig_side = f.key.src_side;
        e.account = account;
        e.policy_generation = static_cast<uint32_t>(snap_.generation);
        bump(ctx_.counters.ct_created);
    }

    // The external port of a new masqueraded connection, taken before the connection exists
    // (see the ownership rule in dp/nat.hpp).
    std::expected<uint16_t, NatRefusal> allocate_port(const Flow& f, const Sides& s, const InstanceView& charged) {
        const uint16_t inside_port = f.key.key.port[f.key.src_side];
        const uint16_t remote_port = f.key.key.port[f.key.src_side ^ 1];
        const uint64_t seed = ctx_.now_ns ^ (uint64_t{s.src_ip.value} << 16 | inside_port) * 0x9e3779b97f4a7c15ull;
        return snap_.nat->allocate(f.key.key.proto, s.dst_ip, remote_port, inside_port, seed,
                                   {charged.account, charged.limits.nat_ports});
    }

    void release_port(const Flow& f, const Sides& s, std::optional<uint16_t> port, uint16_t account) {
        if (port)
            snap_.nat->release(f.key.key.proto, s.dst_ip, f.key.key.port[f.key.src_side ^ 1], *port, account);
    }

    // The connection a first packet opens is charged to its opener, or, from outside, to the
    // instance it reaches.
    static uint16_t charged_account(const Sides& s) { return (s.src ? *s.src : *s.dst).account; }
    uint32_t key_hash(const Flow& f) const { return f.hashed ? f.key_hash : table_.hash_of(f.key.key); }

    int32_t insert(const Flow& f) {
        return table_.insert_evicting(f.key.key, key_hash(f), ctx_.now_ns);
    }

    // What a claim took, given back: the reserved key (if `reserved`), the NAT port, the charge.
    void give_back(const Flow& f, const Sides& s, const Claim& c, uint16_t account, bool reserved) {
        if (reserved) table_.unreserve(1);
        release_port(f, s, c.external >= 0 ? std::optional<uint16_t>(c.external) : std::nullopt, account);
        accounts_.release_connection(account);
    }

    // The connection as another packet created it, if it exists by now.
    std::optional<Outcome> follow_existing(const Flow& f, const Sides& s, PacketMeta& m) {
        const int32_t pos = table_.lookup(f.key.key);
        if (pos < 0) return std::nullopt;
        CtEntry& e = table_.entry(pos);
        e.lock_entry();
        std::optional<Outcome> r;
        if (!e.dead()) r = existing(e, f, s, m);
        table_.unlock(pos);
        return r;
    }

    // Entry lock held, the entry just started. Stores the binding and binds the external port
    // to the entry, so that inbound packets find it (dp/nat.hpp).
    void bind(CtEntry& e, int32_t pos, const Flow& f, const Sides& s, uint16_t external, PacketMeta& m) {
        const Ipv4Addr ext_addr = snap_.uplink->address;
        store_nat_binding(e, NatBinding{ext_addr, external, NatRole::primary});
        snap_.nat->bind(f.key.key.proto, s.dst_ip, f.key.key.port[f.key.src_side ^ 1], external, pos);
        m.nat = NatAction::snat;
        m.nat_addr = ext_addr.value;
        m.nat_port = external;
    }

    // A SYN on TIME_WAIT (or a packet on an expired entry) opens a new connection in the same
    // entry: charged like any new connection. A translated connection stays with its account,
    // which its NAT port is charged to.
    Outcome recharge(CtEntry& e, const Sides& s, const NatBinding& binding) {
        const InstanceView& charged = s.src ? *s.src : *s.dst;
        if (!accounts_.take_opening(charged.account, charged.limits.new_connections_per_second, ctx_.now_ns))
            return Refusal{DropReason::limit_new_connections_per_second, charged.port};
        if (charged.account == e.account || binding.translated()) return std::nullopt;
        if (!accounts_.charge_connection(charged.account, charged.limits.connections))
            return Refusal{DropReason::limit_connections, charged.port};
        if (e.account != kNoAccount) accounts_.release_connection(e.account);
        e.account = charged.account;
        return std::nullopt;
    }

    // Entry lock held.
    Outcome existing(CtEntry& e, const Flow& f, const Sides& s, PacketMeta& m) {
        const Direction dir = e.direction_of(f.key.src_side);
        const NatBinding binding = load_nat_binding(e);
        // A masqueraded connection is reached from outside only through its external
        // endpoint (nat_in translated the packet); its inside tuple is not an entrance.
        if (binding.translated() && dir == Direction::reply && !m.nat_translated_in)
            return Refusal{DropReason::nat_unsolicited};
        const uint32_t generation = static_cast<uint32_t>(snap_.generation);
        if (e.policy_generation != generation && !ct_expired(e.state, ctx_.now_ns)) {
            // The rules changed since this connection was allowed: check its opening again.
            const bool orig = dir == Direction::original;
            const PolicyDecision d =
                orig ? evaluate_new_connection(snap_, s.src, s.dst, s.src_ip, s.dst_ip, f.key.key.proto, f.rule_key,
                                               s.site)
                     : evaluate_new_connection(snap_, s.dst, s.src, s.dst_ip, s.src_ip, f.key.key.proto,
                                               f.orig_rule_key, s.reversed());
            // A connection whose translation the new configuration would change (its network
            // became, or stopped being, `nat`) cannot continue either.
            if (!d.allowed || d.masquerade != binding.translated()) {
                e.state.expires_s = 1;  // long expired: the sweeper removes it
                return Refusal{DropReason::sg_revoked};
            }
            e.policy_generation = generation;
        }
        const CtVerdict v = ct_update(e.state, dir, f.info, snap_.ct_timeouts, ctx_.now_ns);
        if (v == CtVerdict::new_flow) {
            // An echo request that Linux tracks as a connection of its own (the other host
            // pings with the same identifier, or another code): the rules decide as for any
            // first packet, then it shares the entry (no new entry: nothing to charge).
            const PolicyDecision d =
                evaluate_new_connection(snap_, s.src, s.dst, s.src_ip, s.dst_ip, f.key.key.proto, f.rule_key);
            if (!d.allowed) return Refusal{d.reason};
            if (d.masquerade != binding.translated()) return Refusal{DropReason::nat_unsolicited};
            ct_add_flow(e.state, dir, f.info, snap_.ct_timeouts, ctx_.now_ns);
        } else if (!ct_passes(v)) {
            if (v != CtVerdict::reopen && v != CtVerdict::expired) return Refusal{reason_of(v)};
            // No live connection: this packet may open a new one in its own direction, reusing
            // the entry (the key is the same) and its binding. A reopening SYN ends the old
            // connection even when the rules refuse the new one, as in Linux.
            ConnState fresh{};
            PolicyDecision d;
            if (auto reason = decide_new(f, s, fresh, d)) {
                if (v == CtVerdict::reopen) e.state.expires_s = 1;  // long expired: the sweep removes it
                return Refusal{*reason};
            }
            if (d.masquerade != binding.translated()) return Refusal{DropReason::nat_unsolicited};
            if (auto r = recharge(e, s, binding)) return r;
            start(e, f, fresh, e.account);
        }
        if (binding.translated() && e.direction_of(f.key.src_side) == Direction::original) {
            m.nat = NatAction::snat;
            m.nat_addr = binding.addr.value;
            m.nat_port = binding.port;
        }
        return std::nullopt;
    }

    const Snapshot& snap_;
    WorkerContext& ctx_;
    ConnTable& table_;
    InstanceAccounts& accounts_;
};

// An ICMP error passes if the datagram it quotes belongs to a tracked connection. The quoted
// datagram travelled the other way: from the error's destination to the error's source.
// An error about a masqueraded connection leaves with the connection's external endpoint
// (nat_out rewrites it) and comes in only through it (nat_in translated it).
// The quote must hold the datagram's IP header and at least 8 bytes after it (RFC 792): the
// ports or echo identifier. Linux takes 4 bytes of TCP or UDP; calyx keeps RFC 792's minimum
// (doc/architecture.md). A later fragment has no transport header to match.
std::optional<DropReason> check_icmp_error(const Frame& f, PacketMeta& m, const Sides& s,
                                           const Snapshot& snap, uint64_t now_ns) {
    const size_t inner_at = m.l4_offset + sizeof(IcmpHdr);
    const auto* inner = header_at<Ipv4Hdr>(f.data(), f.len, inner_at);
    if (!inner || inner->version() != 4 || inner->header_length() < sizeof(Ipv4Hdr) ||
        f.len - inner_at < inner->header_length() + 8 || !inner->is_first_fragment())
        return DropReason::ct_icmp_error_unmatched;
    const uint8_t* inner_l4 = f.data() + inner_at + inner->header_length();
    uint16_t sport = 0, dport = 0;
    l4_ports(inner->protocol, inner_l4, 8, sport, dport);
    const CtPacketKey k = make_ct_key(inner->protocol,
                                      {s.dst_zone, Ipv4Addr::from_be(inner->src), sport},
                                      {s.src_zone, Ipv4Addr::from_be(inner->dst), dport});
    const int32_t pos = snap.conntrack->lookup(k.key);
    if (pos < 0) return DropReason::ct_icmp_error_unmatched;
    const CtEntry& e = snap.conntrack->entry(pos);
    if (e.dead() || ct_expired(e.state, now_ns)) return DropReason::ct_icmp_error_unmatched;
    // An error goes back to whoever sent the datagram it quotes, never to a third party.
    if (Ipv4Addr::from_be(inner->src) != s.dst_ip) return DropReason::ct_icmp_error_unmatched;
    // A quoted echo message must be one of the entry's echo flows (type and code included).
    if (inner->protocol == ipproto::kIcmp) {
        PacketInfo quoted;
        quoted.proto = ipproto::kIcmp;
        quoted.icmp_type = inner_l4[0];
        quoted.icmp_code = inner_l4[1];
        quoted.icmp_id = static_cast<uint16_t>(inner_l4[4] << 8 | inner_l4[5]);
        if (!ct_icmp_quote_matches(e.state, e.direction_of(k.src_side), quoted)) return DropReason::ct_icmp_error_unmatched;
    }
    const NatBinding binding = load_nat_binding(e);
    // Errors are no way around the network kinds, even for a connection that a reload has
    // not re-checked yet (its own next packet does): private never crosses the uplink, and
    // across it a nat network's connections are translated, a public one's are not.
    if (const InstanceView* inside = s.src ? s.src : s.dst; inside && (s.src_outside() || s.dst_outside())) {
        const NetworkKind kind = snap.networks[inside->network].kind;
        if (kind == NetworkKind::private_) return DropReason::private_isolated;
        if ((kind == NetworkKind::nat) != (binding.role == NatRole::primary)) return DropReason::sg_revoked;
    }
    if (binding.role == NatRole::primary) {
        if (s.src_outside()) {
            if (!m.nat_translated_in) return DropReason::nat_unsolicited;
        } else if (s.dst_outside()) {  // the instance's error about a datagram that came in through the NAT
            m.nat = NatAction::icmp_error_out;
            m.nat_addr = binding.addr.value;
            m.nat_port = binding.port;
        }
    }
    return std::nullopt;
}

// A first fragment that passed: its later fragments follow it (and its translation).
void remember_first_fragment(const Ipv4Hdr* ip, const PacketMeta& m, const Sides& s, const Snapshot& snap,
                             WorkerContext& ctx) {
    const bool from_uplink = snap.uplink && m.in_port == snap.uplink->port;
    ctx.fragments->remember({s.src_ip.value, s.dst_ip.value, ip->id.host(), s.src_zone, ip->protocol},
                            ctx.fragments->source_of(m.in_port, s.src_ip.value, from_uplink), ctx.now_ns,
                            ctx.now_ns + uint64_t{snap.fragment_timeout_s} * 1'000'000'000,
                            m.nat == NatAction::snat ? m.nat_addr : 0, static_cast<uint32_t>(snap.generation));
}

// Every packet that passed asks; only first fragments (more fragments follow) are remembered,
// so the common case stays inline.
[[gnu::always_inline]] inline void remember_fragment(const Frame& fr, const PacketMeta& m, const Sides& s,
                                                     const Snapshot& snap, WorkerContext& ctx) {
    const auto* ip = header_at<Ipv4Hdr>(fr.data(), fr.len, m.l3_offset);
    if (ctx.fragments && (ip->frag.host() & Ipv4Hdr::kMoreFragments)) remember_first_fragment(ip, m, s, snap, ctx);
}

}  // namespace

PolicyDecision evaluate_new_connection(const Snapshot& snap, const InstanceView* from,
                                       const InstanceView* to, Ipv4Addr from_ip, Ipv4Addr to_ip,
                                       uint8_t protocol, uint16_t rule_key, SiteEnds site) noexcept {
    PolicyDecision d;
    const auto kind = [&](const InstanceView* inst) { return snap.networks[inst->network].kind; };
    const bool from_outside = !from && !site.from;
    const bool to_outside = !to && !site.to;
    // The seed's network kinds, before any security group: private has no outside at all, and
    // nothing from outside opens a connection into nat. Another host's instance is inside.
    if ((from && to_outside && kind(from) == NetworkKind::private_) ||
        (from_outside && to && kind(to) == NetworkKind::private_)) {
        d.reason = DropReason::private_isolated;
        return d;
    }
    if (from_outside && to && kind(to) == NetworkKind::nat) {
        d.reason = DropReason::nat_unsolicited;
        return d;
    }
    d.masquerade = from && to_outside && kind(from) == NetworkKind::nat;
    if (d.masquerade && protocol != ipproto::kTcp && protocol != ipproto::kUdp &&
        !(protocol == ipproto::kIcmp && (rule_key >> 8) == icmp::kEchoRequest)) {
        d.reason = DropReason::nat_unsupported;
        return d;
    }
    if (from) {
        d.egress_rule = snap.policies[index_of(snap, from)]->egress.match(protocol, rule_key, to_ip);
        if (d.egress_rule == kNoRule) {
            d.reason = DropReason::sg_no_egress_rule;
            return d;
        }
    }
    if (to) {
        d.ingress_rule = snap.policies[index_of(snap, to)]->ingress.match(protocol, rule_key, from_ip);
        if (d.ingress_rule == kNoRule) {
            d.reason = DropReason::sg_no_ingress_rule;
            return d;
        }
    }
    d.allowed = true;
    return d;
}

void policy_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx, PendingOpens& opens) noexcept {
    Flow* const flows = opens.flows;
    Sides* const sides = opens.sides;
    const CtKey* keys[kBurstSize];
    int32_t positions[kBurstSize];
    uint16_t which[kBurstSize];
    uint16_t looked_up[kBurstSize];  // the flows whose key is looked up (keys[])
    uint16_t n = 0, n_lookup = 0;

    const uint16_t uplink_port = snap.uplink ? snap.uplink->port : kNoPort;
    for (uint16_t i = 0; i < batch.count; ++i) {
        PacketMeta& m = batch.meta[i];
        if (m.verdict != Verdict::pending || !m.is_ipv4) continue;
        const NextHopKind kind = NextHop::kind(m.next_hop);
        if (kind != NextHopKind::instance && kind != NextHopKind::uplink && kind != NextHopKind::site) continue;
        const bool from_uplink = m.in_port == uplink_port;
        if (kind != NextHopKind::instance && from_uplink) continue;  // forward drops transit
        const Frame& fr = batch.frames[i];
        const auto* ip = header_at<Ipv4Hdr>(fr.data(), fr.len, m.l3_offset);
        const InstanceView* src = snap.instance_on_port(m.in_port);
        if (!src && !from_uplink) {  // a port this snapshot does not name: nothing passes
            batch.drop(i, DropReason::no_route);
            continue;
        }
        const InstanceView* dst =
            kind == NextHopKind::instance ? snap.instance_on_port(static_cast<uint16_t>(NextHop::index(m.next_hop))) : nullptr;
        if (kind == NextHopKind::instance && (!dst || dst == src)) continue;  // forward drops these (no_route, hairpin)
        // Built in its slot (kept only when the packet gets to the lookup): a copy of a
        // Sides assembled on the stack reloaded its narrow stores with wide loads.
        Sides& s = *::new (&sides[n]) Sides{src,
                dst,
                src ? src->zone : uint16_t{0},
                dst ? dst->zone : uint16_t{0},
                Ipv4Addr::from_be(ip->src),
                Ipv4Addr::from_be(ip->dst),
                {from_uplink && m.from_site, kind == NextHopKind::site}};

        if (!ip->is_first_fragment()) {
            const FragmentKey fk{s.src_ip.value, s.dst_ip.value, ip->id.host(), s.src_zone, ip->protocol};
            uint32_t nat_addr = 0;
            // A datagram whose first fragment passed under other rules (a reload since)
            // does not pass: its connection is re-checked by its next first packet.
            if (!ctx.fragments ||
                !ctx.fragments->allowed(fk, ctx.now_ns, &nat_addr, static_cast<uint32_t>(snap.generation))) {
                batch.drop(i, DropReason::fragment_unmatched);
            } else if (nat_addr != 0) {
                m.nat = NatAction::snat_fragment;
                m.nat_addr = nat_addr;
            }
            continue;
        }
        const uint8_t* l4 = fr.data() + m.l4_offset;
        const size_t l4_len = fr.len - m.l4_offset;
        if (ip->protocol == ipproto::kIcmp && (l4[0] == icmp::kRedirect || l4[0] == icmp::kSourceQuench)) {
            // Linux passes them as related to the connection they quote. calyx does not: an
            // instance's first hop is always calyx, so no instance has a better route to
            // offer, and RFC 6633 retired source quench (doc/architecture.md).
            batch.drop(i, DropReason::icmp_redirect_or_quench);
            continue;
        }
        if (ip->protocol == ipproto::kIcmp && is_icmp_error(l4[0])) {
            if (auto r = check_icmp_error(fr, m, s, snap, ctx.now_ns)) batch.drop(i, *r);
            continue;
        }
        Flow& f = flows[n];
        // Constructed in place (guaranteed elision): assigning the returned structs copied them
        // with wide loads right after the callee's narrow stores, a store-forwarding stall each.
        ::new (&f.info) PacketInfo(packet_info_from(*ip, l4, l4_len));
        uint16_t sport = 0, dport = 0;
        l4_ports(ip->protocol, l4, l4_len, sport, dport);
        ::new (&f.key) CtPacketKey(make_ct_key(ip->protocol, {s.src_zone, s.src_ip, sport}, {s.dst_zone, s.dst_ip, dport}));
        f.rule_key = rule_key(ip->protocol, dport, f.info.icmp_type, f.info.icmp_code);
        // A reply's connection was opened the other way: to its source port, or by an echo
        // request for an echo reply.
        f.orig_rule_key = ip->protocol == ipproto::kIcmp ? rule_key(ip->protocol, 0, icmp::kEchoRequest, 0)
                                                         : rule_key(ip->protocol, sport, 0, 0);
        // A reply nat_in translated: its connection is known, if the packet's key is that
        // connection's (the instance may have moved to another network since, for one).
        f.hashed = false;
        if (m.nat_connection != 0 &&
            snap.conntrack->key_record(static_cast<int32_t>(m.nat_connection - 1)) == CtKeyRecord::of(f.key.key)) {
            positions[n] = static_cast<int32_t>(m.nat_connection - 1);
        } else {
            looked_up[n_lookup] = n;
            keys[n_lookup++] = &f.key.key;
        }
        which[n++] = i;
    }
    if (n == 0) return;
    uint32_t hashes[kBurstSize];
    int32_t found[kBurstSize];
    if (n_lookup != 0) snap.conntrack->lookup_bulk(keys, n_lookup, found, hashes);
    for (uint16_t l = 0; l < n_lookup; ++l) {
        Flow& f = flows[looked_up[l]];
        f.key_hash = hashes[l];  // a first packet's insert needs no second hash
        f.hashed = true;
        positions[looked_up[l]] = found[l];
    }
    // With a large table every entry is a cache miss: start them all before the first is read.
    for (uint16_t k = 0; k < n; ++k)
        if (positions[k] >= 0) snap.conntrack->prefetch(positions[k]);
    PolicyRun run(snap, ctx);
    for (uint16_t k = 0; k < n; ++k) {
        const uint16_t i = which[k];
        PacketMeta& m = batch.meta[i];
        const uint16_t pending = opens.count;
        if (auto r = run.track(i, k, positions[k], m, opens)) {
            refuse(batch, i, *r);
            continue;
        }
        if (opens.count == pending) remember_fragment(batch.frames[i], m, sides[k], snap, ctx);
    }
}

void commit_stage(Batch& batch, const Snapshot& snap, WorkerContext& ctx, PendingOpens& opens) noexcept {
    if (opens.count == 0) return;
    PolicyRun run(snap, ctx);
    PolicyRun::Claim claims[kBurstSize];  // claim() sets each before finish() reads it
    uint16_t claimed[kBurstSize];
    uint16_t n = 0;
    uint64_t positions = 0;  // PolicyRun::Earlier::positions of claims[0..n)
    const auto finish_claimed = [&] {
        for (uint16_t j = 0; j < n; ++j) {
            const PendingOpen& p = opens.items[claimed[j]];
            PacketMeta& m = batch.meta[p.packet];
            if (auto r = run.finish(p, opens, m, claims[j])) {
                refuse(batch, p.packet, *r);
                continue;
            }
            remember_fragment(batch.frames[p.packet], m, opens.sides[p.flow], snap, ctx);
        }
        n = 0;
        positions = 0;
    };
    for (uint16_t k = 0; k < opens.count; ++k) {
        const PendingOpen& p = opens.items[k];
        PacketMeta& m = batch.meta[p.packet];
        // Forward dropped it, or answered it with an ICMP error: no connection.
        if (m.verdict != Verdict::forward) continue;
        PolicyRun::Claim c{};
        auto r = run.claim(p, opens, m, c, {claims, n, positions});
        if (!r && c.waits != PolicyRun::Claim::Waits::nothing) {
            finish_claimed();  // an eviction is due: the earlier connections come alive first
            r = run.resume(p, opens, c);
        }
        if (r) {
            refuse(batch, p.packet, *r);
            continue;
        }
        if (c.position >= 0) positions |= PolicyRun::Earlier::bit(c.position);
        claims[n] = c;
        claimed[n++] = k;
    }
    finish_claimed();
}

}  // namespace calyx::dp
