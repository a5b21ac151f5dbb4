#include "pusher.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "blob_file.h"

namespace aysfs {

Pusher::Pusher(Priority priority, const SessionOptions& opts, Counters& counters)
    : priority_(priority), opts_(opts), counters_(counters) {}

void Pusher::Queue(PushJob job) {
  if (job.kind != PushJob::kDirectory && job.to <= job.from) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_ || queue_.size() >= kMaxQueue) return;
  // Reads into a chunk go on until its push lands: push each range once.
  auto overlaps = [&](const PushJob& j) {
    return j.ino == job.ino &&
           (j.kind == PushJob::kDirectory || (j.from < job.to && job.from < j.to));
  };
  if (overlaps(current_)) return;
  for (const PushJob& j : queue_)
    if (overlaps(j)) return;
  queue_.push_back(std::move(job));
  cv_.notify_one();
}

void Pusher::Start(fuse_session* se) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
    queue_.clear();
  }
  se_ = se;
  thread_ = std::thread(&Pusher::Run, this);
}

void Pusher::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void Pusher::Run() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  if (priority_ == Priority::kIdle) {
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // short sleeps in PushFile
    sched_param idle{};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
  }
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    current_ = std::move(queue_.front());
    queue_.erase(queue_.begin());
    const PushJob& job = current_;
    lock.unlock();
    if (job.kind == PushJob::kDirectory)
      PushDirectory(job);
    else if (job.kind == PushJob::kLookedUp)
      PushFile(job.ino, job.path, job.to, /*wait_for_inode=*/true);
    else
      PushRange(job);
    lock.lock();
    current_ = PushJob{};
  }
}

void Pusher::PushRange(const PushJob& job) {
  int fd = OpenBlob(job.path, job.size);
  if (fd < 0) return;  // gone (evicted) or not ours: the reads will tell
  fuse_bufvec buf = FUSE_BUFVEC_INIT(job.to - job.from);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].fd = fd;
  buf.buf[0].pos = static_cast<off_t>(job.from);
  if (fuse_lowlevel_notify_store(se_, job.ino, static_cast<off_t>(job.from), &buf,
                                 FUSE_BUF_SPLICE_MOVE) == 0)
    counters_.read_around_bytes += job.to - job.from;
  close(fd);
}

void Pusher::PushDirectory(const PushJob& job) {
  const InodeTable& t = *job.table;
  const RawEntry& dir = t.at(t.at(job.index).parent);
  uint32_t end = dir.first_child + dir.child_count;
  uint64_t bytes = 0;
  for (uint32_t i = job.index + 1; i < end && bytes < kDirectoryPushMax; i++) {
    const RawEntry& f = t.at(i);
    if (!t.IsReg(i) || f.size == 0 || f.size > opts_.push_files) continue;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    // Only inodes the kernel has (a listing made them): no waiting for one to appear.
    if (PushFile(f.ino, BlobPath(opts_.cache_dir, t.Md5Hex(i)), f.size, /*wait_for_inode=*/false))
      bytes += f.size;
  }
}

bool Pusher::PushFile(uint64_t ino, const std::string& path, uint64_t size, bool wait_for_inode) {
  int fd = OpenBlob(path, size);
  if (fd < 0) return false;  // not there (yet), or not the entry's: the read will tell
  thread_local std::vector<char> data;
  data.resize(size);
  bool whole = ReadFull(fd, data.data(), size, 0);
  close(fd);
  if (!whole) return false;
  // The kernel makes the inode when the thread that looked it up wakes from the reply; until
  // then the store fails with ENOENT. The reader's first read comes one or two syscalls later,
  // so try again at once and often, then less often (from memory: a spliced buffer is spent by
  // a failed write). The thread's timer slack is 1 ns for this (at the default 50 us a 5 us
  // sleep takes ~60 us and the read wins the race: measured, 458 of 631 reads left instead of
  // 0-7 in the Python start-up of the benchmark), and it runs as SCHED_IDLE: at normal
  // priority its wake-ups kept the looking-up thread, woken on the same CPU, from running at
  // all (stat took the whole ~550 us of tries, then the push failed). Read-around stays at
  // normal priority: at SCHED_IDLE its pushes came late (random reads 1.16 -> 1.42 s).
  fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  buf.buf[0].mem = data.data();
  auto give_up = std::chrono::steady_clock::now() + kInodeWait;
  auto pause = std::chrono::microseconds(5);
  int rc;
  for (int attempt = 0;; attempt++) {
    rc = fuse_lowlevel_notify_store(se_, ino, 0, &buf, FUSE_BUF_NO_SPLICE);
    if (rc != -ENOENT || !wait_for_inode || std::chrono::steady_clock::now() >= give_up) break;
    if (attempt >= 8) pause = std::min<std::chrono::microseconds>(pause * 2, kInodeWait / 8);
    std::this_thread::sleep_for(pause);
  }
  if (rc != 0) return false;
  counters_.pushed_file_bytes += size;
  return true;
}

}  // namespace aysfs
