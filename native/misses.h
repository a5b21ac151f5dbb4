// Requests parked on blobs that are not in the local cache yet, and when each blob's fetch last
// moved. No Node-API here: the session parks from FUSE threads, the miss bridge answers and
// reports progress from the miss worker's thread, and the reaper gives up on stalled fetches.
//
// Whoever takes a read out of this table replies to it, exactly once: Take (its fetch settled
// or served it), TakeStalled (the backstop) or TakeAll (unmount).
#pragma once

#include <fuse_lowlevel.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace aysfs {

// A read waiting for its blob. Plain data only: the kernel's request and copies of its
// arguments, never a pointer into a buffer libfuse owns.
struct ParkedRead {
  fuse_req_t req;
  uint64_t ino;
  off_t off;
  size_t size;
};

struct StalledMiss {
  std::string md5;
  std::vector<ParkedRead> reads;
};

class MissTable {
 public:
  using Clock = std::chrono::steady_clock;

  // Parks `read` on blob `md5`. Returns true when it is the first read waiting on that blob:
  // the caller then asks for exactly one fetch (concurrent misses of one blob make one call).
  // A new miss's progress clock starts at `now`.
  bool Park(const std::string& md5, const ParkedRead& read, Clock::time_point now);
  // Takes every read parked on `md5` (empty when none, e.g. after the backstop fired).
  std::vector<ParkedRead> Take(const std::string& md5);
  // The fetches of these blobs made progress at `now` (unknown blobs are ignored).
  void Progress(const std::vector<std::string>& md5s, Clock::time_point now);
  // Takes the misses whose fetch has made no progress since `cutoff` and remembers them as
  // abandoned.
  std::vector<StalledMiss> TakeStalled(Clock::time_point cutoff);
  // The blobs given up on since the last call whose fetch must now end. A blob that a read
  // parked on again meanwhile is not among them: that read's miss keeps the fetch.
  std::vector<std::string> TakeAbandoned();
  // Takes everything (unmount).
  std::vector<ParkedRead> TakeAll();
  size_t parked() const;
  size_t blobs() const;

 private:
  struct Miss {
    Clock::time_point moved;  // the last progress of its fetch (or when it was asked for)
    std::vector<ParkedRead> reads;
  };
  std::vector<ParkedRead> TakeLocked(std::unordered_map<std::string, Miss>::iterator it);

  mutable std::mutex mu_;
  std::unordered_map<std::string, Miss> misses_;  // guarded by mu_
  std::unordered_set<std::string> abandoned_;     // guarded by mu_
  size_t parked_ = 0;                             // guarded by mu_
};

}  // namespace aysfs
