// Shell commands and network namespaces for the tests that give calyx an uplink: the test
// creates a namespace, moves calyx's tap interface into it and plays the Internet there. Only
// addresses inside that namespace are ever used; nothing reaches the machine's own network.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace calyx::test {

inline constexpr const char* kIpTool = "/usr/sbin/ip";

struct CommandResult {
    int status = -1;  // as from pclose(): 0 is success
    std::string output;  // stdout and stderr
};
// Runs `cmd` with /bin/sh and waits for it.
CommandResult sh(const std::string& cmd);
// `ip ARGS` must succeed; a failure carries its output.
::testing::AssertionResult ip(const std::string& args);

// A network namespace, deleted again (with whatever was moved into it) by the destructor.
class Namespace {
public:
    explicit Namespace(std::string name);
    ~Namespace();
    Namespace(const Namespace&) = delete;
    Namespace& operator=(const Namespace&) = delete;
    bool created() const { return created_; }
    const std::string& name() const { return name_; }
    // `ip netns exec NAME CMD`.
    CommandResult exec(const std::string& cmd) const;
    // `ip -n NAME ARGS` must succeed.
    ::testing::AssertionResult ip(const std::string& args) const;

private:
    std::string name_;
    bool created_ = false;
};

}  // namespace calyx::test
