#!/usr/bin/env bash
# A worker rank SIGKILLed while the client waits on its task: Open MPI 4.1 ends the whole job, so
# the client must end with it (mpiexec non-zero) and never hang. Checked: mpiexec returns within
# the bound, non-zero, after the client reached its wait; and the job leaves no shared memory or
# session files behind: its shared-memory segments (Open MPI's vader BTL, by default
# /dev/shm/vader_segment.*) and session directory go to a directory of this test's own, which
# must be empty when mpiexec has returned (what is left is listed, removed, and fails the test).
#   dead_rank.sh <mpiexec> <test_mpi>
set -u
mpiexec=$1 prog=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM HUP
out=$work/out
mkdir "$work/shm" "$work/session"
start=$SECONDS
MP_MPI_KILL_RANK=1 OMPI_MCA_btl_vader_backing_directory=$work/shm \
  OMPI_MCA_orte_tmpdir_base=$work/session \
  timeout -k 5 90 "$mpiexec" --allow-run-as-root --oversubscribe -n 3 "$prog" \
  --gtest_filter='*KillRank' >"$out" 2>&1
rc=$?
took=$((SECONDS - start))
cat "$out"
echo "dead_rank: mpiexec exited with $rc after ${took}s"
# (mpiexec itself exits 128+9 for a rank killed by SIGKILL: the time tells a hang apart.)
if [ "$rc" -eq 124 ] || [ "$took" -ge 85 ]; then echo "FAIL: the job hung (ended by timeout)"; exit 1; fi
if [ "$rc" -eq 0 ]; then echo "FAIL: the job succeeded although a rank died"; exit 1; fi
grep -q "mp-mpi: waiting for the killed task" "$out" || { echo "FAIL: the client never waited on the task"; exit 1; }
grep -q "the client was not ended with its job" "$out" && { echo "FAIL: result() returned"; exit 1; }
# Nothing of the job may be left (the trap removes it either way).
left=$(find "$work/shm" "$work/session" -mindepth 1 2>/dev/null)
if [ -n "$left" ]; then
  echo "FAIL: the job left files behind:"
  echo "$left"
  exit 1
fi
echo "PASS: the job ended (exit $rc) in ${took}s and left no shared memory or session files"
