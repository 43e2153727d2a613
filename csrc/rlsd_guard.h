// How each C ABI shim (rlsd_dist.cpp, rlsd_cuda.cpp) reports failure: the
// work runs inside `guarded`, which returns 0, or -1 after keeping the C++
// exception's message for the calling thread in `last_error`. Each shim
// includes this once and so gets its own `last_error` (anonymous namespace),
// which its `*_last_error()` function hands to Rust.

#pragma once

#include <exception>
#include <string>

namespace {

thread_local std::string last_error;

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return -1;
}

}  // namespace
