#include "backstop.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>

namespace aysfs {

Backstop::Backstop(MissPath& misses) : misses_(misses) {}

void Backstop::Start(std::chrono::milliseconds stall) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
  }
  thread_ = std::thread(&Backstop::Run, this, stall);
}

void Backstop::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void Backstop::Run(std::chrono::milliseconds stall) {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  // A tenth of the window, 10 to 100 ms: the backstop fires at most that late.
  const auto tick = std::clamp<std::chrono::milliseconds>(
      std::chrono::duration_cast<std::chrono::milliseconds>(stall / 10),
      std::chrono::milliseconds(10), std::chrono::milliseconds(100));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, tick);
    lock.unlock();
    misses_.FailStalled(MissTable::Clock::now() - stall);
    lock.lock();
  }
}

}  // namespace aysfs
