#include "misses.h"

namespace aysfs {

bool MissTable::Park(const std::string& md5, const ParkedRead& read, Clock::time_point deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  auto [it, inserted] = misses_.try_emplace(md5);
  if (inserted) it->second.deadline = deadline;
  it->second.reads.push_back(read);
  parked_++;
  return inserted;
}

std::vector<ParkedRead> MissTable::Take(const std::string& md5) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = misses_.find(md5);
  if (it == misses_.end()) return {};
  std::vector<ParkedRead> out = std::move(it->second.reads);
  misses_.erase(it);
  parked_ -= out.size();
  return out;
}

std::vector<ExpiredMiss> MissTable::TakeExpired(Clock::time_point now) {
  std::vector<ExpiredMiss> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = misses_.begin(); it != misses_.end();) {
    if (it->second.deadline <= now) {
      parked_ -= it->second.reads.size();
      out.push_back({it->first, std::move(it->second.reads)});
      it = misses_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<ParkedRead> MissTable::TakeAll() {
  std::vector<ParkedRead> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [md5, miss] : misses_) out.insert(out.end(), miss.reads.begin(), miss.reads.end());
  misses_.clear();
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
