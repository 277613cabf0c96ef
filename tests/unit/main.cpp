// Unit tests run on plain byte buffers. Only the DPDK tables (rte_fib) need EAL memory, so
// EAL starts once here with no hugepages, no devices and no shared files.
#include <gtest/gtest.h>
#include <rte_eal.h>

int main(int argc, char** argv) {
    testing::InitGoogleTest(&argc, argv);
    const char* eal_argv[] = {"unit_tests", "--no-huge", "-m", "256", "--no-pci", "--no-shconf",
                              "--no-telemetry", "-l", "0", "--log-level", "error"};
    if (rte_eal_init(static_cast<int>(std::size(eal_argv)), const_cast<char**>(eal_argv)) < 0) {
        fprintf(stderr, "unit_tests: EAL initialisation failed\n");
        return 1;
    }
    const int rc = RUN_ALL_TESTS();
    rte_eal_cleanup();
    return rc;
}
