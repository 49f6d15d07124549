// Windows part of platform/system.hpp: locating code in the loaded PE modules, for spawn.
// A module is its path (GetModuleFileNameW; "" for the executable); an address is its offset from
// the module's base (the image is relocated as a whole, so the offset holds in every process);
// the build id is the image's CodeView record, "RSDS" + GUID + age (what PDB lookups use, the
// counterpart of ELF's NT_GNU_BUILD_ID: mingw-w64's ld writes one with -Wl,--build-id, which
// cmake/windows.cmake passes to every program linking mp). An image without one falls back to
// "pe:" + its PE header's TimeDateStamp, SizeOfImage and CheckSum: weaker (a rebuild at the same
// second with the same size passes), and said so by the prefix.
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "mp/errors.hpp"
#include "platform/system.hpp"
#include "platform/win32.hpp"

namespace mp::platform {

namespace {

const IMAGE_NT_HEADERS* nt_headers(HMODULE m) {
  const auto* base = reinterpret_cast<const unsigned char*>(m);
  const auto* dos = reinterpret_cast<const IMAGE_DOS_HEADER*>(base);
  if (dos->e_magic != IMAGE_DOS_SIGNATURE) return nullptr;
  const auto* nt = reinterpret_cast<const IMAGE_NT_HEADERS*>(base + dos->e_lfanew);
  if (nt->Signature != IMAGE_NT_SIGNATURE ||
      nt->OptionalHeader.Magic != IMAGE_NT_OPTIONAL_HDR_MAGIC)
    return nullptr;
  return nt;
}

// The CodeView PDB 7.0 record: "RSDS", the GUID, the age, then the PDB path.
struct CodeViewRecord {
  char signature[4];
  unsigned char guid[16];
  std::uint32_t age;
};

std::string build_id_of(HMODULE m) {
  const IMAGE_NT_HEADERS* nt = nt_headers(m);
  if (!nt) return {};
  const auto* base = reinterpret_cast<const unsigned char*>(m);
  const IMAGE_OPTIONAL_HEADER& opt = nt->OptionalHeader;
  if (opt.NumberOfRvaAndSizes > IMAGE_DIRECTORY_ENTRY_DEBUG) {
    const IMAGE_DATA_DIRECTORY& dir = opt.DataDirectory[IMAGE_DIRECTORY_ENTRY_DEBUG];
    if (dir.VirtualAddress != 0 && dir.Size >= sizeof(IMAGE_DEBUG_DIRECTORY) &&
        dir.VirtualAddress + dir.Size <= opt.SizeOfImage) {
      const auto* entries =
          reinterpret_cast<const IMAGE_DEBUG_DIRECTORY*>(base + dir.VirtualAddress);
      for (std::size_t i = 0; i < dir.Size / sizeof(IMAGE_DEBUG_DIRECTORY); ++i) {
        const IMAGE_DEBUG_DIRECTORY& e = entries[i];
        if (e.Type != IMAGE_DEBUG_TYPE_CODEVIEW || e.AddressOfRawData == 0 ||
            e.SizeOfData < sizeof(CodeViewRecord) ||
            e.AddressOfRawData + sizeof(CodeViewRecord) > opt.SizeOfImage)
          continue;  // not loaded with the image (only in the file), or another kind
        CodeViewRecord cv;
        std::memcpy(&cv, base + e.AddressOfRawData, sizeof cv);
        if (std::memcmp(cv.signature, "RSDS", 4) != 0) continue;
        unsigned char age[4];
        std::memcpy(age, &cv.age, sizeof age);
        return to_hex(cv.guid, sizeof cv.guid) + to_hex(age, sizeof age);
      }
    }
  }
  const std::uint32_t fields[3] = {nt->FileHeader.TimeDateStamp, opt.SizeOfImage, opt.CheckSum};
  return "pe:" + to_hex(fields, sizeof fields);
}

std::string display(const CodeLocation& loc) {
  return loc.module.empty() ? std::string("<main executable>") : loc.module;
}

}  // namespace

CodeLocation locate_code(const void* address) {
  HMODULE m = nullptr;
  if (!::GetModuleHandleExW(
          GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
          static_cast<LPCWSTR>(address), &m) ||
      !m)
    throw std::invalid_argument("mp: the target function is in no loaded module");
  CodeLocation loc;
  if (m != ::GetModuleHandleW(nullptr)) loc.module = win32::module_path(m);
  loc.build_id = build_id_of(m);
  loc.offset = reinterpret_cast<std::uintptr_t>(address) - reinterpret_cast<std::uintptr_t>(m);
  return loc;
}

void* resolve_code(const CodeLocation& loc) {
  HMODULE m = nullptr;
  if (loc.module.empty()) {
    m = ::GetModuleHandleW(nullptr);
  } else {
    const std::wstring path = win32::widen(loc.module);
    m = ::GetModuleHandleW(path.c_str());
    // A DLL the parent had loaded with LoadLibrary: load it here too (kept for the process' life),
    // its own dependencies looked up beside it.
    if (!m) m = ::LoadLibraryExW(path.c_str(), nullptr, LOAD_WITH_ALTERED_SEARCH_PATH);
    if (!m)
      throw ProcessError("mp spawn: cannot load module '" + loc.module +
                         "' in the child: " + win32::error_text(::GetLastError()));
  }
  const std::string id = build_id_of(m);
  if (id != loc.build_id)
    throw ProcessError("mp spawn: the binary of module '" + display(loc) +
                       "' differs between parent and child (build id " + loc.build_id + " vs " +
                       id + "); was it rebuilt or replaced while the parent ran?");
  const IMAGE_NT_HEADERS* nt = nt_headers(m);
  if (!nt || loc.offset >= nt->OptionalHeader.SizeOfImage)
    throw ProcessError("mp spawn: offset " + std::to_string(loc.offset) + " is outside module '" +
                       display(loc) + "'");
  return reinterpret_cast<unsigned char*>(m) + loc.offset;
}

namespace win32 {

std::string module_path(HMODULE module) {
  std::wstring buf(MAX_PATH, L'\0');
  for (;;) {
    const DWORD n = ::GetModuleFileNameW(module, buf.data(), static_cast<DWORD>(buf.size()));
    if (n == 0) throw_last_error("GetModuleFileNameW");
    if (n < buf.size()) {
      buf.resize(n);
      return narrow(buf);
    }
    buf.resize(buf.size() * 2);  // truncated: long paths (\\?\...) exceed MAX_PATH
  }
}

}  // namespace win32

}  // namespace mp::platform
