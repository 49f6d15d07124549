#!/usr/bin/env bash
# Two "hosts" on one machine: network namespaces A and B, each with a veth into a bridge that
# lives in a third namespace, on private addresses 10.250.N.1 and 10.250.N.2 made here and removed
# on exit (also on failure or interruption: the trap). mpiexec runs in A with two slots on each
# "host"; the ranks in B are started through a launch agent that enters B (Open MPI's ssh launch,
# with `ip netns exec` for ssh), and all traffic goes over TCP on the bridge. test_mpi's Hosts
# test (with all the others, as on one machine) checks that tasks ran on both (each rank reports its interface addresses) and that
# map() results come back in order.
#   multihost.sh <mpiexec> <test_mpi>      exit 77 (ctest: Skipped) with the reason when namespaces
#                                          cannot be made here (not root, no ip, no netns support)
set -u
mpiexec=$1 prog=$2
skip() { echo "SKIPPED: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "creating network namespaces needs root"
command -v ip >/dev/null || skip "the ip command (iproute2) is missing"

tag=$$
net=$((tag % 200 + 20))                      # 10.250.<net>.0/24, private to these namespaces
a=mpA$tag b=mpB$tag br=mpR$tag
work=$(mktemp -d)
cleanup() {
  for ns in "$a" "$b" "$br"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

ip netns add "$a" 2>"$work/err" || skip "cannot create a network namespace: $(cat "$work/err")"
ip netns add "$b" && ip netns add "$br" || { echo "FAIL: ip netns add"; exit 1; }
set -e
ip -n "$br" link add br0 type bridge
ip -n "$br" link set br0 up
for side in a b; do
  ns=${!side}
  ip link add "v$side$tag" netns "$ns" type veth peer name "p$side" netns "$br"
  ip -n "$br" link set "p$side" master br0 up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set "v$side$tag" name eth9
done
ip -n "$a" addr add 10.250.$net.1/24 dev eth9 && ip -n "$a" link set eth9 up
ip -n "$b" addr add 10.250.$net.2/24 dev eth9 && ip -n "$b" link set eth9 up
set +e

# The launch agent Open MPI calls as `agent <host> <command...>`: runs the command in that host's
# namespace.
cat >"$work/agent" <<AGENT
#!/bin/sh
host=\$1; shift
case "\$host" in
  10.250.$net.1) ns=$a ;;
  10.250.$net.2) ns=$b ;;
  *) echo "agent: unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" /bin/sh -c "\$*"
AGENT
chmod +x "$work/agent"

start=$SECONDS
MP_MPI_HOSTS=2 timeout -k 5 120 ip netns exec "$a" "$mpiexec" --allow-run-as-root --oversubscribe \
  --host 10.250.$net.1:2,10.250.$net.2:2 -n 4 \
  --mca plm_rsh_agent "$work/agent" --mca btl tcp,self \
  --mca btl_tcp_if_include 10.250.$net.0/24 --mca oob_tcp_if_include 10.250.$net.0/24 \
  "$prog" >"$work/out" 2>&1
rc=$?
cat "$work/out"
echo "multihost: mpiexec exited with $rc after $((SECONDS - start))s"
[ "$rc" -eq 0 ] || { echo "FAIL"; exit 1; }
grep -q "mp-mpi-host: 10.250.$net.1" "$work/out" && grep -q "mp-mpi-host: 10.250.$net.2" "$work/out" ||
  { echo "FAIL: tasks did not run on both hosts"; exit 1; }
echo "PASS: tasks ran on 10.250.$net.1 and 10.250.$net.2, results in order"
