#!/usr/bin/env python3
"""bench/mpi/run.py — MPIPoolExecutor beside mpi4py.futures and the raw MPI ping-pong, same run.

Each round runs the three sides one after the other (2 worker ranks for both executors; ranks
0 and 1 for the ping-pong) and ratios are taken within the round; the table shows the median over
rounds and the spread. Needs a release build (cmake --preset release; target mpi_bench) and
Debian's python3-mpi4py for /usr/bin/python3.
    bench/mpi/run.py [--rounds 5] [--scale 1.0] [--bin build/release/bench/mpi/mpi_bench]
                     [--compare OTHER_MPI_BENCH]
--compare runs another build's mpi_bench (e.g. an earlier commit's) in every round as well, right
after --bin's, and prints its tables against the same rounds' mpi4py and raw figures.
"""
import argparse
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MPIEXEC = ["mpiexec", "--allow-run-as-root", "--oversubscribe"]
# metric, label, higher is better
METRICS = [("roundtrip_us", "submit().result() round trip (µs)", False),
           ("map_cs1_per_s", "map, chunksize=1 (tasks/s)", True),
           ("map_cs1000_per_s", "map, chunksize=1000 (tasks/s)", True)]


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        sys.exit("failed: %s\n%s%s" % (" ".join(cmd), out.stdout, out.stderr))
    return {k: float(v) for k, v in (line.split() for line in out.stdout.splitlines() if line.count(" ") == 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/release/bench/mpi/mpi_bench"))
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--compare", help="another mpi_bench, run in the same rounds")
    a = ap.parse_args()
    py = [a.python, "-m", "mpi4py.futures", os.path.join(ROOT, "bench/mpi/mpi4py_bench.py"), str(a.scale)]
    rounds, other = [], []

    def mp_side(binary):
        out = run(MPIEXEC + ["-n", "3", binary, "executor", str(a.scale)])
        out.update(run(MPIEXEC + ["-n", "2", binary, "roundtrip", str(a.scale)]))
        return out
    for r in range(a.rounds):
        mp = mp_side(a.bin)
        if a.compare:
            other.append(mp_side(a.compare))
        m4 = run(MPIEXEC + ["-n", "3"] + py)
        raw = run(MPIEXEC + ["-n", "2", a.bin, "pingpong", str(a.scale)])
        rounds.append((mp, m4, raw))
        print("round %d: mp %s | mpi4py %s | raw %s | compare %s" %
              (r + 1, mp, m4, raw, other[-1] if other else "-"), file=sys.stderr)
    tables(rounds)
    if other:
        print("\n### --compare %s, same rounds\n" % a.compare)
        tables([(o, m4, raw) for o, (_, m4, raw) in zip(other, rounds)])
    print("\n%d rounds, scale %g, %d CPUs, load average %.1f at the end" %
          (a.rounds, a.scale, os.cpu_count(), os.getloadavg()[0]))


def tables(rounds):
    def cell(values, fmt):
        return "%s [%s–%s]" % (fmt % statistics.median(values), fmt % min(values), fmt % max(values))
    print("| metric | mp::mpi | mpi4py.futures | mp vs mpi4py | raw MPI ping-pong | mp / raw |")
    print("|---|---|---|---|---|---|")
    for key, label, higher in METRICS:
        fmt = "%.1f" if key == "roundtrip_us" else "%.0f"
        mps = [r[0][key] for r in rounds]
        m4s = [r[1][key] for r in rounds]
        speed = [(m / p if higher else p / m) for m, p in zip(mps, m4s)]
        raw_cell = ratio_cell = "—"
        if key == "roundtrip_us":
            raws = [r[2]["pingpong_us"] for r in rounds]
            raw_cell = cell(raws, "%.1f")
            ratio_cell = cell([m / p for m, p in zip(mps, raws)], "%.2fx")
        print("| %s | %s | %s | %s | %s | %s |" % (label, cell(mps, fmt), cell(m4s, fmt), cell(speed, "%.1fx"),
                                                  raw_cell, ratio_cell))
    # Where mp's round trip goes, with the ping-pong's two ranks (-n 2: mp with 1 worker): MPI
    # with mp's messages and call pattern alone (wire_us) against mp's whole round trip; the rest
    # is mp's code on both sides (serialization, the future, the engine's bookkeeping).
    mp1 = [r[0]["roundtrip_1w_us"] for r in rounds]
    wires = [r[2]["wire_us"] for r in rounds]
    raws = [r[2]["pingpong_us"] for r in rounds]
    print("\n| round trip with 2 ranks (-n 2), µs | median [min–max] | / raw, per round |")
    print("|---|---|---|")
    print("| raw MPI_Send/MPI_Recv ping-pong | %s | — |" % cell(raws, "%.2f"))
    print("| mp's MPI calls alone (its messages; Isend, posted Irecv + Test polling) | %s | %s |" %
          (cell(wires, "%.2f"), cell([w / p for w, p in zip(wires, raws)], "%.2fx")))
    print("| mp submit().result(), 1 worker | %s | %s |" %
          (cell(mp1, "%.2f"), cell([m / p for m, p in zip(mp1, raws)], "%.2fx")))
    print("| mp − its MPI calls (serialization, future, engine) | %s | — |" %
          cell([m - w for m, w in zip(mp1, wires)], "%.2f"))
    # The same job runs the raw ping-pong, then mp's round trip: a ratio of one placement of the
    # ranks (the host's state changes between jobs, the raw figure with it).
    same = [r[0]["pingpong_same_job_us"] for r in rounds if "pingpong_same_job_us" in r[0]]
    if same:
        mps = [r[0]["roundtrip_1w_us"] for r in rounds if "pingpong_same_job_us" in r[0]]
        print("\n| one job (-n 2): raw ping-pong, then mp's round trip, µs | raw | mp | mp / raw |")
        print("|---|---|---|---|")
        print("| median [min–max] over rounds | %s | %s | %s |" %
              (cell(same, "%.2f"), cell(mps, "%.2f"), cell([m / p for m, p in zip(mps, same)], "%.2fx")))


if __name__ == "__main__":
    main()
