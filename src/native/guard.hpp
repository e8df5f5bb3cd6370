// The conventions every entry point of the native layer keeps: `extern "C"`,
// 0 on success and -1 on failure with the message kept per thread for
// `asl_last_error()`, and no exception across the boundary (one crossing
// `extern "C"` would abort the process).

#pragma once

#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace asl_detail {
void set_last_error(const std::string& message);
}  // namespace asl_detail

#define ASL_GUARD(...)                                          \
  try {                                                         \
    __VA_ARGS__                                                 \
  } catch (const c10::Error& e) {                               \
    asl_detail::set_last_error(e.what_without_backtrace());     \
    return -1;                                                  \
  } catch (const std::exception& e) {                           \
    asl_detail::set_last_error(e.what());                       \
    return -1;                                                  \
  } catch (...) {                                               \
    asl_detail::set_last_error("unknown C++ exception");        \
    return -1;                                                  \
  }                                                             \
  return 0;
