#!/usr/bin/env bash
# Spawn mode (test_mpi alone, MPI_Comm_spawn) leaves nothing behind. Open MPI writes a session
# directory (default /tmp/ompi.<host>.<uid>: pid.<daemon pid>/ of the daemon a lone process starts
# for its spawns, jf.<job family>/ of the jobs) and shared-memory segments (vader, default
# /dev/shm); here both go to a directory of this test's own, checked once the command and Open
# MPI's daemons (the pids in the pid.* names) have ended, then removed whatever the outcome.
#   session_dir.sh clean  <test_mpi> [args]   nothing may be left
#   session_dir.sh killed <test_mpi> [args]   a worker rank is SIGKILLed: the client ends
#       without MPI_Finalize (it could wait for the dead rank) and Open MPI 4.1 then leaves its
#       job family's directory (jf.<n>, empty) behind: empty directories are reported (and
#       removed with the rest); any file left fails the test.
set -u
mode=$1
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM HUP
mkdir "$work/shm" "$work/session"
OMPI_MCA_btl_vader_backing_directory=$work/shm OMPI_MCA_orte_tmpdir_base=$work/session \
  timeout -k 5 150 "$@"
rc=$?
[ "$rc" -eq 0 ] || { echo "FAIL: the test exited with $rc"; exit 1; }
# Open MPI's daemons clean up as they exit, after the client: wait for them (bounded).
for dir in "$work"/session/*/pid.*; do
  [ -e "$dir" ] || continue
  pid=${dir##*/pid.}
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && { echo "FAIL: Open MPI's daemon $pid did not end within 30 s"; exit 1; }
done
files=$(find "$work/shm" "$work/session" -mindepth 1 ! -type d)
dirs=$(find "$work/session" -mindepth 1 -type d)
if [ -n "$files" ]; then
  echo "FAIL: files left behind:"
  echo "$files"
  exit 1
fi
if [ -n "$dirs" ]; then
  if [ "$mode" != killed ]; then
    echo "FAIL: directories left behind:"
    echo "$dirs"
    exit 1
  fi
  echo "note: Open MPI left empty directories (the client did not finalize), removed:"
  echo "$dirs"
fi
echo "PASS: nothing left in the session directory or shared memory"
