# Crash safety of training (docs/reliability.md): SIGKILL and resume, 20
# times in a row; a full disk and a read-only run directory.
add_executable(crash_kill tests/crash_kill.c)
target_include_directories(crash_kill PRIVATE src)
target_link_libraries(crash_kill rotary)
add_test(NAME crash_kill
  COMMAND bash -c "d=$(mktemp -d) && $<TARGET_FILE:crash_kill> $<TARGET_FILE:rotary_cli> $d 20; s=$?; rm -rf $d; exit $s"
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
add_test(NAME cli_reliability
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cli_reliability.sh $<TARGET_FILE:rotary_cli>
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
