// Finishing verified blobs off the JavaScript thread. The pipeline checks a blob's size and MD5
// as it arrives; then a pool of native threads writes it to its temp file (or takes the temp file
// the pipeline already wrote), fsyncs it, closes it and renames it into the local cache. The
// fsyncs of several blobs then overlap (and share journal commits) instead of queueing behind
// the one thread that also runs every download. No Node-API here: the addon hands jobs in and
// takes results out.
//
// The local cache is private: what the pool creates there is 0600 (files) and 0700
// (directories), whatever the umask.
#pragma once

#include <functional>
#include <string>

namespace aysfs {

struct CommitJob {
  // The pipeline wrote and closed `tmp` itself (a large blob); else the pool creates `tmp`
  // exclusively and writes `data` to it. (Never an fd handed over: Node tracks the fds a worker
  // opens and closes at its exit the numbers it did not see closed.)
  bool written = false;
  std::string data;
  std::string tmp;   // the temp file's path (its directory is made again if it went)
  std::string dest;  // its final name, `<cache>/<h0>/<h1>/<md5>` (missing directories are made)
  bool sync = true;  // fsync before the rename
  // Called once on a pool thread: 0 and nullptr, or an errno and the step that failed ("open",
  // "write", "fsync", "close", "mkdir", "rename"). On failure the temp file is gone.
  std::function<void(int err, const char* step)> done;
};

// Queues `job` on the pool: a few threads with every signal blocked, started on first use and
// kept for the life of the process, taking tasks in the order they came.
void SubmitCommit(CommitJob job);

}  // namespace aysfs
