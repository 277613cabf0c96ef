// The state file: what a calyx process leaves for the next one (after a crash, a restart or
// an upgrade) so that established connections continue (issue 17; doc/operations.md
// "Upgrading and restarting").
//
// The connection table's entries and keys live in this file, mapped shared, and the data path
// writes them there directly: nothing is copied or checkpointed, so whatever the last process
// had written when it died is there for the next one, up to the packet it was handling. What
// rte_hash keeps (buckets, signatures, its free-slot rings) holds process pointers and is not
// in the file: a starting calyx maps the previous file, checks every entry and re-inserts the
// ones it trusts into a fresh table in a NEW file, which then replaces the old one by rename
// (so a crash during the restore leaves the previous file as it was). The NAT port allocator
// is rebuilt from the restored connections' bindings; the names that give entries their
// meaning (which network has which conntrack zone, which instance which account) are stored
// with them.
//
// Layout (all little-endian, the host's; offsets in the header):
//   header    4 KiB: magic "CALYXST\n", layout version, the sizes of every part below, the
//             secrets of the keyed hashes, the TSC frequency the expiry times were written
//             with, the boot it belongs to (expiry times are TSC-based), a generation.
//   names     two copies (A/B) of a text block, "zone <n> <network>" / "account <n>
//             <instance>" lines; each copy has a sequence number and a checksum, the reader
//             takes the valid one with the higher sequence. Written by the control plane
//             after every reload, never by workers.
//   entries   slots x 64 bytes: CtEntry (dp/conntrack.hpp) indexed by the hash position.
//   keys      slots x 16 bytes: the key each entry was created with, without its protocol
//             (the entry's); the entry holds seven check bits over the whole key (the key's
//             own hash position is rte_hash's business).
//   changes   one bit per slot, set by whoever changed the slot's entry (after it unlocked it):
//             the change map. A successor taking over restores the whole table while the
//             running process still serves, clearing the map first, then applies only the
//             entries whose bits were set meanwhile (dp/live_restore.hpp). A file without it
//             (changes_offset 0) is restored whole after its process stopped.
//
// What a reader trusts: an entry that is live (not dead, not retired), not locked (a worker
// was changing it when the process died: its bytes may be half old, half new), whose key
// record matches the entry's check bits. A masqueraded connection's way back in (the NAT
// allocator's connection map) is bound again from its binding. Anything else is skipped and
// counted.
//
// A file of another layout version is refused with an error that says so: never read as if it
// were this one. Version 1 (until 2026-12-05) had 32-byte key records with a check word and a
// second entry (an alias key) per masqueraded connection. Version 2 (until 2026-12-06) is
// version 3's layout with another entry check over the key (ct_key_check_v2): it is read, with
// its own check, so an upgrade from it keeps every connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <expected>
#include <map>
#include <memory>
#include <string>

#include "dp/conntrack.hpp"

namespace calyx::dp {

inline constexpr uint32_t kStateLayoutVersion = 3;       // what this calyx writes
inline constexpr uint32_t kOldestReadStateLayoutVersion = 2;  // the oldest it reads
inline constexpr char kStateMagic[8] = {'C', 'A', 'L', 'Y', 'X', 'S', 'T', '\n'};

// The names that give zones and accounts their meaning.
struct StateNames {
    std::map<std::string, uint16_t> zones;     // network -> conntrack zone
    std::map<std::string, uint16_t> accounts;  // instance -> account
    friend bool operator==(const StateNames&, const StateNames&) = default;
};

// Parameters the writer used; the reader needs them to read the entries the same way.
struct StateParams {
    uint64_t ct_secret = 0;    // the connection table's keyed hash
    uint64_t nat_secret = 0;   // the NAT allocator's partition hash (same partitions: same pools)
    uint32_t nat_partitions = 0;
    uint64_t tsc_hz = 0;       // expiry times are whole seconds of TSC / tsc_hz
};

class StateFile {
public:
    // Creates (replacing any file there) and maps a file at `path` for `slots` entries, with a
    // zeroed table. Its boot id is this boot's.
    static std::expected<std::unique_ptr<StateFile>, std::string> create(const std::string& path, uint64_t slots,
                                                                         const StateParams& params);
    // Maps an existing file after checking its header: read-only, or, for a successor that
    // restores it while its process still runs (`live`), with its change map writable (the
    // entries stay the running process's). nullptr (no error): there is no file. An error: the
    // file is not one this calyx can read (another layout version, another boot, truncated,
    // not a state file), and it says which.
    enum class Access { read_only, live };
    static std::expected<std::unique_ptr<StateFile>, std::string> open(const std::string& path,
                                                                       Access access = Access::read_only);
    ~StateFile();
    StateFile(const StateFile&) = delete;
    StateFile& operator=(const StateFile&) = delete;

    const std::string& path() const { return path_; }
    uint64_t slots() const { return slots_; }
    StateParams params() const;
    uint64_t generation() const;
    uint32_t layout_version() const;
    // The entries, keys and parameters to restore this file's connections from (expiry times
    // converted once the caller sets new_tsc_hz), with the entry check of its layout version.
    CtRestoreSource restore_source() const;
    CtEntry* entries() const { return entries_; }
    CtKeyRecord* keys() const { return keys_; }
    // The change map, (slots + 63) / 64 words; null in a file written before it existed.
    uint64_t* changes() const { return changes_; }
    // Whether the file is in memory (tmpfs, ramfs or hugetlbfs). On a disk's file system the
    // kernel writes back every page the data path dirties, at a cost per connection (new
    // connections measured at a fifth of the rate on ext4): calyx warns at start.
    bool in_memory() const { return in_memory_; }

    // The newest valid names block (empty if none was ever written).
    StateNames names() const;
    // Writes `names` into the older copy, then makes it the newer one. Control plane only.
    std::expected<void, std::string> write_names(const StateNames& names);
    // Gives the file the name `path` (rename over whatever is there): the restore is complete.
    std::expected<void, std::string> rename_to(const std::string& path);
    // Sets the generation (one more than the file it was restored from).
    void set_generation(uint64_t generation);

    // This boot's id (/proc/sys/kernel/random/boot_id), which files record.
    static std::string boot_id();
    // Where this process restores into before the rename over `path`: a name of its own
    // (`<path>.new-<pid>`), so that a calyx starting while a successor pre-restores (or the
    // reverse) never unlinks or renames the other's file.
    static std::string temporary_path(const std::string& path);
    // Removes the temporaries of processes that are gone (a start interrupted by a crash, a
    // successor that was refused): nothing holds their lock (create() locks every file it makes
    // until the process closes it). And the `<path>.new` of calyx before 2026-12-06. How many.
    static size_t remove_abandoned_temporaries(const std::string& path);

private:
    StateFile() = default;
    struct Header;
    Header& header() const;

    std::string path_;
    int fd_ = -1;
    uint8_t* map_ = nullptr;
    size_t map_bytes_ = 0;
    uint64_t slots_ = 0;
    CtEntry* entries_ = nullptr;
    CtKeyRecord* keys_ = nullptr;
    uint64_t* changes_ = nullptr;
    bool in_memory_ = false;
};

}  // namespace calyx::dp
