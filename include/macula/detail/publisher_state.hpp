// What a Publisher (and its copies) shares with the node it publishes through. Internal: users
// see it only through Publisher::dropped().
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

namespace macula::detail {

/// The 64-bit FNV-1a hash of a topic: what PublisherState remembers instead of the topic.
constexpr std::uint64_t topic_hash(std::string_view topic) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : topic) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

/// The drop counter, and the last topic of this publisher that the node lost entirely to full
/// links. Why the second: a drop-policy producer faster than its links used to have every
/// message copied, queued and then dropped by the node's io thread, which then spent its time
/// dropping instead of sending. A full link refuses drop-policy publishes until it drained to
/// half its bound; until then, and while no route changed (the node's route epoch did not
/// move), the next publish of that topic is dropped at the publisher before its payload is
/// copied, and counted as the io thread would have counted it (once per full link).
///
/// Threading: the node's strand writes the memo (one writer per node: a Publisher belongs to
/// one node); any thread reads it. A sequence lock keeps the hash and the epoch a pair.
struct PublisherState {
  std::atomic<std::uint64_t> drops{0};

  /// Strand: `hash`'s last message reached no subscriber because all of its `links` interested
  /// links were full, at route epoch `epoch`.
  void remember_full(std::uint64_t hash, std::uint64_t epoch, std::uint32_t links) noexcept {
    const std::uint64_t s = seq_.load(std::memory_order_relaxed);
    seq_.store(s + 1, std::memory_order_relaxed);  // odd: being written
    std::atomic_thread_fence(std::memory_order_release);
    hash_.store(hash, std::memory_order_relaxed);
    epoch_.store(epoch, std::memory_order_relaxed);
    links_.store(links, std::memory_order_relaxed);
    seq_.store(s + 2, std::memory_order_release);
  }

  /// Any thread: how many full links the memo says `topic` finds at route epoch `epoch` (each
  /// one a drop); 0 when it says nothing about it.
  std::uint32_t full_links_at(std::string_view topic, std::uint64_t epoch) const noexcept {
    const std::uint64_t s1 = seq_.load(std::memory_order_acquire);
    if (s1 == 0 || (s1 & 1)) return 0;  // never written, or being written: ask the node
    if (epoch_.load(std::memory_order_relaxed) != epoch) return 0;  // the common miss, cheap
    const std::uint64_t hash = topic_hash(topic);
    const std::uint64_t h = hash_.load(std::memory_order_relaxed);
    const std::uint64_t e = epoch_.load(std::memory_order_relaxed);
    const std::uint32_t n = links_.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    return seq_.load(std::memory_order_relaxed) == s1 && h == hash && e == epoch ? n : 0;
  }

 private:
  std::atomic<std::uint64_t> seq_{0}, hash_{0}, epoch_{0};
  std::atomic<std::uint32_t> links_{0};
};

}  // namespace macula::detail
