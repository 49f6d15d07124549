#!/usr/bin/env bash
# A worker rank SIGKILLed while the client waits on its task: Open MPI 4.1 ends the whole job, so
# the client must end with it (mpiexec non-zero) and never hang. Checked: mpiexec returns within
# the bound, non-zero, after the client reached its wait.
#   dead_rank.sh <mpiexec> <test_mpi>
set -u
mpiexec=$1 prog=$2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$SECONDS
MP_MPI_KILL_RANK=1 timeout -k 5 90 "$mpiexec" --allow-run-as-root --oversubscribe -n 3 "$prog" \
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
echo "PASS: the job ended (exit $rc) in ${took}s"
