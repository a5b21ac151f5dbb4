// Requests parked on blobs that are not in the local cache yet. No Node-API here: the session
// parks from FUSE threads and the miss bridge answers from the miss worker's thread.
#pragma once

#include <fuse_lowlevel.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
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

struct ExpiredMiss {
  std::string md5;
  std::vector<ParkedRead> reads;
};

class MissTable {
 public:
  using Clock = std::chrono::steady_clock;

  // Parks `read` on blob `md5`. Returns true when it is the first read waiting on that blob:
  // the caller then asks for exactly one fetch (concurrent misses of one blob make one call).
  bool Park(const std::string& md5, const ParkedRead& read, Clock::time_point deadline);
  // Takes every read parked on `md5` (empty when none, e.g. after the deadline fired).
  std::vector<ParkedRead> Take(const std::string& md5);
  // Takes the misses whose deadline has passed.
  std::vector<ExpiredMiss> TakeExpired(Clock::time_point now);
  // Takes everything (unmount).
  std::vector<ParkedRead> TakeAll();
  size_t parked() const;
  size_t blobs() const;

 private:
  struct Miss {
    Clock::time_point deadline;
    std::vector<ParkedRead> reads;
  };
  mutable std::mutex mu_;
  std::unordered_map<std::string, Miss> misses_;  // guarded by mu_
  size_t parked_ = 0;                             // guarded by mu_
};

}  // namespace aysfs
