// The `user.aysfs.status` document the mount's root serves (and `status()` returns): the
// engine's counters (counters.h) and the parts JavaScript sets (`pipeline`, `mount`), as one
// JSON text. No Node-API here.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "counters.h"

namespace aysfs {

class StatusDocument {
 public:
  // Sets one part: a JSON text.
  void Set(const std::string& part, std::string json);
  std::string Render(const std::string& mountpoint, const Counters& counters,
                     const Gauges& gauges) const;

 private:
  mutable std::mutex mu_;                     // a leaf
  std::map<std::string, std::string> parts_;  // guarded by mu_; JSON texts
};

}  // namespace aysfs
