// Marks what the shared library exports. convgemm is built with hidden visibility, so a C++ function or class is
// part of the binary interface only when it carries CONVGEMM_CXX_API (the C ABI has CONVGEMM_API in convgemm.h).
#pragma once

// Exception classes need it as well: their typeinfo must be one object across the library and its users, or a
// catch in the host would not match a throw in the library.
#if defined(_WIN32)
#define CONVGEMM_CXX_API
#elif defined(__GNUC__) || defined(__clang__)
#define CONVGEMM_CXX_API __attribute__((visibility("default")))
#else
#define CONVGEMM_CXX_API
#endif
