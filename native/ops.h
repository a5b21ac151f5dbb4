// The fuse_lowlevel_ops of the file system. Each do_<op> finds what to answer and returns an
// errno; each fs_<op> replies exactly once.
#pragma once

#include <fuse_lowlevel.h>

namespace aysfs {

const fuse_lowlevel_ops& Operations();

}  // namespace aysfs
