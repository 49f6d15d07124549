# Each tutorial sample is a CTest test (label "sample"), checked by check_sample.py, once per start
# method (MP_START_METHOD) except global_variable_fork, which is about fork.
# `ctest --preset samples` (verbose) shows each sample's name and output.
find_package(Python3 COMPONENTS Interpreter)
if(NOT Python3_Interpreter_FOUND)
  message(WARNING "python3 not found: the samples are built but not registered as tests")
  return()
endif()

# mp_sample_test(<sample> <start methods> <check_sample.py mode and arguments>...)
# python3 by its path, not the imported target: a cross-build's emulator (wine) would be put in
# front of a target, run the host's python3 and lose its exit status (check_sample.py runs the
# sample through the emulator itself).
function(mp_sample_test sample methods)
  if(NOT TARGET ${sample})
    return()
  endif()
  foreach(method ${methods})
    add_test(NAME sample.${sample}.${method}
             COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/check_sample.py
                     ${ARGN})
    set_tests_properties(sample.${sample}.${method} PROPERTIES
      LABELS sample TIMEOUT 600 ENVIRONMENT "MP_START_METHOD=${method};${MP_SAMPLE_ENVIRONMENT}")
  endforeach()
endfunction()

set(both "fork;spawn;forkserver")  # every start method
if(DEFINED MP_SAMPLE_START_METHODS)  # the Windows build: spawn alone (cmake/windows.cmake)
  set(both ${MP_SAMPLE_START_METHODS})
endif()
set(waiting "Waiting for processes to finish...")
mp_sample_test(global_variable_fork fork
  exact $<TARGET_FILE:global_variable_fork> 1 "${waiting}" "Value: 0")
mp_sample_test(manager_unsafe_counter "${both}"
  race $<TARGET_FILE:manager_unsafe_counter> 20 "Value: N")
mp_sample_test(manager_lock_in_tasks "${both}"
  exact $<TARGET_FILE:manager_lock_in_tasks> 10 "Value: 0")
mp_sample_test(manager_safe_counter "${both}"
  exact $<TARGET_FILE:manager_safe_counter> 10 "Value: 0")
mp_sample_test(value_race "${both}"
  race $<TARGET_FILE:value_race> 20 "${waiting}" "Value: N")
mp_sample_test(value_lock_in_tasks "${both}"
  exact $<TARGET_FILE:value_lock_in_tasks> 10 "${waiting}" "Value: 0")
mp_sample_test(value_get_lock "${both}"
  exact $<TARGET_FILE:value_get_lock> 10 "${waiting}" "Value: 0")
mp_sample_test(shared_file "${both}" file $<TARGET_FILE:shared_file> unlocked)
mp_sample_test(shared_file_lock "${both}" file $<TARGET_FILE:shared_file_lock>)
mp_sample_test(condition_timing_race "${both}" hang $<TARGET_FILE:condition_timing_race>)
mp_sample_test(condition_timing_fixed "${both}"
  exact $<TARGET_FILE:condition_timing_fixed> 3
  "Process: Waiting to be notified..." "Process: Ready" "Main: Notifying the process"
  "Process: Notified" "Main: Done")
# The Python documentation's pool examples, checked against their originals' output.
mp_sample_test(pool_of_workers "${both}"
  python $<TARGET_FILE:pool_of_workers> ${CMAKE_CURRENT_LIST_DIR}/pool_of_workers.py sort=1:11 mask=12,13)
mp_sample_test(process_pool_primes "${both}"
  python $<TARGET_FILE:process_pool_primes> ${CMAKE_CURRENT_LIST_DIR}/process_pool_primes.py)
# The Python documentation's multiprocessing.connection examples.
mp_sample_test(connection_wait "${both}"
  python $<TARGET_FILE:connection_wait> ${CMAKE_CURRENT_LIST_DIR}/python/12_connection_wait.py sort=0:40)
mp_sample_test(listener_client "${both}"
  python $<TARGET_FILE:listener_client> ${CMAKE_CURRENT_LIST_DIR}/python/13_listener_client.py)
# The documentation's manager examples, checked against their originals' output.
mp_sample_test(customized_manager "${both}"
  python $<TARGET_FILE:customized_manager> ${CMAKE_CURRENT_LIST_DIR}/python/customized_manager.py)
mp_sample_test(remote_queue_manager "${both}"
  python $<TARGET_FILE:remote_queue_manager> ${CMAKE_CURRENT_LIST_DIR}/python/remote_queue_manager.py)
