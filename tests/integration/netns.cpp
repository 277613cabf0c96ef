#include "netns.hpp"

#include <cstdio>

#include <fmt/format.h>

namespace calyx::test {

CommandResult sh(const std::string& cmd) {
    CommandResult r;
    FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
    if (p == nullptr) return r;
    char buf[512];
    while (size_t n = std::fread(buf, 1, sizeof(buf), p)) r.output.append(buf, n);
    r.status = ::pclose(p);
    return r;
}

::testing::AssertionResult ip(const std::string& args) {
    const auto r = sh(fmt::format("{} {}", kIpTool, args));
    if (r.status == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "ip " << args << ": " << r.output;
}

Namespace::Namespace(std::string name) : name_(std::move(name)) {
    sh(fmt::format("{} netns del {}", kIpTool, name_));  // a leftover of a killed run
    created_ = test::ip("netns add " + name_);
}

Namespace::~Namespace() {
    if (created_) sh(fmt::format("{} netns del {}", kIpTool, name_));
}

CommandResult Namespace::exec(const std::string& cmd) const {
    return sh(fmt::format("{} netns exec {} {}", kIpTool, name_, cmd));
}

::testing::AssertionResult Namespace::ip(const std::string& args) const {
    return test::ip(fmt::format("-n {} {}", name_, args));
}

}  // namespace calyx::test
