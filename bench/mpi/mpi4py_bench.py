# bench/mpi/mpi4py_bench.py — mpi4py.futures' figures for bench/mpi/run.py, the same metrics as
# mpi_bench.cpp's executor mode:   mpiexec -n 3 python3 -m mpi4py.futures mpi4py_bench.py <scale>
import statistics
import sys
import time

from mpi4py.futures import MPIPoolExecutor


def identity(x):
    return x


def median_of(reps, f):
    return statistics.median(f() for _ in range(reps))


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    with MPIPoolExecutor() as ex:
        n = max(50, int(1000 * scale))
        for i in range(50):
            ex.submit(identity, i).result()

        def rt():
            t = time.perf_counter()
            for i in range(n):
                assert ex.submit(identity, i).result() == i
            return time.perf_counter() - t
        print("roundtrip_us %.3f" % (median_of(3, rt) / n * 1e6), flush=True)

        def map_rate(count, chunksize):
            def once():
                t = time.perf_counter()
                assert sum(ex.map(identity, range(count), chunksize=chunksize)) == count * (count - 1) // 2
                return time.perf_counter() - t
            return count / median_of(3, once)
        print("map_cs1_per_s %.1f" % map_rate(max(500, int(10000 * scale)), 1), flush=True)
        print("map_cs1000_per_s %.1f" % map_rate(max(10000, int(2000000 * scale)), 1000), flush=True)


if __name__ == '__main__':
    main()
