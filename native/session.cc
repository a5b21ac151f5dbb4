#include "session.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "ops.h"

extern char** environ;

namespace aysfs {

namespace {

constexpr const char* kFuseCtl = "/sys/fs/fuse/connections";

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

// Whether the FUSE device still has a live connection: libfuse's own test (fuse_kern_unmount) is
// POLLERR, which the kernel reports once the connection is ended or aborted.
bool DeviceAlive(fuse_session* se) {
  struct pollfd pfd = {fuse_session_fd(se), 0, 0};
  return poll(&pfd, 1, 0) != 1 || (pfd.revents & POLLERR) == 0;
}

}  // namespace

Session::Session(SessionOptions opts, std::shared_ptr<const InodeTable> table)
    : opts_(std::move(opts)), tables(std::move(table)) {}

Session::~Session() { Unmount(); }

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
  loop_thread_ = std::thread(&Session::Loop, this);
  backstop_.Start(std::chrono::milliseconds(opts_.stall_timeout_ms));
  if (opts_.read_around > 0) around_pusher_.Start(se_);
  if (opts_.push_files > 0) file_pusher_.Start(se_);

  {
    std::unique_lock<std::mutex> lock(init_mu_);
    init_cv_.wait_for(lock, std::chrono::seconds(10),
                      [this] { return initialized_.load() || loop_done_.load(); });
  }
  if (!initialized_.load()) {
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
  initialized_ = true;
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
  // The loop can end before the connection does: a request that comes after fuse_session_exit
  // (a reader of a file still open) wakes it, and libfuse drops that request unanswered, no
  // abort having been needed above. Its reader then holds a page lock until the connection ends,
  // and a push into that page (notify_store) waits on the lock in the kernel, so the pushers
  // could never be stopped. End such a connection before anything waits on them: closing the
  // device would end it all the same (its open files get ENOTCONN either way). An ended
  // connection reports POLLERR, so that libfuse's unmount below only closes the fd (it would
  // otherwise unmount the mountpoint detached above once more, and print "fuse: failed to
  // unmount ...: Invalid argument").
  if (mounted_ && DeviceAlive(se_)) Abort();
  backstop_.Stop();
  misses.FailAll();
  // No request is pending any more, so no page lock holds a push; they use se_: stop them first.
  around_pusher_.Stop();
  file_pusher_.Stop();
  // The mount is already detached and the device aborted: this only closes the fd.
  fuse_session_unmount(se_);
  fuse_session_destroy(se_);
  se_ = nullptr;
  mounted_ = false;
}

SwapResult Session::Swap(std::shared_ptr<const InodeTable> next) {
  // The kernel is told what changed only while the loop runs.
  SwapResult result =
      tables.Swap(std::move(next), se_ != nullptr && !loop_done_.load() ? se_ : nullptr);
  counters.invalidations += result.invalidated_entries + result.invalidated_inodes;
  return result;
}

Gauges Session::gauges() const {
  return Gauges{misses.parked(), misses.fetching(), tables.live()->count(), tables.retired()};
}

void Session::SetStatus(const std::string& part, std::string json) {
  status_.Set(part, std::move(json));
}

std::string Session::Status() const { return status_.Render(opts_.mountpoint, counters, gauges()); }

}  // namespace aysfs
