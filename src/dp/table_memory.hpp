// Memory for a large table the data path reads at random, a cache miss per packet (the NAT
// allocator's connection map, tens of MB). Mapped on its own and advised for transparent huge
// pages (2 MB) before its first touch: with 4 KB pages a random access misses the TLB as well,
// and a page walk under nested paging (a VM) costs more than the miss itself; a prefetch of
// such a slot waited for its walk (perf annotate, nat-udp). Where the kernel gives no huge
// pages (transparent_hugepage "never") it is ordinary memory. Zeroed and faulted in at
// creation, so the data path never takes a page fault on it. No EAL: tests build tables too.
#pragma once

#include <sys/mman.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

namespace calyx::dp {

template <typename T>
struct TableMemoryRelease {
    size_t bytes = 0;
    void operator()(T* p) const noexcept {
        std::destroy_n(p, bytes / sizeof(T));
        ::munmap(p, bytes);
    }
};

template <typename T>
using TableArray = std::unique_ptr<T[], TableMemoryRelease<T>>;

// `n` value-initialised elements (zero for integers and atomics); std::bad_alloc if the
// mapping fails (control plane, at start or reload).
template <typename T>
TableArray<T> make_table_array(size_t n) {
    constexpr size_t kHugePage = size_t{2} << 20;
    constexpr size_t kPage = 4096;
    static_assert(alignof(T) <= kPage);
    // Not rounded up to huge pages (their room would count against the memory per connection):
    // a tail shorter than one stays in small pages.
    const size_t bytes = std::max<size_t>((n * sizeof(T) + kPage - 1) / kPage * kPage, kPage);
    // Mapped with a huge page's room to spare, then trimmed to an aligned start: a huge page
    // backs only an aligned 2 MB range.
    const size_t mapped = bytes + kHugePage;
    void* raw = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) throw std::bad_alloc();
    auto* base = static_cast<char*>(raw);
    const size_t lead = (kHugePage - reinterpret_cast<uintptr_t>(base) % kHugePage) % kHugePage;
    if (lead != 0) ::munmap(base, lead);
    if (kHugePage - lead != 0) ::munmap(base + lead + bytes, kHugePage - lead);
    char* start = base + lead;
    ::madvise(start, bytes, MADV_HUGEPAGE);  // a hint: refused, the table works the same
    T* p = reinterpret_cast<T*>(start);
    std::uninitialized_value_construct_n(p, n);
    return TableArray<T>(p, TableMemoryRelease<T>{bytes});
}

}  // namespace calyx::dp
