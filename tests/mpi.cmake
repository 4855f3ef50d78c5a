# Data-parallel training over MPI (issue 7, docs/distributed.md); included
# from tests/tests.cmake when ROTARY_MPI is on, label "mpi" (make test-mpi).
# mpirun as root needs --allow-run-as-root; --oversubscribe lets 2 or 3 ranks
# share a 2-core CI machine. The environment keeps Open MPI on this host's
# shared memory (btl self,vader), without the single-copy mechanism (CMA
# needs ptrace rights containers rarely grant), and each rank on one thread.
find_program(MPIRUN NAMES mpirun REQUIRED)
set(ROTARY_MPIRUN ${MPIRUN} --allow-run-as-root --oversubscribe)
set(ROTARY_MPI_ENV "OMPI_MCA_btl=self,vader" "OMPI_MCA_btl_vader_single_copy_mechanism=none"
  "OMPI_MCA_plm_rsh_agent=" "OMP_NUM_THREADS=1" "OMP_WAIT_POLICY=passive")

add_executable(test_dist tests/test_dist.c)
target_include_directories(test_dist PRIVATE src)
target_link_libraries(test_dist rotary)
add_test(NAME mpi_dist_2 COMMAND ${ROTARY_MPIRUN} -np 2 $<TARGET_FILE:test_dist>)
add_test(NAME mpi_dist_3 COMMAND ${ROTARY_MPIRUN} -np 3 $<TARGET_FILE:test_dist>)

# Equivalence: 1 rank with batch 2b against 2 ranks with b each (and ZeRO-1).
add_test(NAME mpi_equivalence
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/mpi_equivalence.sh $<TARGET_FILE:rotary_cli> ${CMAKE_SOURCE_DIR} ${MPIRUN}
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
# A rank killed mid-run; resume on 2 ranks (bit for bit) and on 1.
add_test(NAME mpi_resume
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/mpi_resume.sh $<TARGET_FILE:rotary_cli> ${CMAKE_SOURCE_DIR} ${MPIRUN}
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})

set_tests_properties(mpi_dist_2 mpi_dist_3 mpi_equivalence mpi_resume PROPERTIES
  LABELS mpi ENVIRONMENT "${ROTARY_MPI_ENV}" PROCESSORS 2)
