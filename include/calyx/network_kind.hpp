// The three kinds of instance network of the cloud's model. Shared vocabulary: the
// configuration names a network's kind, the snapshot builder copies it into the data plane's
// NetworkView, and the stages decide by it.
#pragma once

#include <string_view>

namespace calyx {

// public:  reachable from outside, instance addresses routed as they are;
// nat:     masqueraded to the uplink address on the way out, nothing unsolicited from outside;
// private: the site's networks only, never outside.
enum class NetworkKind { public_, nat, private_ };

constexpr std::string_view to_string(NetworkKind kind) {
    switch (kind) {
        case NetworkKind::public_:
            return "public";
        case NetworkKind::nat:
            return "nat";
        case NetworkKind::private_:
            return "private";
    }
    return "?";
}

}  // namespace calyx
