// Workspace for operator calls: either the caller's buffer or one leased from the plan's pool. The pool keeps
// buffers between calls, so a plan allocates once per concurrent caller rather than once per call.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

namespace convgemm {

// Slots inside a workspace start on cache-line boundaries.
inline constexpr size_t workspace_alignment = 64;

inline size_t round_up_to_alignment(size_t bytes) {
  return (bytes + workspace_alignment - 1) / workspace_alignment * workspace_alignment;
}

class WorkspacePool {
 public:
  // A buffer on loan; returns to the pool when destroyed.
  class Lease {
   public:
    Lease(WorkspacePool* pool, std::span<std::byte> bytes) : pool_(pool), bytes_(bytes) {}
    Lease(Lease&& other) noexcept : pool_(std::exchange(other.pool_, nullptr)), bytes_(other.bytes_) {}
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    std::span<std::byte> bytes() const { return bytes_; }

   private:
    WorkspacePool* pool_;  // null: the caller's own buffer, nothing to return
    std::span<std::byte> bytes_;
  };

  // The caller's workspace when given (checked for size and float alignment), else a pooled buffer.
  Lease lease(std::span<std::byte> caller_workspace, size_t bytes_needed);

 private:
  struct AlignedFree {
    void operator()(std::byte* p) const { ::operator delete[](p, std::align_val_t{workspace_alignment}); }
  };
  struct Buffer {
    std::unique_ptr<std::byte[], AlignedFree> data;
    size_t size;
  };
  void give_back(std::span<std::byte> bytes);

  std::mutex mutex_;
  std::vector<Buffer> idle_;  // not on loan
  std::vector<Buffer> on_loan_;
};

}  // namespace convgemm
