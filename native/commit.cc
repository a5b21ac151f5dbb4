#include "commit.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

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

// An fd that closes itself.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Reset(-1); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset(int fd) {
    if (fd_ >= 0) close(fd_);
    fd_ = fd;
  }
  // Closes now, for the caller to see close's error.
  int Close() {
    int fd = fd_;
    fd_ = -1;
    return close(fd) == 0 || errno == EINTR ? 0 : errno;
  }

 private:
  int fd_;
};

// `rel`'s components; false if there are none or one is empty, `.`, `..` or holds a NUL.
bool SplitRel(const std::string& rel, std::vector<std::string>* out) {
  if (rel.find('\0') != std::string::npos) return false;
  size_t start = 0;
  for (;;) {
    size_t slash = rel.find('/', start);
    std::string part = rel.substr(start, slash == std::string::npos ? slash : slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    out->push_back(std::move(part));
    if (slash == std::string::npos) return true;
    start = slash + 1;
  }
}

// An open of `name` below `dirfd` with O_NOFOLLOW failed with `err`: ELOOP when `name` is a
// symlink (with O_DIRECTORY the kernel may say ENOTDIR), else `err`.
int LinkErrno(int dirfd, const std::string& name, int err) {
  struct stat st;
  if ((err == ENOTDIR || err == ELOOP) &&
      fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
    return ELOOP;
  return err;
}

// Gives a directory or file we just made in a grid cache the root's group and `mode`. A group
// we may not give (not root, not a member) leaves ours, as a plain mkdir would. The chmod comes
// after the chown, which may clear setgid bits.
int Adopt(int fd, mode_t mode, gid_t gid) {
  struct stat st;
  if (fstat(fd, &st) != 0) return errno;
  if (st.st_gid != gid && fchown(fd, static_cast<uid_t>(-1), gid) != 0 && errno != EPERM)
    return errno;
  return fchmod(fd, mode) == 0 ? 0 : errno;
}

// Opens directory `name` below `dirfd` without following a link, making it first if missing.
int OpenDir(int dirfd, const std::string& name, mode_t mode, gid_t gid, Fd* out,
            const char** step) {
  constexpr int kFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;
  *step = "open";
  int fd = openat(dirfd, name.c_str(), kFlags);
  if (fd < 0 && errno == ENOENT) {
    *step = "mkdir";
    // Never wider than meant in between: the umask can only take bits away; Adopt then sets
    // exactly the root's (and the setgid and sticky bits mkdir leaves out).
    bool made = mkdirat(dirfd, name.c_str(), mode & 0777) == 0;
    if (!made && errno != EEXIST) return errno;
    *step = "open";
    fd = openat(dirfd, name.c_str(), kFlags);
    // (Should a racing writer have put a directory of theirs in its place, it gets the root's
    // mode and group too: no wider than the grid cache itself, and theirs to change anyway.)
    if (fd >= 0 && made) {
      *step = "chmod";
      int err = Adopt(fd, mode, gid);
      if (err != 0) {
        close(fd);
        return err;
      }
    }
  }
  if (fd < 0) return LinkErrno(dirfd, name, errno);
  out->Reset(fd);
  return 0;
}

// 16 hex digits nobody can guess (a temp file's name in a directory others may write).
std::string RandomHex() {
  static std::atomic<uint64_t> fallback{0};
  uint64_t r;
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != ssize_t(sizeof r)) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    r = (uint64_t(ts.tv_nsec) << 20) ^ uint64_t(ts.tv_sec) ^ (++fallback << 44) ^
        uint64_t(getpid());
  }
  char buf[17];
  snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(r));
  return buf;
}

// Copies `size` bytes from `in` to `out`.
int Copy(int in, int out, uint64_t size, const char** step) {
  constexpr size_t kBuf = 256 * 1024;
  std::unique_ptr<char[]> buf(new char[kBuf]);
  uint64_t left = size;
  while (left > 0) {
    *step = "read";
    ssize_t n = read(in, buf.get(), size_t(std::min<uint64_t>(left, kBuf)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno;
    if (n == 0) return EIO;  // the blob got shorter under us
    *step = "write";
    size_t off = 0;
    while (off < size_t(n)) {
      ssize_t w = write(out, buf.get() + off, size_t(n) - off);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return errno;
      off += size_t(w);
    }
    left -= uint64_t(n);
  }
  return 0;
}

int RunPush(const GridPush& job, const char** step, std::string* where) {
  std::vector<std::string> parts;
  *step = "path";
  *where = job.rel;
  if (!SplitRel(job.rel, &parts)) return EINVAL;
  if (job.root.find('\0') != std::string::npos || job.src.find('\0') != std::string::npos)
    return EINVAL;

  // The source first: a local-cache blob, never through a link, and nothing but a regular file
  // of the size the flist says (O_NONBLOCK: a FIFO in its place must not block the open).
  *step = "source";
  *where = job.src;
  Fd in(open(job.src.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  if (in.get() < 0) return errno;
  struct stat st;
  if (fstat(in.get(), &st) != 0) return errno;
  if (!S_ISREG(st.st_mode) || uint64_t(st.st_size) != job.size) return EINVAL;

  // The root is the operator's choice and is opened as configured; below it, nothing is
  // followed.
  *step = "open";
  where->clear();
  Fd dir(open(job.root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) return errno;
  if (fstat(dir.get(), &st) != 0) return errno;
  const mode_t dir_mode = st.st_mode & 03777;  // setgid and sticky carry over; setuid means nothing
  const mode_t file_mode = 0600 | (st.st_mode & 0044);
  const gid_t gid = st.st_gid;
  std::string prefix;  // `where` of the directory `dir` is, with a slash
  for (size_t i = 0; i + 1 < parts.size(); i++) {
    *where = prefix + parts[i];
    Fd next;
    int err = OpenDir(dir.get(), parts[i], dir_mode, gid, &next, step);
    if (err != 0) return err;
    dir.Reset(next.Release());
    prefix = *where + "/";
  }

  const std::string& name = parts.back();
  std::string tmp = "." + name + "." + std::to_string(getpid()) + "." + RandomHex() + ".tmp";
  *step = "create";
  *where = prefix + tmp;
  Fd out(
      openat(dir.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (out.get() < 0) return errno;
  int err = Copy(in.get(), out.get(), job.size, step);
  if (err == 0) {
    *step = "chmod";
    err = Adopt(out.get(), file_mode, gid);
  }
  // fsync before the rename: after a crash the final name never points at a partial file.
  if (err == 0 && job.sync) {
    *step = "fsync";
    if (fsync(out.get()) != 0) err = errno;
  }
  if (err == 0) {
    *step = "close";
    err = out.Close();
  }
  if (err == 0) {
    // Within the one directory fd: whatever `name` is now (even a symlink) is replaced, not
    // followed.
    *step = "rename";
    *where = prefix + name;
    if (renameat(dir.get(), tmp.c_str(), dir.get(), name.c_str()) == 0) return 0;
    err = errno;
  }
  unlinkat(dir.get(), tmp.c_str(), 0);
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

void SubmitPush(GridPush job) {
  SubmitTask([job = std::move(job)]() mutable {
    const char* step = nullptr;
    std::string where;
    int err = RunPush(job, &step, &where);
    if (err == 0) where.clear();
    if (job.done) job.done(err, err == 0 ? nullptr : step, where);
  });
}

}  // namespace aysfs
