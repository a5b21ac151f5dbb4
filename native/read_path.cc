#include "read_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "blob_file.h"

namespace aysfs {

namespace {

// Reads up to this size at an offset that does not continue the previous read are random
// access (the kernel's sequential read-ahead asks for more, 16 KiB at its smallest).
constexpr size_t kRandomReadMax = 16 << 10;

}  // namespace

ReadPath::ReadPath(const SessionOptions& opts, Counters& counters, Pusher& around, Pusher& files)
    : opts_(opts),
      counters_(counters),
      around_pusher_(around),
      file_pusher_(files),
      touched_(new std::atomic<uint64_t>[kTouchedBits / 64]()) {}

ReadPath::Served ReadPath::Serve(const Node& node, fuse_req_t req, size_t size, off_t off,
                                 Attempt attempt, std::string* absent_md5) {
  const bool first = attempt == Attempt::kFirst;
  const RawEntry& e = node.e();
  if (!S_ISREG(e.mode)) {
    fuse_reply_err(req, EISDIR);
    return Served::kAnswered;
  }
  if (size == 0 || off < 0 || static_cast<uint64_t>(off) >= e.size) {
    fuse_reply_buf(req, nullptr, 0);  // zero-size files never need their blob
    return Served::kAnswered;
  }
  size_t want = static_cast<size_t>(std::min<uint64_t>(size, e.size - off));
  std::string md5 = node.table->Md5Hex(node.index);
  int fd = OpenBlob(BlobPath(opts_.cache_dir, md5), e.size);
  if (fd < 0 && errno == ENOENT) {
    if (auto list = chunks.Find(md5)) {
      if (list->size == e.size && ServeChunks(*list, req, want, off)) {
        if (first) counters_.hits++;
        return Served::kAnswered;
      }
      if (absent_md5) *absent_md5 = std::move(md5);
      return Served::kAbsent;
    }
    errno = ENOENT;
  }
  if (fd < 0) {
    if (errno == ENOENT && first) {
      if (absent_md5) *absent_md5 = std::move(md5);
      return Served::kAbsent;
    }
    counters_.errors++;
    fuse_reply_err(req, EIO);
    return Served::kAnswered;
  }
  if (first) counters_.hits++;
  // Random access: the kernel reads only the pages asked for, a round trip each. Decided before
  // the reply, which lets the reader go on.
  uint64_t chunk = opts_.read_around;
  bool around = chunk > 0 && want <= kRandomReadMax && e.size > chunk && off != 0 &&
                !Continues(e.ino, static_cast<uint64_t>(off), off + want) &&
                Touch(e.ino, static_cast<uint64_t>(off) / chunk);
  // Small files read from the start, one after another in a directory: a walk (cat, tar, cp
  // -r, grep -r). The second such read in a directory pushes the small files after this one.
  bool siblings = first && off == 0 && e.size <= opts_.push_files && e.parent != kNone &&
                  Touch(node.table->at(e.parent).ino, kDirectoryMark);
  int rc;
  if (e.size >= opts_.splice_min_size) {
    // Large files: let the kernel move pages from the cache file to the reply (splice).
    fuse_bufvec buf = FUSE_BUFVEC_INIT(want);
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = fd;
    buf.buf[0].pos = off;
    counters_.read_bytes +=
        want;  // before the reply: a reader that sees its bytes sees them counted
    rc = fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
  } else {
    thread_local std::vector<char> scratch;
    if (scratch.size() < want) scratch.resize(want);
    if (!ReadFull(fd, scratch.data(), want, off)) {
      close(fd);
      counters_.errors++;
      fuse_reply_err(req, EIO);
      return Served::kAnswered;
    }
    counters_.read_bytes += want;
    rc = fuse_reply_buf(req, scratch.data(), want);
  }
  if (rc != 0) {
    counters_.read_bytes -= want;  // the reader was gone
  } else if (siblings) {
    file_pusher_.Queue(PushJob::Directory(node.table->at(e.parent).ino, node.table, node.index));
  }
  if (rc == 0 && around) {
    // On the pusher thread, after the reply: a push waits for the locks of pages other reads
    // hold, this one's included until it is answered.
    uint64_t from = static_cast<uint64_t>(off) / chunk * chunk;
    uint64_t to = std::min<uint64_t>(from + chunk, e.size);
    std::string path = BlobPath(opts_.cache_dir, md5);
    around_pusher_.Queue(PushJob::Range(e.ino, path, e.size, from, static_cast<uint64_t>(off)));
    around_pusher_.Queue(PushJob::Range(e.ino, path, e.size, off + want, to));
  }
  close(fd);
  return Served::kAnswered;
}

bool ReadPath::ServeChunks(const ChunkList& list, fuse_req_t req, size_t want, off_t off) {
  thread_local std::vector<char> scratch;
  if (scratch.size() < want) scratch.resize(want);
  uint64_t pos = static_cast<uint64_t>(off);
  const uint64_t end = pos + want;
  while (pos < end) {
    size_t i = static_cast<size_t>(pos / list.chunk_size);
    uint64_t start = list.chunk_size * i;
    uint64_t len = std::min<uint64_t>(end, start + list.SizeOf(i)) - pos;
    // A chunk blob is checked against its own MD5 before it is cached, like any blob.
    int fd = OpenBlob(BlobPath(opts_.cache_dir, list.HexOf(i)), list.SizeOf(i));
    if (fd < 0) return false;
    bool ok = ReadFull(fd, scratch.data() + (pos - off), len, static_cast<off_t>(pos - start));
    close(fd);
    if (!ok) return false;
    pos += len;
  }
  counters_.chunk_reads++;
  counters_.read_bytes += want;
  if (fuse_reply_buf(req, scratch.data(), want) != 0) counters_.read_bytes -= want;
  return true;
}

bool ReadPath::Continues(uint64_t ino, uint64_t off, uint64_t end) {
  LastRead& slot = last_reads_[(ino ^ (ino >> 17)) % kLastReads];
  bool seq = slot.ino.load(std::memory_order_relaxed) == ino &&
             slot.end.load(std::memory_order_relaxed) == off;
  slot.ino.store(ino, std::memory_order_relaxed);
  slot.end.store(end, std::memory_order_relaxed);
  return seq;
}

bool ReadPath::Touch(uint64_t ino, uint64_t chunk) {
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

void ReadPath::PushOnLookup(const Node& node) {
  const RawEntry& e = node.e();
  if (!S_ISREG(e.mode) || e.size == 0 || e.size > opts_.push_files) return;
  // Only a blob that is here now: one that lands later was fetched for a read that was
  // answered already (a cold start pushed 56 MB of those, for nothing).
  std::string path = BlobPath(opts_.cache_dir, node.table->Md5Hex(node.index));
  if (access(path.c_str(), F_OK) != 0) return;
  file_pusher_.Queue(PushJob::LookedUp(e.ino, std::move(path), e.size));
}

}  // namespace aysfs
