# The Windows build (included by CMakeLists.txt when cross-compiling with
# cmake/mingw-w64-x86_64.cmake, or on Windows). What is ported so far is built and tested; the
# rest is listed, so nobody mistakes its absence for a build failure.
set(MP_WIN32_PORTED handle shared_memory wait process system io handle_passing crypto modules)
# The toolkit's robust lock, which stands on the wait object alone.
set(MP_WIN32_TOOLKIT futex_lock spin)
set(MP_WIN32_NOT_PORTED
    "fork and forkserver (process.hpp's fork_process, on_exit_first, inheritable_descriptors, close_descriptors_except: Windows has no fork, CPython neither)"
    "the library proper (lib/*.cpp; of lib/support/ only futex_lock and spin: Process, synchronize, queues, connection, managers, pool; what each file lacks: docs/DESIGN.md section 6)"
    "the library's tests (tests/test_*.cpp: they need Process) and the samples and benchmarks")
set(MP_PLATFORM_SOURCES)
foreach(part ${MP_WIN32_PORTED})
  list(APPEND MP_PLATFORM_SOURCES ${PROJECT_SOURCE_DIR}/lib/platform/${part}_win32.cpp)
endforeach()
# Shared with the Linux build: demangling on the Itanium C++ ABI (mingw-w64 uses it too) and the
# OS-independent parts of io.hpp and system.hpp.
list(APPEND MP_PLATFORM_SOURCES ${PROJECT_SOURCE_DIR}/lib/platform/system_cxxabi.cpp
     ${PROJECT_SOURCE_DIR}/lib/platform/io_common.cpp ${PROJECT_SOURCE_DIR}/lib/platform/system_common.cpp)
foreach(part ${MP_WIN32_TOOLKIT})
  list(APPEND MP_PLATFORM_SOURCES ${PROJECT_SOURCE_DIR}/lib/support/${part}.cpp)
endforeach()
message(STATUS "mp for Windows: ported OS layer parts: ${MP_WIN32_PORTED}; toolkit: ${MP_WIN32_TOOLKIT}")
foreach(item ${MP_WIN32_NOT_PORTED})
  message(STATUS "mp for Windows: not ported yet (not built): ${item}")
endforeach()

add_library(mp_platform STATIC ${MP_PLATFORM_SOURCES})
target_compile_features(mp_platform PUBLIC cxx_std_20)
target_include_directories(mp_platform PUBLIC ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/lib)
target_compile_definitions(mp_platform PUBLIC _WIN32_WINNT=0x0A00 WIN32_LEAN_AND_MEAN NOMINMAX UNICODE _UNICODE)
target_link_libraries(mp_platform PUBLIC Threads::Threads synchronization shell32 ws2_32 bcrypt ntdll)
target_compile_options(mp_platform PRIVATE ${MP_WARNING_FLAGS})
# Spawned children find functions by (module, offset) and check the module's build id: with
# --build-id, mingw-w64's ld writes a CodeView (RSDS) record (lib/platform/modules_win32.cpp).
target_link_options(mp_platform INTERFACE -Wl,--build-id)

if(MP_BUILD_TESTS)
  enable_testing()
  find_package(GTest REQUIRED)
  include(GoogleTest)
  add_executable(test_platform ${PROJECT_SOURCE_DIR}/tests/platform/test_platform.cpp)
  target_link_libraries(test_platform PRIVATE mp_platform GTest::gtest)
  target_compile_options(test_platform PRIVATE ${MP_WARNING_FLAGS})
  # Listed when ctest runs (not at build time: that would start Wine from the build).
  gtest_discover_tests(test_platform DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60
                       PROPERTIES TIMEOUT 60 LABELS "windows")
endif()

if(MP_BUILD_BENCH)
  # Run by hand under Wine: the ratios to raw Win32 are the figures (absolute times under Wine
  # say little).
  add_executable(bench_platform_win32 ${PROJECT_SOURCE_DIR}/bench/win32/bench_platform_win32.cpp)
  target_link_libraries(bench_platform_win32 PRIVATE mp_platform)
  target_compile_options(bench_platform_win32 PRIVATE ${MP_WARNING_FLAGS})
endif()
