# The Windows build (included by CMakeLists.txt when cross-compiling with
# cmake/mingw-w64-x86_64.cmake, or on Windows). What is ported so far is built and tested; the
# rest is listed, so nobody mistakes its absence for a build failure.
set(MP_WIN32_PORTED handle shared_memory wait process system io handle_passing modules)
# The toolkit's robust lock, which stands on the wait object alone.
set(MP_WIN32_TOOLKIT futex_lock spin)
set(MP_WIN32_NOT_PORTED
    "fork and forkserver (process.hpp's fork_process, on_exit_first, inheritable_descriptors, close_descriptors_except: Windows has no fork, CPython neither)"
    "the benchmarks of the library (bench/; bench_platform_win32 measures the OS layer)")
set(MP_PLATFORM_SOURCES)
foreach(part ${MP_WIN32_PORTED})
  list(APPEND MP_PLATFORM_SOURCES ${PROJECT_SOURCE_DIR}/lib/platform/${part}_win32.cpp)
endforeach()
# Shared with the Linux build: demangling on the Itanium C++ ABI (mingw-w64 uses it too) and the
# OS-independent parts of io.hpp and system.hpp.
list(APPEND MP_PLATFORM_SOURCES ${PROJECT_SOURCE_DIR}/lib/platform/system_cxxabi.cpp
     ${PROJECT_SOURCE_DIR}/lib/platform/io_common.cpp ${PROJECT_SOURCE_DIR}/lib/platform/system_common.cpp
     ${PROJECT_SOURCE_DIR}/lib/platform/process_common.cpp)
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
target_link_libraries(mp_platform PUBLIC Threads::Threads synchronization shell32 ws2_32 ntdll)
target_compile_options(mp_platform PRIVATE ${MP_WARNING_FLAGS})
# Spawned children find functions by (module, offset) and check the module's build id: with
# --build-id, mingw-w64's ld writes a CodeView (RSDS) record (lib/platform/modules_win32.cpp).
target_link_options(mp_platform INTERFACE -Wl,--build-id)

# ---- the library proper (lib/*.cpp, lib/support/*.cpp): spawn is the only start method on
# Windows (lib/context.cpp), so the fork and forkserver files and the POSIX spawn launcher are left
# out; lib/popen_spawn_win32.cpp launches.
file(GLOB MP_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/lib/*.cpp ${PROJECT_SOURCE_DIR}/lib/support/*.cpp)
set(MP_WIN32_LEFT_OUT popen_fork popen_forkserver forkserver popen_spawn_posix)
foreach(left_out ${MP_WIN32_LEFT_OUT})
  list(REMOVE_ITEM MP_SOURCES ${PROJECT_SOURCE_DIR}/lib/${left_out}.cpp)
endforeach()
foreach(part ${MP_WIN32_TOOLKIT})
  list(REMOVE_ITEM MP_SOURCES ${PROJECT_SOURCE_DIR}/lib/support/${part}.cpp)  # in mp_platform
endforeach()
# cereal is header-only: its headers are exposed through a directory of their own (adding
# /usr/include would bring glibc's headers into the mingw build).
find_path(MP_HOST_CEREAL_DIR cereal/cereal.hpp PATHS /usr/include NO_CMAKE_FIND_ROOT_PATH REQUIRED)
set(MP_CEREAL_SHIM ${PROJECT_BINARY_DIR}/cereal-include)
file(MAKE_DIRECTORY ${MP_CEREAL_SHIM})
file(CREATE_LINK ${MP_HOST_CEREAL_DIR}/cereal ${MP_CEREAL_SHIM}/cereal SYMBOLIC)
add_library(mp STATIC ${MP_SOURCES})
add_library(mp::mp ALIAS mp)
target_include_directories(mp PRIVATE ${PROJECT_SOURCE_DIR}/lib)
target_include_directories(mp SYSTEM PUBLIC ${MP_CEREAL_SHIM})
target_compile_definitions(mp PRIVATE MP_BUILDING_LIBRARY)
target_link_libraries(mp PUBLIC mp_platform)
target_compile_options(mp PRIVATE ${MP_WARNING_FLAGS})
message(STATUS "mp for Windows: the library, without ${MP_WIN32_LEFT_OUT} (spawn is the only start method)")

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
  # The library's tests that apply to Windows (spawn only; tests/main.cpp calls freeze_support),
  # each with its POSIX-only tests behind #ifndef _WIN32; the others, and why, are listed in
  # MP_WIN32_TESTS_LEFT_OUT.
  set(MP_WIN32_TESTS test_process test_synchronize test_connection test_queues test_sharedctypes
      test_reduction test_futex_lock test_threading test_auth test_spin
      test_shared_memory test_managers test_pool test_futures test_heap)
  set(MP_WIN32_TESTS_LEFT_OUT
      "test_fork_safety, test_forkserver: fork and the forkserver do not exist on Windows"
      "test_reliability: POSIX process guarantees (posix_spawn, prctl, signals, /proc); its Windows forms are in test_process (DaemonEndsWithItsKilledOwner, KilledOwnerLeavesNoChildSectionOrPipe, NonDaemonicChildOutlivesItsKilledParent, SignalsAfterReapGoNowhere, TwentyProcessesThroughBarrierAndQueue)"
      "test_shared_memory's POSIX-only tests: /dev/shm modes and listing, the resource tracker with forked children, CPython and the probe program run through a shell (ReadableByCPythonAndBack, UnrelatedProcessAttachAndExitLeavesSegment, ProgramKilledLeavesNothing, ForkedChildrenKeepTheCreatorsSegments)"
      "test_managers' POSIX-only tests: abstract sockets and peers of another user (DefaultAddressIsPrivateAbstractSocket; Windows has DefaultAddressIsANamedPipe), the umask (StartLeavesTheUmaskAlone), RLIMIT_NOFILE and /proc CPU times (OutOfDescriptorsBacksOffAndRecovers)"
      "test_heap: Heap.OutOfDescriptorsIsAnOSErrorNamingTheLimit (rlimits: Windows has no descriptor limit)"
      "test_pool: WorkersDieWithOwner's SIGINT case (Ctrl-C is a console event for a process group on Windows, not a signal)"
      "test_process: fork-only tests, deleting a running executable")
  foreach(item ${MP_WIN32_TESTS_LEFT_OUT})
    message(STATUS "mp for Windows: test left out: ${item}")
  endforeach()
  # The probe program test_process runs through cmd.exe, beside the test binaries.
  add_executable(mp_probe ${PROJECT_SOURCE_DIR}/tests/programs/mp_probe.cpp)
  target_link_libraries(mp_probe PRIVATE mp::mp)
  target_include_directories(mp_probe PRIVATE ${PROJECT_SOURCE_DIR}/lib)
  target_compile_options(mp_probe PRIVATE ${MP_WARNING_FLAGS})
  foreach(name ${MP_WIN32_TESTS})
    add_executable(${name} ${PROJECT_SOURCE_DIR}/tests/${name}.cpp ${PROJECT_SOURCE_DIR}/tests/main.cpp)
    target_link_libraries(${name} PRIVATE mp::mp GTest::gtest)
    target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests ${PROJECT_SOURCE_DIR}/lib)
    target_compile_definitions(${name} PRIVATE MP_PROBE_PATH="" MP_FORK_FIRST_ENTRY_PATH="")
    target_compile_options(${name} PRIVATE ${MP_WARNING_FLAGS})
    set(filter "*")
    if(name STREQUAL "test_queues")
      # OneGibMessage passes but takes 34 s under Wine (1 GiB copied 4 times).
      set(filter "-*OneGibMessage*")
    endif()
    gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60 TEST_FILTER "${filter}"
                         PROPERTIES TIMEOUT 120 LABELS "windows")
  endforeach()
  add_dependencies(test_process mp_probe)
endif()

# The tutorial samples, run under Wine by samples/check_sample.py and checked as on Linux (spawn
# only; global_variable_fork is about fork).
if(MP_BUILD_SAMPLES)
  enable_testing()
  file(GLOB MP_SAMPLE_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/samples/*.cpp)
  list(REMOVE_ITEM MP_SAMPLE_SOURCES ${PROJECT_SOURCE_DIR}/samples/global_variable_fork.cpp)
  foreach(src ${MP_SAMPLE_SOURCES})
    get_filename_component(name ${src} NAME_WE)
    add_executable(${name} ${src})
    target_link_libraries(${name} PRIVATE mp::mp)
    target_compile_options(${name} PRIVATE ${MP_WARNING_FLAGS})
  endforeach()
  set(MP_SAMPLE_START_METHODS spawn)
  set(MP_SAMPLE_ENVIRONMENT "MP_SAMPLE_EMULATOR=wine;MP_SAMPLE_OS=windows")
  include(${PROJECT_SOURCE_DIR}/samples/tests.cmake)
endif()

if(MP_BUILD_BENCH)
  # Run by hand under Wine: the ratios to raw Win32 are the figures (absolute times under Wine
  # say little).
  add_executable(bench_platform_win32 ${PROJECT_SOURCE_DIR}/bench/win32/bench_platform_win32.cpp)
  target_link_libraries(bench_platform_win32 PRIVATE mp_platform)
  target_compile_options(bench_platform_win32 PRIVATE ${MP_WARNING_FLAGS})
  # mp (spawn) beside raw Win32 (process start, event ping-pong, mapped ring, named pipe, locks).
  add_executable(bench_mp_win32 ${PROJECT_SOURCE_DIR}/bench/win32/bench_mp_win32.cpp)
  target_link_libraries(bench_mp_win32 PRIVATE mp::mp)
  target_include_directories(bench_mp_win32 PRIVATE ${PROJECT_SOURCE_DIR}/lib)
  target_compile_options(bench_mp_win32 PRIVATE ${MP_WARNING_FLAGS})
endif()
