// A keyed hash for tables whose keys an attacker chooses (the connection table, the NAT
// port partitions): without the secret nobody can predict which keys share a bucket.
//
// Multilinear hashing (Lemire and Kaser, "Strongly universal string hashing is fast", 2014):
// h(w) = (k0 + k1*w1 + ... + kn*wn) mod 2^64 over 32-bit words w, keeping the top 32 bits,
// with random 64-bit keys k. For any two different inputs fixed in advance, the chance over
// the keys that they collide is about 2^-32: an attacker who does not know the keys cannot
// aim at a bucket. It costs n independent multiplies and a 32-bit finaliser (~10 cycles for a
// connection key, about what the CRC32 it replaces cost). It is not a PRF like SipHash: its guarantee is against
// inputs chosen without seeing the hash values, which calyx never reveals. SipHash-2-4
// (libsodium) measured ~140 cycles per 20-byte key here, more than the whole established
// packet path: too much for a hash computed on every packet.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <random>

namespace calyx::dp {

// splitmix64: expands one 64-bit secret into the hash's keys (and mixes seeds elsewhere).
inline uint64_t splitmix64(uint64_t& state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// A random 64-bit secret from the operating system (getrandom), for start-up.
inline uint64_t random_secret() {
    std::random_device random;
    return uint64_t{random()} << 32 | random();
}

template <size_t kWords>
class MultilinearHash {
public:
    explicit MultilinearHash(uint64_t secret = 0) {
        for (uint64_t& k : keys_) k = splitmix64(secret);
    }

    uint32_t operator()(const std::array<uint32_t, kWords>& words) const noexcept {
        uint64_t sum = keys_[0];
        for (size_t i = 0; i < kWords; ++i) sum += keys_[i + 1] * words[i];
        // Keys that differ in one word (a tenant's consecutive source ports) give sums in an
        // arithmetic progression, whose low bits (rte_hash's bucket) and high bits (its
        // alternative bucket) follow each other: cuckoo hashing then fills up early. A
        // bijective finaliser (MurmurHash3's fmix32) breaks that pattern and keeps every
        // collision property of the sum.
        auto h = static_cast<uint32_t>(sum >> 32);
        h ^= h >> 16;
        h *= 0x85ebca6bu;
        h ^= h >> 13;
        h *= 0xc2b2ae35u;
        h ^= h >> 16;
        return h;
    }

private:
    std::array<uint64_t, kWords + 1> keys_{};
};

}  // namespace calyx::dp
