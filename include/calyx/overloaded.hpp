// One callable from several lambdas, for std::visit with one lambda per alternative:
//   std::visit(Overloaded{[](const TapPort& t) { ... }, [](const PciPort& p) { ... }}, port);
#pragma once

namespace calyx {

template <typename... Fs>
struct Overloaded : Fs... {
    using Fs::operator()...;
};

}  // namespace calyx
