# Shared by tests/mpi_*.sh (usage: SCRIPT ROTARY_BINARY SOURCE_DIR MPIRUN):
# lib.sh's helpers, the training text, np N CMD (mpirun with N ranks) and
# compare (tests/mpi_compare.py).
rotary="$1"
src="$2"
mpirun="$3"
py=/usr/bin/python3
. "$src/tests/lib.sh"
data=$(some_text "$src")
np() { local n=$1; shift; "$mpirun" --allow-run-as-root --oversubscribe -np "$n" "$@"; }
compare() { "$py" "$src/tests/mpi_compare.py" "$@"; }
