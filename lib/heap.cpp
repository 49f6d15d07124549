// mp::heap::SharedBlock — one anonymous shared mapping per block.
#include "mp/heap.hpp"

#include <stdexcept>

#include "platform/handle.hpp"
#include "platform/shared_memory.hpp"

namespace mp::heap {

struct SharedBlock::Mapping {
  platform::Handle handle = platform::kInvalidHandle;
  void* address = nullptr;
  std::size_t size = 0;
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    platform::unmap(address, size);
    platform::close_handle(handle);
  }
};

SharedBlock::SharedBlock(std::size_t size) : mapping_(std::make_shared<Mapping>()) {
  mapping_->handle = platform::create_shared_memory(size);
  mapping_->size = size;
  mapping_->address = platform::map_shared(mapping_->handle, size);
}

void* SharedBlock::data() const noexcept { return mapping_ ? mapping_->address : nullptr; }
std::size_t SharedBlock::size() const noexcept { return mapping_ ? mapping_->size : 0; }

std::uint64_t SharedBlock::send() const {
  if (!mapping_) throw std::logic_error("mp: cannot send an empty SharedBlock");
  return reduction::send_handle(mapping_->handle, "Shared memory");
}

void SharedBlock::attach(std::uint64_t token, std::uint64_t size) {
  auto m = std::make_shared<Mapping>();
  m->handle = static_cast<platform::Handle>(reduction::receive_handle(token));
  if (platform::shared_memory_size(m->handle) < size)
    throw UnpicklingError("mp: shared memory received is smaller than announced");
  m->size = static_cast<std::size_t>(size);
  m->address = platform::map_shared(m->handle, m->size);
  mapping_ = std::move(m);
}

}  // namespace mp::heap
