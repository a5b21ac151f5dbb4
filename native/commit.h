// Finishing verified blobs off the JavaScript thread. The pipeline checks a blob's size and MD5
// as it arrives; then a pool of native threads writes it to its temp file (or takes the temp file
// the pipeline already wrote), fsyncs it, closes it and renames it into the local cache. The
// fsyncs of several blobs then overlap (and share journal commits) instead of queueing behind
// the one thread that also runs every download. The same pool copies blobs to directory grid
// caches (pushes), where the work must be done relative to directory fds. No Node-API here: the
// addon hands jobs in and takes results out.
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

// A copy of a local-cache blob into a directory grid cache. Grid caches are shared (other nodes,
// other users may write there), so nothing below the root is opened by path: each component is
// opened (or made) relative to its parent's fd without following links, the temp file is created
// exclusively under a random name, fsynced and renamed within the last directory's fd. A symlink
// anywhere below the root fails the push (ELOOP), never followed. What the push creates takes
// the root's group; directories the root's permission bits (less setuid), files the root's read
// bits plus the owner's read and write.
struct GridPush {
  std::string root;   // the grid cache's directory, as the operator configured it (opened normally)
  std::string rel;    // `<h0>/<h1>/<md5>`: `/`-separated components below `root`, none `.`/`..`
  std::string src;    // the local-cache blob, opened without following a link
  uint64_t size = 0;  // `src` must be a regular file of exactly this many bytes
  bool sync = true;   // fsync before the rename
  // Called once on a pool thread: 0, nullptr and "", or an errno, the step that failed ("path",
  // "source", "open", "mkdir", "create", "read", "write", "fsync", "chmod", "close", "rename")
  // and what it failed on: `src`, or a path relative to `root` ("" for the root itself). ELOOP
  // means a symlink was found where a directory or the source file should be. On failure the
  // temp file is gone.
  std::function<void(int err, const char* step, const std::string& where)> done;
};

// Queues `job` on the same pool as SubmitCommit.
void SubmitPush(GridPush job);

}  // namespace aysfs
