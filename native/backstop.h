// The backstop of parked reads: a thread that, a few times a second, fails the reads parked on a
// fetch that has made no progress for the mount's stall timeout (MissPath::FailStalled), so that
// no reader waits forever on a fetch stuck where no timeout of its own reaches. The miss worker
// reports progress and learns which fetches to end (MissPath::Progress). No Node-API here.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "miss_path.h"

namespace aysfs {

class Backstop {
 public:
  explicit Backstop(MissPath& misses);

  // Starts the thread: a fetch without progress for `stall` fails its reads.
  void Start(std::chrono::milliseconds stall);
  // Joins the thread.
  void Stop();

 private:
  void Run(std::chrono::milliseconds stall);

  MissPath& misses_;
  std::thread thread_;
  // A leaf lock: the thread lets go of it before it fails anything.
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
};

}  // namespace aysfs
