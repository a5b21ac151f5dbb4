#include "commit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace aysfs {

namespace {

// Threads mostly wait on the disk (fsync): enough of them for the fsyncs of the blobs of every
// reader of a busy mount to overlap.
constexpr int kThreads = 8;
constexpr int kNice = 10;

// Never destroyed: the pool threads wait on them until the process ends, and destroying a
// condition variable with waiters blocks exit().
auto& g_mu = *new std::mutex();
auto& g_cv = *new std::condition_variable();
auto& g_tasks = *new std::deque<std::function<void()>>();  // guarded by g_mu
bool g_started = false;                                    // guarded by g_mu

bool WriteAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += size_t(n);
  }
  return true;
}

// Makes the blob's two levels of directories (`<cache>/<h0>/<h1>`) if missing: private, like
// everything in the local cache (mkdir's mode only ever loses bits to the umask).
int MakeParents(const std::string& dest) {
  size_t last = dest.rfind('/');
  if (last == std::string::npos || last == 0) return ENOENT;
  size_t mid = dest.rfind('/', last - 1);
  if (mid == std::string::npos || mid == 0) return ENOENT;
  for (const std::string& dir : {dest.substr(0, mid), dest.substr(0, last)}) {
    if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return errno;
  }
  return 0;
}

// Runs one job; returns 0 or an errno, with the step that failed in `step`.
int Run(CommitJob& job, const char** step) {
  int fd;
  if (job.written) {
    *step = "open";
    fd = open(job.tmp.c_str(), O_RDONLY | O_CLOEXEC);  // fsync needs no write access
    if (fd < 0) {
      int err = errno;
      unlink(job.tmp.c_str());
      return err;
    }
  } else {
    *step = "open";
    fd = open(job.tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == ENOENT) {
      // Someone removed the temp directory under us: make it again.
      size_t slash = job.tmp.rfind('/');
      if (slash != std::string::npos && slash > 0 &&
          (mkdir(job.tmp.substr(0, slash).c_str(), 0700) == 0 || errno == EEXIST))
        fd = open(job.tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      else
        errno = ENOENT;
    }
    if (fd < 0) return errno;
    *step = "write";
    if (!WriteAll(fd, job.data)) {
      int err = errno;
      close(fd);
      unlink(job.tmp.c_str());
      return err;
    }
    std::string().swap(job.data);
  }
  // fsync before the rename: after a crash the final name never points at a partial file.
  *step = "fsync";
  if (job.sync && fsync(fd) != 0) {
    int err = errno;
    close(fd);
    unlink(job.tmp.c_str());
    return err;
  }
  *step = "close";
  if (close(fd) != 0 && errno != EINTR) {
    int err = errno;
    unlink(job.tmp.c_str());
    return err;
  }
  *step = "rename";
  if (rename(job.tmp.c_str(), job.dest.c_str()) == 0) return 0;
  int err = errno;
  if (err == ENOENT) {
    *step = "mkdir";
    err = MakeParents(job.dest);
    if (err == 0) {
      *step = "rename";
      if (rename(job.tmp.c_str(), job.dest.c_str()) == 0) return 0;
      err = errno;
    }
  }
  unlink(job.tmp.c_str());
  return err;
}

void Worker() {
  // Below the threads that serve reads and run downloads: a commit is never what a reader
  // waits for (it was answered from the checked bytes), so it takes the CPU they leave.
  setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), kNice);
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(g_mu);
      g_cv.wait(lock, [] { return !g_tasks.empty(); });
      task = std::move(g_tasks.front());
      g_tasks.pop_front();
    }
    task();
  }
}

// Starts the pool with every signal blocked from the first instruction: Node handles signals
// on its own threads.
void StartLocked() {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  for (int i = 0; i < kThreads; i++) std::thread(Worker).detach();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  g_started = true;
}

}  // namespace

namespace {

void SubmitTask(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (!g_started) StartLocked();
    g_tasks.push_back(std::move(task));
  }
  g_cv.notify_one();
}

}  // namespace

void SubmitCommit(CommitJob job) {
  SubmitTask([job = std::move(job)]() mutable {
    const char* step = nullptr;
    int err = Run(job, &step);
    if (job.done) job.done(err, err == 0 ? nullptr : step);
  });
}

}  // namespace aysfs
