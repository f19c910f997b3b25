// The workspace pool: a mutex-guarded free list; the lock is held only to move a buffer between lists.
#include "workspace.hpp"

#include <convgemm/error.hpp>

#include <algorithm>
#include <cstdint>
#include <new>
#include <string>

namespace convgemm {

WorkspacePool::Lease::~Lease() {
  if (pool_ != nullptr) pool_->give_back(bytes_);
}

WorkspacePool::Lease WorkspacePool::lease(std::span<std::byte> caller_workspace, size_t bytes_needed) {
  if (!caller_workspace.empty()) {
    if (caller_workspace.size() < bytes_needed) {
      throw Error(Status::invalid_argument, "workspace",
                  std::to_string(caller_workspace.size()) + " bytes given, " + std::to_string(bytes_needed) +
                      " needed (see workspace_bytes())");
    }
    if (reinterpret_cast<uintptr_t>(caller_workspace.data()) % alignof(float) != 0) {
      throw Error(Status::invalid_argument, "workspace", "is not aligned to a float boundary");
    }
    return Lease(nullptr, caller_workspace);
  }
  if (bytes_needed == 0) return Lease(nullptr, {});

  std::lock_guard lock(mutex_);
  // Best fit, so that the large buffers of backward-weights stay free for the calls that need them.
  auto fits = idle_.end();
  for (auto it = idle_.begin(); it != idle_.end(); ++it) {
    if (it->size >= bytes_needed && (fits == idle_.end() || it->size < fits->size)) fits = it;
  }
  if (fits == idle_.end()) {
    try {
      auto* raw = static_cast<std::byte*>(::operator new[](bytes_needed, std::align_val_t{workspace_alignment}));
      idle_.push_back(Buffer{std::unique_ptr<std::byte[], AlignedFree>(raw), bytes_needed});
    } catch (const std::bad_alloc&) {
      throw Error(Status::out_of_memory, "workspace", "cannot allocate " + std::to_string(bytes_needed) + " bytes");
    }
    fits = std::prev(idle_.end());
  }
  on_loan_.push_back(std::move(*fits));
  idle_.erase(fits);
  return Lease(this, {on_loan_.back().data.get(), bytes_needed});
}

void WorkspacePool::give_back(std::span<std::byte> bytes) {
  std::lock_guard lock(mutex_);
  auto it =
      std::find_if(on_loan_.begin(), on_loan_.end(), [&](const Buffer& b) { return b.data.get() == bytes.data(); });
  idle_.push_back(std::move(*it));
  on_loan_.erase(it);
}

}  // namespace convgemm
