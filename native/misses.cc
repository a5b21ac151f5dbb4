#include "misses.h"

#include <algorithm>

namespace aysfs {

void MissTable::Expect(fuse_req_t req) {
  std::lock_guard<std::mutex> lock(mu_);
  waiting_[req] = Waiting{};
}

MissTable::Parked MissTable::Park(const std::string& md5, const ParkedRead& read,
                                  Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  auto w = waiting_.find(read.req);
  if (w != waiting_.end() && w->second.interrupted) {
    waiting_.erase(w);
    return Parked::kInterrupted;
  }
  if (w == waiting_.end()) w = waiting_.emplace(read.req, Waiting{}).first;
  w->second.md5 = md5;
  auto [it, inserted] = misses_.try_emplace(md5);
  if (inserted) {
    it->second.moved = now;
    // Readers want this blob again: the fetch the backstop gave up on may go on for them.
    abandoned_.erase(md5);
  }
  it->second.reads.push_back(read);
  parked_++;
  return inserted ? Parked::kFirst : Parked::kJoined;
}

bool MissTable::Interrupt(fuse_req_t req) {
  std::lock_guard<std::mutex> lock(mu_);
  auto w = waiting_.find(req);
  if (w == waiting_.end()) return false;  // answered already (or being answered)
  if (w->second.md5.empty()) {
    w->second.interrupted = true;  // between Expect and Park
    return false;
  }
  auto it = misses_.find(w->second.md5);
  waiting_.erase(w);
  if (it == misses_.end()) return false;
  auto& reads = it->second.reads;
  auto r =
      std::find_if(reads.begin(), reads.end(), [req](const ParkedRead& p) { return p.req == req; });
  if (r == reads.end()) return false;
  reads.erase(r);
  parked_--;
  // The miss stays with no reads: its fetch goes on (and fills the cache), and a later read
  // joins it instead of asking again.
  return true;
}

std::vector<ParkedRead> MissTable::TakeLocked(std::unordered_map<std::string, Miss>::iterator it) {
  std::vector<ParkedRead> out = std::move(it->second.reads);
  for (const ParkedRead& r : out) waiting_.erase(r.req);
  parked_ -= out.size();
  misses_.erase(it);
  return out;
}

std::vector<ParkedRead> MissTable::Take(const std::string& md5) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = misses_.find(md5);
  if (it == misses_.end()) return {};
  return TakeLocked(it);
}

void MissTable::Progress(const std::vector<std::string>& md5s, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& md5 : md5s) {
    auto it = misses_.find(md5);
    if (it != misses_.end()) it->second.moved = now;
  }
}

std::vector<StalledMiss> MissTable::TakeStalled(Clock::time_point cutoff) {
  std::vector<StalledMiss> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = misses_.begin(); it != misses_.end();) {
    if (it->second.moved <= cutoff) {
      abandoned_.insert(it->first);
      std::string md5 = it->first;
      auto next = std::next(it);
      out.push_back({std::move(md5), TakeLocked(it)});
      it = next;
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<std::string> MissTable::TakeAbandoned() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out(abandoned_.begin(), abandoned_.end());
  abandoned_.clear();
  return out;
}

std::vector<ParkedRead> MissTable::TakeAll() {
  std::vector<ParkedRead> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [md5, miss] : misses_) out.insert(out.end(), miss.reads.begin(), miss.reads.end());
  misses_.clear();
  waiting_.clear();
  abandoned_.clear();
  parked_ = 0;
  return out;
}

size_t MissTable::parked() const {
  std::lock_guard<std::mutex> lock(mu_);
  return parked_;
}

size_t MissTable::blobs() const {
  std::lock_guard<std::mutex> lock(mu_);
  return misses_.size();
}

}  // namespace aysfs
