#include "status.h"

#include <cstdio>
#include <sstream>

namespace aysfs {

namespace {

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace

void StatusDocument::Set(const std::string& part, std::string json) {
  std::lock_guard<std::mutex> lock(mu_);
  parts_[part] = std::move(json);
}

std::string StatusDocument::Render(const std::string& mountpoint, const Counters& counters,
                                   const Gauges& gauges) const {
  std::ostringstream o;
  o << "{\"version\":1,\"mountpoint\":" << JsonString(mountpoint) << ",\"engine\":{";
  o << "\"ops\":{";
  const char* sep = "";
  ForEachOp(counters, [&](const char* name, uint64_t value) {
    o << sep << "\"" << name << "\":" << value;
    sep = ",";
  });
  o << "}";
  ForEachStat(counters, gauges,
              [&](const char* name, uint64_t value) { o << ",\"" << name << "\":" << value; });
  o << "}";
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [part, json] : parts_) o << "," << JsonString(part) << ":" << json;
  o << "}";
  return o.str();
}

}  // namespace aysfs
