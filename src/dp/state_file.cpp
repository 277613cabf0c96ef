#include "dp/state_file.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace calyx::dp {
namespace {

constexpr size_t kHeaderBytes = 4096;
constexpr size_t kNamesBytes = 128 * 1024;  // per copy: 1024 instances and networks with long names

// FNV-1a, 32 bits: a torn or garbage block never passes.
uint32_t fnv1a(const void* data, size_t n, uint32_t h = 2166136261u) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 16777619u;
    return h;
}

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

std::string errno_text() { return std::strerror(errno); }

}  // namespace

struct StateFile::Header {
    char magic[8];
    uint32_t layout_version;
    uint32_t header_bytes;
    uint32_t entry_bytes;
    uint32_t key_bytes;
    uint64_t slots;
    uint64_t names_offset;
    uint64_t names_bytes;  // per copy
    uint64_t entries_offset;
    uint64_t keys_offset;
    uint64_t file_bytes;
    uint64_t ct_secret;
    uint64_t nat_secret;
    uint32_t nat_partitions;
    uint32_t spare;
    uint64_t tsc_hz;
    uint64_t generation;
    char boot_id[40];
    struct NamesCopy {
        uint64_t sequence;  // 0: never written
        uint32_t length;
        uint32_t check;     // fnv1a over sequence and the text
    } names[2];
    // Since the change map (after version 1's first files, which have zeros here).
    uint64_t changes_offset;  // 0: no change map
    uint64_t changes_words;
};


StateFile::Header& StateFile::header() const {
    static_assert(sizeof(Header) <= kHeaderBytes);
    return *reinterpret_cast<Header*>(map_);
}

std::string StateFile::boot_id() {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string id;
    std::getline(in, id);
    return id;
}

std::string StateFile::temporary_path(const std::string& path) {
    return fmt::format("{}.new-{}", path, ::getpid());
}

size_t StateFile::remove_abandoned_temporaries(const std::string& path) {
    namespace fs = std::filesystem;
    const fs::path p(path);
    const std::string prefix = p.filename().string() + ".new";
    std::error_code ec;
    size_t removed = 0;
    for (const auto& f : fs::directory_iterator(p.parent_path().empty() ? fs::path(".") : p.parent_path(), ec)) {
        const std::string name = f.path().filename().string();
        if (name.compare(0, prefix.size(), prefix) != 0) continue;
        const std::string rest = name.substr(prefix.size());
        if (rest.empty()) {  // "<path>.new": a calyx before 2026-12-06 left it
            if (fs::remove(f.path(), ec)) ++removed;
            continue;
        }
        // "-<pid>": its process holds its lock for as long as it has it (pids are reused, locks
        // end with their process).
        if (rest[0] != '-' || rest.size() < 2 || rest.find_first_not_of("0123456789", 1) != std::string::npos)
            continue;
        const int fd = ::open(f.path().c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        if (::flock(fd, LOCK_EX | LOCK_NB) == 0 && fs::remove(f.path(), ec)) ++removed;
        ::close(fd);
    }
    return removed;
}

std::expected<std::unique_ptr<StateFile>, std::string> StateFile::create(const std::string& path, uint64_t slots,
                                                                         const StateParams& params) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    ::unlink(path.c_str());  // a leftover of an interrupted restore
    std::unique_ptr<StateFile> f(new StateFile());
    f->path_ = path;
    // Locked for as long as this process has it (remove_abandoned_temporaries), and under its
    // name only once locked: created under a staging name, locked, then renamed.
    const std::string staging = path + ".creating";
    ::unlink(staging.c_str());
    f->fd_ = ::open(staging.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (f->fd_ < 0) return std::unexpected(fmt::format("state file {}: cannot create it: {}", path, errno_text()));
    if (::flock(f->fd_, LOCK_EX | LOCK_NB) != 0 || ::rename(staging.c_str(), path.c_str()) != 0) {
        const std::string why = errno_text();
        ::unlink(staging.c_str());
        return std::unexpected(fmt::format("state file {}: cannot create it: {}", path, why));
    }
    // hugetlbfs maps whole huge pages: its block size is the page size.
    struct statfs fs{};
    const bool known = ::fstatfs(f->fd_, &fs) == 0;
    const size_t page = known && fs.f_bsize > 0 ? static_cast<size_t>(fs.f_bsize) : 4096;
    f->in_memory_ = known && (fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC || fs.f_type == HUGETLBFS_MAGIC);
    const size_t names_offset = kHeaderBytes;
    const size_t entries_offset = round_up(names_offset + 2 * kNamesBytes, 4096);
    const size_t keys_offset = round_up(entries_offset + slots * sizeof(CtEntry), 4096);
    const size_t changes_offset = round_up(keys_offset + slots * sizeof(CtKeyRecord), 4096);
    const size_t changes_words = (slots + 63) / 64;
    const size_t bytes = round_up(changes_offset + changes_words * sizeof(uint64_t), page);
    if (::ftruncate(f->fd_, static_cast<off_t>(bytes)) != 0)
        return std::unexpected(fmt::format("state file {}: cannot size it to {} bytes: {}", path, bytes, errno_text()));
    void* m = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd_, 0);
    if (m == MAP_FAILED)
        return std::unexpected(fmt::format("state file {}: cannot map {} bytes: {}", path, bytes, errno_text()));
    f->map_ = static_cast<uint8_t*>(m);
    f->map_bytes_ = bytes;
    f->slots_ = slots;
    Header& h = f->header();
    std::memset(&h, 0, sizeof(h));
    h.layout_version = kStateLayoutVersion;
    h.header_bytes = kHeaderBytes;
    h.entry_bytes = sizeof(CtEntry);
    h.key_bytes = sizeof(CtKeyRecord);
    h.slots = slots;
    h.names_offset = names_offset;
    h.names_bytes = kNamesBytes;
    h.entries_offset = entries_offset;
    h.keys_offset = keys_offset;
    h.file_bytes = bytes;
    h.changes_offset = changes_offset;
    h.changes_words = changes_words;
    h.ct_secret = params.ct_secret;
    h.nat_secret = params.nat_secret;
    h.nat_partitions = params.nat_partitions;
    h.tsc_hz = params.tsc_hz;
    const std::string boot = boot_id();
    std::memcpy(h.boot_id, boot.data(), std::min(boot.size(), sizeof(h.boot_id) - 1));
    f->entries_ = reinterpret_cast<CtEntry*>(f->map_ + entries_offset);
    f->keys_ = reinterpret_cast<CtKeyRecord*>(f->map_ + keys_offset);
    f->changes_ = reinterpret_cast<uint64_t*>(f->map_ + changes_offset);
    // The magic last: a file whose creation was interrupted is not a state file.
    std::atomic_thread_fence(std::memory_order_release);
    std::memcpy(h.magic, kStateMagic, sizeof(kStateMagic));
    return f;
}

std::expected<std::unique_ptr<StateFile>, std::string> StateFile::open(const std::string& path, Access access) {
    std::unique_ptr<StateFile> f(new StateFile());
    f->path_ = path;
    const bool live = access == Access::live;
    f->fd_ = ::open(path.c_str(), (live ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (f->fd_ < 0) {
        if (errno == ENOENT) return nullptr;
        return std::unexpected(fmt::format("state file {}: cannot open it: {}", path, errno_text()));
    }
    struct stat st{};
    if (::fstat(f->fd_, &st) != 0)
        return std::unexpected(fmt::format("state file {}: cannot stat it: {}", path, errno_text()));
    const auto size = static_cast<size_t>(st.st_size);
    if (size < kHeaderBytes)
        return std::unexpected(fmt::format("state file {}: {} bytes, shorter than its header: not a calyx state file",
                                           path, size));
    void* m = ::mmap(nullptr, size, live ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, f->fd_, 0);
    if (m == MAP_FAILED)
        return std::unexpected(fmt::format("state file {}: cannot map it: {}", path, errno_text()));
    f->map_ = static_cast<uint8_t*>(m);
    f->map_bytes_ = size;
    const Header& h = f->header();
    if (std::memcmp(h.magic, kStateMagic, sizeof(kStateMagic)) != 0)
        return std::unexpected(fmt::format("state file {}: not a calyx state file (no magic)", path));
    if (h.layout_version < kOldestReadStateLayoutVersion || h.layout_version > kStateLayoutVersion)
        return std::unexpected(fmt::format(
            "state file {}: layout version {}, this calyx reads versions {} to {} only; it is not read "
            "(move it away to start with an empty connection table, which cuts every connection)",
            path, h.layout_version, kOldestReadStateLayoutVersion, kStateLayoutVersion));
    if (h.header_bytes != kHeaderBytes || h.entry_bytes != sizeof(CtEntry) || h.key_bytes != sizeof(CtKeyRecord))
        return std::unexpected(fmt::format(
            "state file {}: layout version {} but sizes header {} entry {} key {} (expected {} {} {}): corrupt",
            path, h.layout_version, h.header_bytes, h.entry_bytes, h.key_bytes, kHeaderBytes, sizeof(CtEntry),
            sizeof(CtKeyRecord)));
    const uint64_t entries_end = h.entries_offset + h.slots * sizeof(CtEntry);
    const uint64_t keys_end = h.keys_offset + h.slots * sizeof(CtKeyRecord);
    if (h.file_bytes != size || h.names_offset + 2 * h.names_bytes > h.entries_offset || entries_end > h.keys_offset ||
        keys_end > size || h.entries_offset % 64 != 0)
        return std::unexpected(fmt::format("state file {}: its parts do not fit in its {} bytes: corrupt", path, size));
    const std::string boot = boot_id();
    if (std::string(h.boot_id, strnlen(h.boot_id, sizeof(h.boot_id))) != boot)
        return std::unexpected(fmt::format(
            "state file {}: written before the machine restarted (boot {}, now {}); its expiry times "
            "mean nothing now: remove it", path, std::string(h.boot_id, strnlen(h.boot_id, sizeof(h.boot_id))), boot));
    f->slots_ = h.slots;
    f->entries_ = reinterpret_cast<CtEntry*>(f->map_ + h.entries_offset);
    f->keys_ = reinterpret_cast<CtKeyRecord*>(f->map_ + h.keys_offset);
    if (h.changes_offset != 0) {
        if (h.changes_words != (h.slots + 63) / 64 || h.changes_offset < keys_end || h.changes_offset % 8 != 0 ||
            h.changes_offset + h.changes_words * sizeof(uint64_t) > size)
            return std::unexpected(fmt::format("state file {}: its change map does not fit: corrupt", path));
        f->changes_ = reinterpret_cast<uint64_t*>(f->map_ + h.changes_offset);
    }
    return f;
}

StateFile::~StateFile() {
    if (map_) ::munmap(map_, map_bytes_);
    if (fd_ >= 0) ::close(fd_);
}

StateParams StateFile::params() const {
    const Header& h = header();
    return {h.ct_secret, h.nat_secret, h.nat_partitions, h.tsc_hz};
}

uint64_t StateFile::generation() const { return header().generation; }
uint32_t StateFile::layout_version() const { return header().layout_version; }

CtRestoreSource StateFile::restore_source() const {
    CtRestoreSource from{entries_, keys_, slots_, header().tsc_hz, 0};
    if (layout_version() == 2) from.key_check = ct_key_check_v2;
    return from;
}
void StateFile::set_generation(uint64_t generation) { header().generation = generation; }

StateNames StateFile::names() const {
    const Header& h = header();
    int best = -1;
    for (int c = 0; c < 2; ++c) {
        const auto& copy = h.names[c];
        if (copy.sequence == 0 || copy.length > h.names_bytes) continue;
        const uint8_t* text = map_ + h.names_offset + c * h.names_bytes;
        if (fnv1a(text, copy.length, fnv1a(&copy.sequence, sizeof(copy.sequence))) != copy.check) continue;
        if (best < 0 || copy.sequence > h.names[best].sequence) best = c;
    }
    StateNames out;
    if (best < 0) return out;
    const char* text = reinterpret_cast<const char*>(map_ + h.names_offset + best * h.names_bytes);
    std::istringstream in(std::string(text, h.names[best].length));
    std::string kind, name;
    unsigned number = 0;
    while (in >> kind >> number >> name) {
        if (number > 0xffff) continue;
        if (kind == "zone") out.zones[name] = static_cast<uint16_t>(number);
        if (kind == "account") out.accounts[name] = static_cast<uint16_t>(number);
    }
    return out;
}

std::expected<void, std::string> StateFile::write_names(const StateNames& names) {
    std::string text;
    for (const auto& [name, zone] : names.zones) text += fmt::format("zone {} {}\n", zone, name);
    for (const auto& [name, account] : names.accounts) text += fmt::format("account {} {}\n", account, name);
    Header& h = header();
    if (text.size() > h.names_bytes)
        return std::unexpected(fmt::format("state file {}: {} bytes of names do not fit in {}", path_, text.size(),
                                           h.names_bytes));
    // Into the older copy; its sequence number makes it the newer one only once it is whole.
    const int older = h.names[0].sequence <= h.names[1].sequence ? 0 : 1;
    const uint64_t sequence = std::max(h.names[0].sequence, h.names[1].sequence) + 1;
    auto& copy = h.names[older];
    copy.sequence = 0;
    std::atomic_thread_fence(std::memory_order_release);
    std::memcpy(map_ + h.names_offset + older * h.names_bytes, text.data(), text.size());
    copy.length = static_cast<uint32_t>(text.size());
    copy.check = fnv1a(text.data(), text.size(), fnv1a(&sequence, sizeof(sequence)));
    std::atomic_thread_fence(std::memory_order_release);
    copy.sequence = sequence;
    return {};
}

std::expected<void, std::string> StateFile::rename_to(const std::string& path) {
    if (::rename(path_.c_str(), path.c_str()) != 0)
        return std::unexpected(fmt::format("state file: cannot rename {} to {}: {}", path_, path, errno_text()));
    path_ = path;
    return {};
}

}  // namespace calyx::dp
