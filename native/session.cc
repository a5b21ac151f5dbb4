#include "session.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "ops.h"

extern char** environ;

namespace aysfs {

namespace {

constexpr const char* kFuseCtl = "/sys/fs/fuse/connections";
// Reads up to this size at an offset that does not continue the previous read are random
// access (the kernel's sequential read-ahead asks for more, 16 KiB at its smallest).
constexpr size_t kRandomReadMax = 16 << 10;

// Opens the cached blob at `path` if it is a regular file of `size` bytes; else -1 with errno
// ENOENT (absent, or not ours to serve: it is fetched again) or the error of open.
//
// Nothing but the committer's rename ever puts a blob there, yet the cache is not trusted with
// more than that: a symlink planted under it is never followed (O_NOFOLLOW: ELOOP, answered as
// absent, so the read parks and the fetch's rename replaces the link), and a FIFO or device is
// never waited on (O_NONBLOCK, which regular files ignore for pread and for the splice into
// libfuse's pipe) nor served (S_ISREG). The fstat was already there for the size: no syscall more.
int OpenBlob(const std::string& path, uint64_t size) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ELOOP) errno = ENOENT;
    return -1;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != size) {
    close(fd);
    errno = ENOENT;
    return -1;
  }
  return fd;
}

// Reads `len` bytes at `off` through short reads; false if the file ends before.
bool ReadFull(int fd, char* buf, size_t len, off_t off) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, buf + got, len - got, off + static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

// /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out +=
          static_cast<char>(((s[i + 1] - '0') << 6) | ((s[i + 2] - '0') << 3) | (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

bool IsMountPoint(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mp;
    fields >> id >> parent >> dev >> root >> mp;
    if (Unescape(mp) == path) return true;
  }
  return false;
}

// Detaches a mount: umount2 as root, fusermount3 otherwise (an unprivileged FUSE mount).
int LazyUnmount(const std::string& path) {
  if (geteuid() == 0) return umount2(path.c_str(), MNT_DETACH) == 0 ? 0 : errno;
  const char* argv[] = {"fusermount3", "-u", "-q", "-z", "--", path.c_str(), nullptr};
  pid_t pid;
  int rc = posix_spawnp(&pid, "fusermount3", nullptr, nullptr, const_cast<char**>(argv), environ);
  if (rc != 0) return rc;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : EIO;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

bool SameAttrs(const RawEntry& a, const RawEntry& b) {
  return a.mode == b.mode && a.uid == b.uid && a.gid == b.gid && a.size == b.size &&
         a.mtime == b.mtime && a.ctime == b.ctime && a.rdev_major == b.rdev_major &&
         a.rdev_minor == b.rdev_minor && a.child_count == b.child_count;
}

}  // namespace

Session::Session(SessionOptions opts, std::shared_ptr<const InodeTable> table)
    : opts_(std::move(opts)),
      current_(std::move(table)),
      touched_(new std::atomic<uint64_t>[kTouchedBits / 64]()) {}

Session::~Session() { Unmount(); }

std::string Session::BlobPath(const std::string& md5) const {
  std::string p = opts_.cache_dir;
  p += '/';
  p += md5[0];
  p += '/';
  p += md5[1];
  p += '/';
  p += md5;
  return p;
}

int Session::Mount(std::string* error) {
  const std::string& mp = opts_.mountpoint;
  struct stat st;
  struct statvfs vfs;
  // A process that died without unmounting left its mount behind ("Transport endpoint is not
  // connected"): clear it first. statfs asks the file system itself, where stat may be answered
  // from the kernel's attribute cache.
  if (statvfs(mp.c_str(), &vfs) != 0 && (errno == ENOTCONN || errno == ECONNABORTED)) {
    LazyUnmount(mp);
  }
  if (stat(mp.c_str(), &st) != 0) {
    int err = errno;
    *error = "mountpoint " + mp + ": " + strerror(err);
    return err;
  }
  if (!S_ISDIR(st.st_mode)) {
    *error = "mountpoint " + mp + " is not a directory";
    return ENOTDIR;
  }
  if (IsMountPoint(mp)) {
    *error = "mountpoint " + mp + " is already mounted (unmount it first)";
    return EBUSY;
  }

  std::string o = "ro,default_permissions,fsname=" + opts_.fsname + ",subtype=aysfs";
  o += opts_.allow_other ? ",allow_other" : "";
  o += opts_.suid ? ",suid" : ",nosuid";
  o += opts_.dev ? ",dev" : ",nodev";
  std::vector<std::string> words = {"aysfs-native", "-o", o};
  if (opts_.debug) words.push_back("-d");
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  const fuse_lowlevel_ops& ops = Operations();
  se_ = fuse_session_new(&args, &ops, sizeof(ops), this);
  fuse_opt_free_args(&args);
  if (se_ == nullptr) {
    *error = "fuse_session_new failed for " + mp;
    return EINVAL;
  }
  if (fuse_session_mount(se_, mp.c_str()) != 0) {
    fuse_session_destroy(se_);
    se_ = nullptr;
    *error = "mounting " + mp +
             " failed (is /dev/fuse present, and are you root or is fusermount3 installed?)";
    return EPERM;
  }
  mounted_ = true;
  loop_done_ = false;
  unmounting_ = false;
  {
    std::lock_guard<std::mutex> lock(reaper_mu_);
    reaper_stop_ = false;
  }
  loop_thread_ = std::thread(&Session::Loop, this);
  reaper_thread_ = std::thread(&Session::Reaper, this);
  if (opts_.read_around > 0) StartPusher(around_pusher_);
  if (opts_.push_files > 0) StartPusher(file_pusher_);

  {
    std::unique_lock<std::mutex> lock(init_mu_);
    init_cv_.wait_for(lock, std::chrono::seconds(10),
                      [this] { return initialized.load() || loop_done_.load(); });
  }
  if (!initialized.load()) {
    Unmount();
    *error = "the kernel did not initialise the mount at " + mp;
    return EIO;
  }
  // The mount's device minor names its fusectl directory, the way to abort it at unmount.
  if (stat(mp.c_str(), &st) == 0) {
    conn_minor_ = minor(st.st_dev);
    SetReadAhead();
  }
  return 0;
}

void Session::SetReadAhead() {
  if (opts_.read_ahead_kb == 0 || geteuid() != 0) return;
  // Every FUSE mount has a backing device of its own, 0:<minor>: this changes only this mount.
  std::string path = "/sys/class/bdi/0:" + std::to_string(conn_minor_) + "/read_ahead_kb";
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  std::string kb = std::to_string(opts_.read_ahead_kb);
  if (write(fd, kb.data(), kb.size()) < 0) {
    // Best effort: the kernel's default window still works.
  }
  close(fd);
}

void Session::NotifyInit() {
  std::lock_guard<std::mutex> lock(init_mu_);
  initialized = true;
  init_cv_.notify_all();
}

void Session::Loop() {
  // Node owns signals: keep them off the loop and the worker threads libfuse starts from here.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  fuse_loop_config config{};
  config.clone_fd = 0;
  config.max_idle_threads = 16;
  fuse_session_loop_mt(se_, &config);
  {
    std::lock_guard<std::mutex> lock(init_mu_);
    loop_done_ = true;
    init_cv_.notify_all();
  }
  if (!unmounting_.load() && on_exit) on_exit();
}

void Session::Reaper() {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  const auto stall = std::chrono::milliseconds(opts_.stall_timeout_ms);
  // A tenth of the window, 10 to 100 ms: the backstop fires at most that late.
  const auto tick = std::clamp<std::chrono::milliseconds>(
      std::chrono::duration_cast<std::chrono::milliseconds>(stall / 10),
      std::chrono::milliseconds(10), std::chrono::milliseconds(100));
  std::unique_lock<std::mutex> lock(reaper_mu_);
  while (!reaper_stop_) {
    reaper_cv_.wait_for(lock, tick);
    lock.unlock();
    // No progress for the whole window: its readers get EIO, and the miss worker learns at its
    // next Progress() report that the fetch is to end.
    for (auto& miss : misses.TakeStalled(MissTable::Clock::now() - stall)) {
      counters.miss_timeouts++;
      RememberFailure(miss.md5);
      for (auto& r : miss.reads) {
        counters.errors++;
        fuse_reply_err(r.req, EIO);
      }
    }
    lock.lock();
  }
}

bool Session::Abort() {
  std::string path = std::string(kFuseCtl) + "/" + std::to_string(conn_minor_) + "/abort";
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT && geteuid() == 0) {
    mount("fusectl", kFuseCtl, "fusectl", 0, nullptr);
    fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  }
  if (fd < 0) return false;
  bool ok = write(fd, "1", 1) == 1;
  close(fd);
  return ok;
}

void Session::Unmount() {
  std::lock_guard<std::mutex> guard(unmount_mu_);
  if (se_ == nullptr) return;
  unmounting_ = true;
  if (!loop_done_.load()) {
    fuse_session_exit(se_);
    // Detach first: with no file open the kernel ends the connection and the loop wakes.
    LazyUnmount(opts_.mountpoint);
    std::unique_lock<std::mutex> lock(init_mu_);
    if (!init_cv_.wait_for(lock, std::chrono::milliseconds(300),
                           [this] { return loop_done_.load(); })) {
      // Files held open (or a reader parked on a miss) keep the connection alive: abort it.
      lock.unlock();
      Abort();
    }
  }
  if (loop_thread_.joinable()) loop_thread_.join();
  {
    std::lock_guard<std::mutex> lock(reaper_mu_);
    reaper_stop_ = true;
    reaper_cv_.notify_all();
  }
  if (reaper_thread_.joinable()) reaper_thread_.join();
  // The connection is gone; replying frees the requests still parked.
  {
    std::unique_lock<std::shared_mutex> no_replies(complete_mu_);
    for (auto& r : misses.TakeAll()) fuse_reply_err(r.req, EIO);
  }
  // Its requests are over, so no page lock holds a push any more; it uses se_: stop it first.
  StopPusher(around_pusher_);
  StopPusher(file_pusher_);
  // The mount is already detached and the device aborted: this only closes the fd.
  fuse_session_unmount(se_);
  fuse_session_destroy(se_);
  se_ = nullptr;
  mounted_ = false;
}

std::shared_ptr<const InodeTable> Session::table() const {
  std::lock_guard<std::mutex> lock(tables_mu_);
  return current_;
}

bool Session::Resolve(uint64_t ino, Node* out) const {
  out->table = table();
  out->index = out->table->Find(ino);
  if (out->index != kNone) return true;
  if (!have_retired_.load()) return false;
  std::lock_guard<std::mutex> lock(tables_mu_);
  for (auto it = retired_.rbegin(); it != retired_.rend(); ++it) {
    uint32_t i = it->table->Find(ino);
    if (i != kNone) {
      out->table = it->table;
      out->index = i;
      return true;
    }
  }
  return false;
}

uint64_t Session::LookupCount(uint64_t ino) const {
  Shard& s = shards_[ino % kShards];
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.counts.find(ino);
  return it == s.counts.end() ? 0 : it->second;
}

void Session::CountLookup(uint64_t ino, uint64_t n) {
  if (ino == kRootIno) return;  // the kernel never forgets the root
  Shard& s = shards_[ino % kShards];
  std::lock_guard<std::mutex> lock(s.mu);
  s.counts[ino] += n;
}

void Session::Forget(uint64_t ino, uint64_t n) {
  if (ino == kRootIno) return;
  {
    Shard& s = shards_[ino % kShards];
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.counts.find(ino);
    if (it == s.counts.end()) return;
    if (it->second > n) {
      it->second -= n;
      return;
    }
    s.counts.erase(it);
  }
  if (!have_retired_.load()) return;
  std::lock_guard<std::mutex> lock(tables_mu_);
  for (auto& r : retired_) r.live.erase(ino);
  retired_.erase(std::remove_if(retired_.begin(), retired_.end(),
                                [](const Retired& r) { return r.live.empty(); }),
                 retired_.end());
  have_retired_ = !retired_.empty();
}

size_t Session::retired_tables() const {
  std::lock_guard<std::mutex> lock(tables_mu_);
  return retired_.size();
}

SwapResult Session::Swap(std::shared_ptr<const InodeTable> next) {
  SwapResult result;
  std::shared_ptr<const InodeTable> old;
  {
    std::lock_guard<std::mutex> lock(tables_mu_);
    old = current_;
    current_ = next;
  }
  // The old table stays while the kernel still holds inodes that only it knows.
  Retired r{old, {}};
  for (uint32_t i = 0; i < old->count(); i++) {
    uint64_t ino = old->at(i).ino;
    if (next->Find(ino) == kNone && LookupCount(ino) > 0) r.live.insert(ino);
  }
  {
    std::lock_guard<std::mutex> lock(tables_mu_);
    for (auto& older : retired_)
      for (auto it = older.live.begin(); it != older.live.end();)
        it = next->Find(*it) != kNone ? older.live.erase(it) : std::next(it);
    if (!r.live.empty()) retired_.push_back(std::move(r));
    retired_.erase(std::remove_if(retired_.begin(), retired_.end(),
                                  [](const Retired& x) { return x.live.empty(); }),
                   retired_.end());
    have_retired_ = !retired_.empty();
    result.retired_tables = retired_.size();
  }
  if (se_ == nullptr || loop_done_.load()) return result;

  // Tell the kernel what changed. Called from JavaScript, never from a request handler: the
  // kernel takes directory locks that a handler's own request may hold.
  auto inval_entry = [&](uint64_t dir, std::string_view name) {
    fuse_lowlevel_notify_inval_entry(se_, dir, name.data(), name.size());
    result.invalidated_entries++;
  };
  auto inval_inode = [&](uint64_t ino, off_t off) {
    fuse_lowlevel_notify_inval_inode(se_, ino, off, 0);
    result.invalidated_inodes++;
  };
  for (uint32_t d = 0; d < old->count(); d++) {
    if (!old->IsDir(d)) continue;
    const RawEntry& od = old->at(d);
    uint32_t nd = next->Find(od.ino);
    if (nd == kNone || !next->IsDir(nd)) continue;  // its parent's entry is invalidated instead
    const RawEntry& ne = next->at(nd);
    bool children_changed = false;
    uint32_t a = od.first_child, a_end = od.first_child + od.child_count;
    uint32_t b = ne.first_child, b_end = ne.first_child + ne.child_count;
    while (a < a_end || b < b_end) {
      int c = a == a_end ? 1 : b == b_end ? -1 : old->Name(a).compare(next->Name(b));
      if (c < 0) {
        inval_entry(od.ino, old->Name(a++));
        children_changed = true;
      } else if (c > 0) {
        inval_entry(od.ino, next->Name(b++));  // drops a cached negative entry
        children_changed = true;
      } else {
        const RawEntry& x = old->at(a);
        const RawEntry& y = next->at(b);
        if (x.ino != y.ino) {
          inval_entry(od.ino, old->Name(a));
          children_changed = true;
        } else if (!next->IsDir(b) && !SameAttrs(x, y)) {
          inval_inode(x.ino, -1);  // attributes only: same inode means same content
        }
        a++;
        b++;
      }
    }
    if (children_changed)
      inval_inode(od.ino, 0);  // drops the cached listing too
    else if (!SameAttrs(od, ne))
      inval_inode(od.ino, -1);
  }
  counters.invalidations += result.invalidated_entries + result.invalidated_inodes;
  return result;
}

// Interrupts (FUSE_INTERRUPT: the reader got a signal while its read waited here). The kernel
// sends one only for a request whose caller waits for it, which is why fs_init turns off
// FUSE_CAP_ASYNC_DIO: with it, an O_DIRECT read is a background request, its reader waits in
// D state without ever interrupting it, and a SIGKILL could not end it before the read was
// answered.
//
// What libfuse does with the callback (lib/fuse_lowlevel.c, the same in 3.10 as in 2.x and today):
// - fuse_req_interrupt_func(req, func, data) stores func under the session lock while holding
//   the request's own lock, and calls func(req, data) right there if the request was
//   interrupted already (an INTERRUPT that came first is kept and matched when its request
//   arrives: check_interrupt). So it must not be called with a lock of ours held that the
//   callback takes; and the callback must not reply in that case: a reply frees the request
//   (fuse_free_req drops the last reference), and fuse_req_interrupt_func then unlocks the lock
//   of freed memory.
// - do_interrupt -> find_interrupted finds the request among those not yet answered, takes a
//   reference to it, and calls func with the request's lock held but not the session's. A
//   reply from another thread at the same moment clears func under the session lock and drops
//   its reference, but the request's memory stays until find_interrupted lets go of its own:
//   the callback may run while, or just after, another thread answers the request, and must
//   then leave it alone.
// Hence: Expect before registering (an interrupt until Park is remembered, never answered by
// the callback), Park refuses a request interrupted meanwhile (ParkRead answers it EINTR, after
// fuse_req_interrupt_func returned), and after Park only whoever takes the read out of the
// MissTable replies to it: the callback answers EINTR only when MissTable::Interrupt took it.
void Session::OnInterrupt(fuse_req_t req, void* session) {
  Session* s = static_cast<Session*>(session);
  if (!s->misses.Interrupt(req)) return;
  s->counters.interrupted++;
  fuse_reply_err(req, EINTR);  // the fetch goes on for the other readers
}

void Session::ParkRead(const std::string& md5, uint64_t size, const ParkedRead& read) {
  counters.misses++;
  misses.Expect(read.req);
  // May run OnInterrupt at once, under libfuse's lock of this request: no lock of ours is held.
  fuse_req_interrupt_func(read.req, &Session::OnInterrupt, this);
  switch (misses.Park(md5, read, MissTable::Clock::now())) {
    case MissTable::Parked::kInterrupted:
      counters.interrupted++;
      fuse_reply_err(read.req, EINTR);
      return;
    case MissTable::Parked::kJoined:
      return;
    case MissTable::Parked::kFirst:
      counters.miss_calls++;
      if (on_miss)
        on_miss(md5, size);
      else
        Complete(md5, EIO);
      return;
  }
}

std::vector<std::string> Session::Progress(const std::vector<std::string>& md5s) {
  if (!md5s.empty()) misses.Progress(md5s, MissTable::Clock::now());
  return misses.TakeAbandoned();
}

bool Session::RecentlyFailed(const std::string& md5) {
  std::lock_guard<std::mutex> lock(failed_mu_);
  if (failed_.empty()) return false;
  auto it = failed_.find(md5);
  if (it == failed_.end()) return false;
  if (it->second > MissTable::Clock::now()) return true;
  failed_.erase(it);
  return false;
}

void Session::RememberFailure(const std::string& md5) {
  auto now = MissTable::Clock::now();
  std::lock_guard<std::mutex> lock(failed_mu_);
  for (auto it = failed_.begin(); it != failed_.end();)  // stays tiny: entries live 250 ms
    it = it->second <= now ? failed_.erase(it) : std::next(it);
  failed_[md5] = now + std::chrono::milliseconds(opts_.failure_memory_ms);
}

void Session::Complete(const std::string& md5, int err) {
  std::shared_lock<std::shared_mutex> serving(complete_mu_);
  std::vector<ParkedRead> reads = misses.Take(md5);
  if (reads.empty()) return;
  if (err != 0) {
    counters.miss_failures++;
    RememberFailure(md5);
  }
  for (const ParkedRead& r : reads) {
    Node node;
    if (err != 0 || !Resolve(r.ino, &node)) {
      counters.errors++;
      fuse_reply_err(r.req, EIO);
      continue;
    }
    ServeReadOnce(node, r.req, r.size, r.off, /*may_park=*/false);
  }
}

void Session::ServeVerified(const std::string& md5, const char* data, size_t len) {
  std::shared_lock<std::shared_mutex> serving(complete_mu_);
  std::vector<ParkedRead> reads = misses.Take(md5);
  for (const ParkedRead& r : reads) {
    Node node;
    if (!Resolve(r.ino, &node)) {
      counters.errors++;
      fuse_reply_err(r.req, EIO);
      continue;
    }
    const RawEntry& e = node.e();
    if (!S_ISREG(e.mode) || e.size != len || node.table->Md5Hex(node.index) != md5) {
      // Not these bytes (the table changed meanwhile): ask the cache.
      ServeReadOnce(node, r.req, r.size, r.off, /*may_park=*/false);
      continue;
    }
    size_t n = 0;
    if (r.off >= 0 && static_cast<uint64_t>(r.off) < len)
      n = std::min(r.size, len - static_cast<size_t>(r.off));
    counters.bytes_read += n;
    if (fuse_reply_buf(r.req, n > 0 ? data + r.off : nullptr, n) != 0) counters.bytes_read -= n;
  }
}

void Session::ServeRead(const Node& node, fuse_req_t req, size_t size, off_t off) {
  ServeReadOnce(node, req, size, off, /*may_park=*/true);
}

void Session::ServeReadOnce(const Node& node, fuse_req_t req, size_t size, off_t off,
                            bool may_park) {
  const RawEntry& e = node.e();
  if (!S_ISREG(e.mode)) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  if (size == 0 || off < 0 || static_cast<uint64_t>(off) >= e.size) {
    fuse_reply_buf(req, nullptr, 0);  // zero-size files never need their blob
    return;
  }
  size_t want = static_cast<size_t>(std::min<uint64_t>(size, e.size - off));
  std::string md5 = node.table->Md5Hex(node.index);
  int fd = OpenBlob(BlobPath(md5), e.size);
  if (fd < 0) {
    if (errno == ENOENT && may_park && !RecentlyFailed(md5)) {
      ParkRead(md5, e.size, ParkedRead{req, e.ino, off, size});
    } else {
      counters.errors++;
      fuse_reply_err(req, EIO);
    }
    return;
  }
  if (may_park) counters.hits++;
  // Random access: the kernel reads only the pages asked for, a round trip each. Decided before
  // the reply, which lets the reader go on.
  uint64_t chunk = opts_.read_around;
  bool around = chunk > 0 && want <= kRandomReadMax && e.size > chunk && off != 0 &&
                !Continues(e.ino, static_cast<uint64_t>(off), off + want) &&
                Touch(e.ino, static_cast<uint64_t>(off) / chunk);
  // Small files read from the start, one after another in a directory: a walk (cat, tar, cp
  // -r, grep -r). The second such read in a directory pushes the small files after this one.
  bool siblings = may_park && off == 0 && e.size <= opts_.push_files && e.parent != kNone &&
                  Touch(node.table->at(e.parent).ino, kDirectoryMark);
  int rc;
  if (e.size >= opts_.splice_min_size) {
    // Large files: let the kernel move pages from the cache file to the reply (splice).
    fuse_bufvec buf = FUSE_BUFVEC_INIT(want);
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = fd;
    buf.buf[0].pos = off;
    counters.bytes_read +=
        want;  // before the reply: a reader that sees its bytes sees them counted
    rc = fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
  } else {
    thread_local std::vector<char> scratch;
    if (scratch.size() < want) scratch.resize(want);
    if (!ReadFull(fd, scratch.data(), want, off)) {
      close(fd);
      counters.errors++;
      fuse_reply_err(req, EIO);
      return;
    }
    counters.bytes_read += want;
    rc = fuse_reply_buf(req, scratch.data(), want);
  }
  if (rc != 0) {
    counters.bytes_read -= want;  // the reader was gone
  } else if (siblings) {
    QueuePush(file_pusher_,
              PushJob::Directory(node.table->at(e.parent).ino, node.table, node.index));
  }
  if (rc == 0 && around) {
    // On the pusher thread, after the reply: a push waits for the locks of pages other reads
    // hold, this one's included until it is answered.
    uint64_t from = static_cast<uint64_t>(off) / chunk * chunk;
    uint64_t to = std::min<uint64_t>(from + chunk, e.size);
    std::string path = BlobPath(md5);
    QueuePush(around_pusher_,
              PushJob::Range(e.ino, path, e.size, from, static_cast<uint64_t>(off)));
    QueuePush(around_pusher_, PushJob::Range(e.ino, path, e.size, off + want, to));
  }
  close(fd);
}

bool Session::Continues(uint64_t ino, uint64_t off, uint64_t end) {
  LastRead& slot = last_reads_[(ino ^ (ino >> 17)) % kLastReads];
  bool seq = slot.ino.load(std::memory_order_relaxed) == ino &&
             slot.end.load(std::memory_order_relaxed) == off;
  slot.ino.store(ino, std::memory_order_relaxed);
  slot.end.store(end, std::memory_order_relaxed);
  return seq;
}

bool Session::Touch(uint64_t ino, uint64_t chunk) {
  uint64_t h = (ino ^ (chunk * 0x9E3779B97F4A7C15ull)) * 0xBF58476D1CE4E5B9ull;
  h = (h ^ (h >> 31)) % kTouchedBits;
  uint64_t bit = uint64_t(1) << (h % 64);
  if (touched_[h / 64].fetch_or(bit, std::memory_order_relaxed) & bit) return true;
  if (touched_count_.fetch_add(1, std::memory_order_relaxed) + 1 >= kTouchedBits / 2) {
    for (size_t i = 0; i < kTouchedBits / 64; i++) touched_[i].store(0, std::memory_order_relaxed);
    touched_count_.store(0, std::memory_order_relaxed);
  }
  return false;
}

void Session::PushOnLookup(const Node& node) {
  const RawEntry& e = node.e();
  if (!S_ISREG(e.mode) || e.size == 0 || e.size > opts_.push_files) return;
  // Only a blob that is here now: one that lands later was fetched for a read that was
  // answered already (a cold start pushed 56 MB of those, for nothing).
  std::string path = BlobPath(node.table->Md5Hex(node.index));
  if (access(path.c_str(), F_OK) != 0) return;
  QueuePush(file_pusher_, PushJob::LookedUp(e.ino, std::move(path), e.size));
}

void Session::QueuePush(Pusher& p, PushJob job) {
  if (job.kind != PushJob::kDirectory && job.to <= job.from) return;
  std::lock_guard<std::mutex> lock(p.mu);
  if (p.stop || p.queue.size() >= kMaxPushes) return;
  // Reads into a chunk go on until its push lands: push each range once.
  auto overlaps = [&](const PushJob& j) {
    return j.ino == job.ino &&
           (j.kind == PushJob::kDirectory || (j.from < job.to && job.from < j.to));
  };
  if (overlaps(p.current)) return;
  for (const PushJob& j : p.queue)
    if (overlaps(j)) return;
  p.queue.push_back(std::move(job));
  p.cv.notify_one();
}

void Session::StartPusher(Pusher& p) {
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.stop = false;
    p.queue.clear();
  }
  p.thread = std::thread(&Session::RunPusher, this, std::ref(p));
}

void Session::StopPusher(Pusher& p) {
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.stop = true;
    p.cv.notify_all();
  }
  if (p.thread.joinable()) p.thread.join();
}

void Session::RunPusher(Pusher& p) {
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  if (&p == &file_pusher_) {
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // short sleeps in PushFile
    sched_param idle{};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
  }
  std::unique_lock<std::mutex> lock(p.mu);
  for (;;) {
    p.cv.wait(lock, [&p] { return p.stop || !p.queue.empty(); });
    if (p.stop) return;
    p.current = std::move(p.queue.front());
    p.queue.erase(p.queue.begin());
    const PushJob& job = p.current;
    lock.unlock();
    if (job.kind == PushJob::kDirectory)
      PushDirectory(job);
    else if (job.kind == PushJob::kLookedUp)
      PushFile(job.ino, job.path, job.to, /*wait_for_inode=*/true);
    else
      PushRange(job);
    lock.lock();
    p.current = PushJob{};
  }
}

void Session::PushRange(const PushJob& job) {
  int fd = OpenBlob(job.path, job.size);
  if (fd < 0) return;  // gone (evicted) or not ours: the reads will tell
  fuse_bufvec buf = FUSE_BUFVEC_INIT(job.to - job.from);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].fd = fd;
  buf.buf[0].pos = static_cast<off_t>(job.from);
  if (fuse_lowlevel_notify_store(se_, job.ino, static_cast<off_t>(job.from), &buf,
                                 FUSE_BUF_SPLICE_MOVE) == 0)
    counters.read_around += job.to - job.from;
  close(fd);
}

void Session::PushDirectory(const PushJob& job) {
  const InodeTable& t = *job.table;
  const RawEntry& dir = t.at(t.at(job.index).parent);
  uint32_t end = dir.first_child + dir.child_count;
  uint64_t bytes = 0;
  for (uint32_t i = job.index + 1; i < end && bytes < kDirectoryPushMax; i++) {
    const RawEntry& f = t.at(i);
    if (!t.IsReg(i) || f.size == 0 || f.size > opts_.push_files) continue;
    {
      std::lock_guard<std::mutex> lock(file_pusher_.mu);
      if (file_pusher_.stop) return;
    }
    // Only inodes the kernel has (a listing made them): no waiting for one to appear.
    if (PushFile(f.ino, BlobPath(t.Md5Hex(i)), f.size, /*wait_for_inode=*/false)) bytes += f.size;
  }
}

bool Session::PushFile(uint64_t ino, const std::string& path, uint64_t size, bool wait_for_inode) {
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
  counters.pushed_files += size;
  return true;
}

void Session::SetStatus(const std::string& part, std::string json) {
  std::lock_guard<std::mutex> lock(status_mu_);
  status_parts_[part] = std::move(json);
}

std::string Session::Status() const {
  std::ostringstream o;
  auto t = table();
  o << "{\"version\":1,\"mountpoint\":" << JsonString(opts_.mountpoint) << ",\"engine\":{";
  o << "\"ops\":{";
  bool first = true;
#define AYSFS_JSON(name)                                               \
  o << (first ? "" : ",") << "\"" #name "\":" << counters.name.load(); \
  first = false;
  AYSFS_OPS(AYSFS_JSON)
#undef AYSFS_JSON
  o << "},\"bytesRead\":" << counters.bytes_read << ",\"hits\":" << counters.hits
    << ",\"misses\":" << counters.misses << ",\"missCalls\":" << counters.miss_calls
    << ",\"missFailures\":" << counters.miss_failures
    << ",\"missTimeouts\":" << counters.miss_timeouts << ",\"interrupted\":" << counters.interrupted
    << ",\"errors\":" << counters.errors << ",\"parked\":" << misses.parked()
    << ",\"fetching\":" << misses.blobs() << ",\"entries\":" << t->count()
    << ",\"retiredTables\":" << retired_tables() << ",\"invalidations\":" << counters.invalidations
    << ",\"readAround\":" << counters.read_around << ",\"pushedFiles\":" << counters.pushed_files
    << "}";
  std::lock_guard<std::mutex> lock(status_mu_);
  for (const auto& [part, json] : status_parts_) o << "," << JsonString(part) << ":" << json;
  o << "}";
  return o.str();
}

}  // namespace aysfs
