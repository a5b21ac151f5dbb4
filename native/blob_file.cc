#include "blob_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace aysfs {

std::string BlobPath(const std::string& cache_dir, const std::string& md5) {
  std::string p = cache_dir;
  p += '/';
  p += md5[0];
  p += '/';
  p += md5[1];
  p += '/';
  p += md5;
  return p;
}

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

}  // namespace aysfs
