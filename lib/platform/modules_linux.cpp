// Linux part of platform/system.hpp: locating code in the loaded ELF modules by build id
// (dl_iterate_phdr, NT_GNU_BUILD_ID), for spawn. FreeBSD has the same calls; macOS would walk the
// dyld images and compare LC_UUIDs instead (docs/DESIGN.md §6).
#include <dlfcn.h>
#include <elf.h>
#include <link.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "mp/errors.hpp"
#include "platform/system.hpp"

namespace mp::platform {

// ---- ELF modules

namespace {

std::string build_id_of(const dl_phdr_info* info) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_NOTE) continue;
    const auto* p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
    const auto* end = p + ph.p_memsz;
    while (p + sizeof(ElfW(Nhdr)) <= end) {
      const auto* note = reinterpret_cast<const ElfW(Nhdr)*>(p);
      const std::size_t name_size = (note->n_namesz + 3) & ~std::size_t{3};
      const std::size_t desc_size = (note->n_descsz + 3) & ~std::size_t{3};
      const auto* name = p + sizeof(ElfW(Nhdr));
      const auto* desc = name + name_size;
      if (note->n_type == NT_GNU_BUILD_ID && note->n_namesz == 4 &&
          std::memcmp(name, "GNU", 4) == 0)
        return to_hex(desc, note->n_descsz);
      p = desc + desc_size;
    }
  }
  return {};
}

bool contains(const dl_phdr_info* info, std::uintptr_t address) {
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD) continue;
    const std::uintptr_t start = info->dlpi_addr + ph.p_vaddr;
    if (address >= start && address < start + ph.p_memsz) return true;
  }
  return false;
}

struct Search {
  std::uintptr_t address = 0;           // locate: the address to find
  const std::string* module = nullptr;  // resolve: the module to find
  bool found = false;
  bool first = true;
  CodeLocation loc;
  std::uintptr_t base = 0;
};

int visit(dl_phdr_info* info, size_t, void* data) {
  auto* s = static_cast<Search*>(data);
  // The first object reported is the main executable, whatever its dlpi_name says.
  const bool is_main = s->first;
  s->first = false;
  const std::string name =
      is_main ? std::string() : std::string(info->dlpi_name ? info->dlpi_name : "");
  if (s->module) {
    if (name != *s->module) return 0;
  } else if (!contains(info, s->address)) {
    return 0;
  }
  s->found = true;
  s->base = info->dlpi_addr;
  s->loc.module = name;
  s->loc.build_id = build_id_of(info);
  return 1;
}

}  // namespace

CodeLocation locate_code(const void* address) {
  Search s;
  s.address = reinterpret_cast<std::uintptr_t>(address);
  ::dl_iterate_phdr(&visit, &s);
  if (!s.found) throw std::invalid_argument("mp: the target function is in no loaded module");
  s.loc.offset = s.address - s.base;
  return s.loc;
}

void* resolve_code(const CodeLocation& loc) {
  Search s;
  s.module = &loc.module;
  ::dl_iterate_phdr(&visit, &s);
  if (!s.found && !loc.module.empty()) {
    // A library the parent had loaded with dlopen: load it here too (kept for the process' life).
    if (!::dlopen(loc.module.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
      const char* err = ::dlerror();
      throw ProcessError("mp spawn: cannot load module '" + loc.module +
                         "' in the child: " + (err ? err : "unknown error"));
    }
    s = Search{};
    s.module = &loc.module;
    ::dl_iterate_phdr(&visit, &s);
  }
  if (!s.found)
    throw ProcessError("mp spawn: module '" + loc.module + "' is not loaded in the child");
  if (s.loc.build_id != loc.build_id) {
    throw ProcessError("mp spawn: the binary of module '" +
                       (loc.module.empty() ? std::string("<main executable>") : loc.module) +
                       "' differs between parent and child (build id " + loc.build_id + " vs " +
                       s.loc.build_id + "); was it rebuilt or replaced while the parent ran?");
  }
  return reinterpret_cast<void*>(s.base + loc.offset);
}

}  // namespace mp::platform
