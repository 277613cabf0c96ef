// One callable from several lambdas, for std::visit with one lambda per alternative:
//   std::visit(Overloaded{[](const TapPort& t) { ... }, [](const PciPort& p) { ... }}, port);
#pragma once

namespace calyx {

template <typename... Fs>
struct Overloaded : Fs... {
    using Fs::operator()...;
};
// C++20 deduces this by itself; clang before 17 (the fuzzing build's clang 16) needs the guide.
template <typename... Fs>
Overloaded(Fs...) -> Overloaded<Fs...>;

}  // namespace calyx
