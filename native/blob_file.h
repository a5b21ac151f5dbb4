// The local cache's blob files as the native side reads them: where a blob lives, and how it is
// opened (never through a link, never waiting on a FIFO) and read. Used by the read path and the
// pushers; only the committer (commit.h) ever writes there.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace aysfs {

// `<cache_dir>/<h0>/<h1>/<md5>`.
std::string BlobPath(const std::string& cache_dir, const std::string& md5);

// Opens the cached blob at `path` if it is a regular file of `size` bytes; else -1 with errno
// ENOENT (absent, or not ours to serve: it is fetched again) or the error of open.
int OpenBlob(const std::string& path, uint64_t size);

// Reads `len` bytes at `off` through short reads; false if the file ends before.
bool ReadFull(int fd, char* buf, size_t len, off_t off);

}  // namespace aysfs
