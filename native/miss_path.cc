#include "miss_path.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>

namespace aysfs {

MissPath::MissPath(Counters& counters, const TableSet& tables, ReadPath& reads)
    : counters_(counters), tables_(tables), reads_(reads) {}

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
// Hence: MissTable::Expect before registering (an interrupt until MissTable::Park is remembered,
// never answered by the callback), MissTable::Park refuses a request interrupted meanwhile
// (MissPath::Park answers it EINTR, after fuse_req_interrupt_func returned), and after that only
// whoever takes the read out of the MissTable replies to it: the callback answers EINTR only
// when MissTable::Interrupt took it.
void MissPath::OnInterrupt(fuse_req_t req, void* self) {
  MissPath* m = static_cast<MissPath*>(self);
  if (!m->table_.Interrupt(req)) return;
  m->counters_.interrupted++;
  fuse_reply_err(req, EINTR);  // the fetch goes on for the other readers
}

// How long `r` waited since it parked, into the miss-latency histogram.
void MissPath::Observe(const ParkedRead& r, MissTable::Clock::time_point now) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(now - r.parked).count();
  counters_.ObserveMissLatency(us > 0 ? static_cast<uint64_t>(us) : 0);
}

void MissPath::Park(const std::string& md5, uint64_t size, const ParkedRead& in) {
  ParkedRead read = in;
  auto now = MissTable::Clock::now();
  // A read parked again (the next chunk of a chunked file) keeps the time it first parked.
  if (read.parked == MissTable::Clock::time_point{}) read.parked = now;
  if (RecentlyFailed(md5)) {
    counters_.errors++;
    fuse_reply_err(read.req, EIO);
    return;
  }
  counters_.misses++;
  table_.Expect(read.req);
  // May run OnInterrupt at once, under libfuse's lock of this request: no lock of ours is held.
  fuse_req_interrupt_func(read.req, &MissPath::OnInterrupt, this);
  switch (table_.Park(md5, read, now)) {
    case MissTable::Parked::kInterrupted:
      counters_.interrupted++;
      fuse_reply_err(read.req, EINTR);
      return;
    case MissTable::Parked::kJoined:
      return;
    case MissTable::Parked::kFirst:
      counters_.miss_calls++;
      if (on_miss)
        on_miss(md5, size, static_cast<uint64_t>(read.off), read.size);
      else
        Complete(md5, EIO);
      return;
  }
}

std::vector<std::string> MissPath::Progress(const std::vector<std::string>& md5s) {
  if (!md5s.empty()) table_.Progress(md5s, MissTable::Clock::now());
  return table_.TakeAbandoned();
}

bool MissPath::RecentlyFailed(const std::string& md5) {
  std::lock_guard<std::mutex> lock(failed_mu_);
  if (failed_.empty()) return false;
  auto it = failed_.find(md5);
  if (it == failed_.end()) return false;
  if (it->second > MissTable::Clock::now()) return true;
  failed_.erase(it);
  return false;
}

void MissPath::RememberFailure(const std::string& md5) {
  auto now = MissTable::Clock::now();
  std::lock_guard<std::mutex> lock(failed_mu_);
  for (auto it = failed_.begin(); it != failed_.end();)  // stays tiny: entries live 250 ms
    it = it->second <= now ? failed_.erase(it) : std::next(it);
  failed_[md5] = now + kFailureMemory;
}

void MissPath::Complete(const std::string& md5, int err) {
  // Reads of a chunked file whose chunks are still absent: parked again once complete_mu_ is
  // let go (Park calls out, through on_miss, holding none of our locks).
  std::vector<std::pair<std::string, ParkedRead>> again;
  {
    std::shared_lock<std::shared_mutex> serving(complete_mu_);
    std::vector<ParkedRead> reads = table_.Take(md5);
    if (reads.empty()) return;
    if (err != 0) {
      counters_.miss_failures++;
      RememberFailure(md5);
    }
    auto now = MissTable::Clock::now();
    for (const ParkedRead& r : reads) {
      Node node;
      if (err != 0 || !tables_.Resolve(r.ino, &node)) {
        Observe(r, now);
        counters_.errors++;
        fuse_reply_err(r.req, EIO);
        continue;
      }
      std::string absent;
      if (reads_.Serve(node, r.req, r.size, r.off, ReadPath::Attempt::kAfterFetch, &absent) ==
          ReadPath::Served::kAbsent)
        again.emplace_back(std::move(absent), r);  // still waiting: observed when answered
      else
        Observe(r, now);
    }
  }
  for (auto& [blob, r] : again) {
    Node node;
    uint64_t size = tables_.Resolve(r.ino, &node) ? node.e().size : 0;
    Park(blob, size, r);
  }
}

void MissPath::ServeVerified(const std::string& md5, const char* data, size_t len) {
  std::shared_lock<std::shared_mutex> serving(complete_mu_);
  std::vector<ParkedRead> reads = table_.Take(md5);
  auto now = MissTable::Clock::now();
  for (const ParkedRead& r : reads) {
    Observe(r, now);
    Node node;
    if (!tables_.Resolve(r.ino, &node)) {
      counters_.errors++;
      fuse_reply_err(r.req, EIO);
      continue;
    }
    const RawEntry& e = node.e();
    if (!S_ISREG(e.mode) || e.size != len || node.table->Md5Hex(node.index) != md5) {
      // Not these bytes (the table changed meanwhile): ask the cache. (A chunked file whose
      // chunks are not there is not parked again from here: EIO, as for a blob not there.)
      if (reads_.Serve(node, r.req, r.size, r.off, ReadPath::Attempt::kAfterFetch) ==
          ReadPath::Served::kAbsent) {
        counters_.errors++;
        fuse_reply_err(r.req, EIO);
      }
      continue;
    }
    size_t n = 0;
    if (r.off >= 0 && static_cast<uint64_t>(r.off) < len)
      n = std::min(r.size, len - static_cast<size_t>(r.off));
    counters_.read_bytes += n;
    if (fuse_reply_buf(r.req, n > 0 ? data + r.off : nullptr, n) != 0) counters_.read_bytes -= n;
  }
}

void MissPath::FailStalled(MissTable::Clock::time_point cutoff) {
  // No progress for the whole window: its readers get EIO, and the miss worker learns at its
  // next Progress() report that the fetch is to end.
  for (auto& miss : table_.TakeStalled(cutoff)) {
    counters_.miss_timeouts++;
    RememberFailure(miss.md5);
    for (auto& r : miss.reads) {
      counters_.errors++;
      fuse_reply_err(r.req, EIO);
    }
  }
}

void MissPath::FailAll() {
  // The connection is gone; replying frees the requests still parked.
  std::unique_lock<std::shared_mutex> no_replies(complete_mu_);
  for (auto& r : table_.TakeAll()) fuse_reply_err(r.req, EIO);
}

}  // namespace aysfs
