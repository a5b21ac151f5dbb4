// Keeps the prebuild's glibc floor at 2.34 (Ubuntu 22.04, Debian 12): the static libstdc++ of
// GCC 12 refers to arc4random@GLIBC_2.36 (std::random_device, which we never use). A hidden
// definition here satisfies that reference without the newer glibc.
#include <sys/random.h>

#include <cstdint>

extern "C" __attribute__((visibility("hidden"))) uint32_t arc4random(void) {
  uint32_t v = 0;
  while (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) {
  }
  return v;
}
