#!/usr/bin/env python3
"""bench/py_bench.py — the CPython side: every metric of bench/run.py measured with the standard
multiprocessing module, with the same loops as mp_bench and raw_bench.

Protocol (same as the C++ binaries): --list | --metrics a,b --scale S --reps R; prints
    RESULT <name> <value> <unit>     (median of R repetitions)
    ERROR <name> <message>
Cross-process rates use each worker's own CLOCK_MONOTONIC stamps (the same clock as the C++ side).
"""
import argparse
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
import multiprocessing.managers
import multiprocessing.shared_memory as shared_memory
import os
import statistics
import subprocess
import sys
import time

MiB = 1 << 20


BUDGET_S = 1.0  # time budget of one repetition of a process-creation loop (set from --scale)


def budgeted(n, step):
    """Runs step() n times, or fewer (at least 3) once BUDGET_S has passed; ms per step."""
    t0 = time.perf_counter()
    done = 0
    while done < n and (done < 3 or time.perf_counter() - t0 < BUDGET_S):
        step()
        done += 1
    return (time.perf_counter() - t0) / done * 1e3


def now():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def gate(arrived, parties):
    """Start gate: wait (yielding) until `parties` workers arrived."""
    with arrived.get_lock():
        arrived.value += 1
    while arrived.value < parties:
        time.sleep(0)


def span(stamps, k=2):
    return max(stamps[2 * i + 1] for i in range(k)) - min(stamps[2 * i] for i in range(k))


# ---- locks and shared values ----------------------------------------------------------------

def lock_uncontended_ns(n):
    lock = mp.Lock()
    acquire, release = lock.acquire, lock.release
    t0 = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    return (time.perf_counter() - t0) / n * 1e9


def _two_workers(worker, *args):
    """Runs worker(w, *args, arrived, stamps) in two processes; returns the seconds from the
    earliest start stamp to the latest stop stamp."""
    arrived, stamps = mp.Value('i', 0), mp.RawArray('d', 4)
    ps = [mp.Process(target=worker, args=(w, *args, arrived, stamps)) for w in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    return span(stamps)


def _lock_value_worker(w, n, lock, value, arrived, stamps):
    gate(arrived, 2)
    stamps[2 * w] = now()
    for _ in range(n):
        with lock:
            value.value += 1
    stamps[2 * w + 1] = now()


def lock_value_contended_2p(n):
    lock = mp.Lock()
    value = mp.Value('i', 0, lock=False)
    seconds = _two_workers(_lock_value_worker, n, lock, value)
    assert value.value == 2 * n
    return 2 * n / seconds


def _get_lock_worker(w, n, value, arrived, stamps):
    gate(arrived, 2)
    stamps[2 * w] = now()
    for _ in range(n):
        with value.get_lock():
            value.value += 1
    stamps[2 * w + 1] = now()


def value_get_lock_2p(n):
    value = mp.Value('i', 0)
    seconds = _two_workers(_get_lock_worker, n, value)
    assert value.value == 2 * n
    return 2 * n / seconds


def value_create_us(n):
    t0 = time.perf_counter()
    values = [mp.Value('i', 0) for _ in range(n)]
    r = (time.perf_counter() - t0) * 1e6 / n
    del values
    return r


def lock_create_us(n):
    t0 = time.perf_counter()
    locks = [mp.Lock() for _ in range(n)]
    r = (time.perf_counter() - t0) * 1e6 / n
    del locks
    return r


def rawvalue_inc_1p(n):
    v = mp.RawValue('i', 0)
    t0 = time.perf_counter()
    for _ in range(n):
        v.value += 1
    return n / (time.perf_counter() - t0)


def array_copyout_MBps(n):
    arr = mp.Array('d', MiB // 8)
    t0 = time.perf_counter()
    for _ in range(n):
        x = arr[:]
    return n * MiB / 1e6 / (time.perf_counter() - t0)


# ---- queues: a child puts n items, the parent gets them ---------------------------------------

def _producer(q, n, item, arrived, stamps):
    gate(arrived, 2)
    stamps[0] = now()
    for _ in range(n):
        q.put(item)
    stamps[1] = now()


def queue_rate(cls, n, item):
    q = cls()
    arrived, stamps = mp.Value('i', 0), mp.RawArray('d', 4)
    p = mp.Process(target=_producer, args=(q, n, item, arrived, stamps))
    p.start()
    gate(arrived, 2)
    stamps[2] = now()
    for _ in range(n):
        q.get()
    stamps[3] = now()
    p.join()
    return n / span(stamps)


# ---- blocking round trips (us per round trip); the child echoes --------------------------------

def _echo_duplex(conn, n):
    for _ in range(n):
        conn.send(conn.recv())


def _echo_simplex(r, w, n):
    for _ in range(n):
        w.send(r.recv())


def _event_partner(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def _cond_partner(cond, turn, n):
    for _ in range(n):
        with cond:
            while turn.value != 1:
                cond.wait()
            turn.value = 0
            cond.notify()


def _barrier_partner(barrier, n):
    for _ in range(n):
        barrier.wait()


def pingpong_us(n, target, args, ping):
    p = mp.Process(target=target, args=args)
    p.start()
    ping()  # warm-up: the child is running
    t0 = time.perf_counter()
    for _ in range(n - 1):
        ping()
    t1 = time.perf_counter()
    p.join()
    return (t1 - t0) / (n - 1) * 1e6


def pipe_duplex_rt_us(n):
    a, b = mp.Pipe()

    def ping():
        a.send(1)
        a.recv()
    return pingpong_us(n, _echo_duplex, (b, n), ping)


def pipe_simplex_rt_us(n):
    r1, w1 = mp.Pipe(duplex=False)
    r2, w2 = mp.Pipe(duplex=False)

    def ping():
        w1.send(1)
        r2.recv()
    return pingpong_us(n, _echo_simplex, (r1, w2, n), ping)


def event_pingpong_us(n):
    ping_e, pong_e = mp.Event(), mp.Event()

    def ping():
        ping_e.set()
        pong_e.wait()
        pong_e.clear()
    return pingpong_us(n, _event_partner, (ping_e, pong_e, n), ping)


def condition_pingpong_us(n):
    cond = mp.Condition()
    turn = mp.RawValue('i', 0)

    def ping():
        with cond:
            turn.value = 1
            cond.notify()
            while turn.value != 0:
                cond.wait()
    return pingpong_us(n, _cond_partner, (cond, turn, n), ping)


def barrier_2p_us(n):
    barrier = mp.Barrier(2)
    return pingpong_us(n, _barrier_partner, (barrier, n), barrier.wait)


# ---- managers ----------------------------------------------------------------------------------

class Counter:
    def __init__(self):
        self.n = 0

    def increment(self):
        self.n += 1
        return self.n


class CounterManager(mp.managers.BaseManager):
    pass


CounterManager.register('Counter', Counter)


def timed_calls_us(n, call):
    call()
    t0 = time.perf_counter()
    for _ in range(n - 1):
        call()
    return (time.perf_counter() - t0) / (n - 1) * 1e6


def manager_proxy_call_us(n):
    with CounterManager() as m:
        c = m.Counter()
        return timed_calls_us(n, c.increment)


def manager_value_get_us(n):
    with mp.Manager() as m:
        v = m.Value('i', 7)
        return timed_calls_us(n, lambda: v.value)


def manager_dict_set_us(n):
    with mp.Manager() as m:
        d = m.dict()

        def call():
            d['k'] = 1
        return timed_calls_us(n, call)


def manager_start_shutdown_ms(n):
    def step():
        m = mp.Manager()
        m.shutdown()
    return budgeted(n, step)


# ---- Pool and ProcessPoolExecutor -----------------------------------------------------------------

def _square(x):
    return x * x


def pool_map_tasks(n, chunksize):
    with mp.Pool(2) as pool:
        pool.map(_square, range(100))  # warm-up: both workers are running
        t0 = time.perf_counter()
        pool.map(_square, range(n), chunksize)
        return n / (time.perf_counter() - t0)


def pool_apply_us(n):
    with mp.Pool(2) as pool:
        return timed_calls_us(n, lambda: pool.apply(_square, (3,)))


def executor_submit_result_us(n):
    with ProcessPoolExecutor(2, mp_context=mp.get_context('fork')) as ex:
        return timed_calls_us(n, lambda: ex.submit(_square, 3).result())


def executor_map_tasks(n):
    with ProcessPoolExecutor(2, mp_context=mp.get_context('fork')) as ex:
        list(ex.map(_square, range(100)))  # warm-up
        t0 = time.perf_counter()
        for _ in ex.map(_square, range(n)):
            pass
        return n / (time.perf_counter() - t0)


def pool4_create_join_ms(method, n):
    ctx = mp.get_context(method)

    def step():
        pool = ctx.Pool(4)
        pool.close()
        pool.join()
    return budgeted(n, step)


def _rss_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / MiB


def imap_unordered_lazy_rss_mib(n):
    """Peak RSS of the parent while reading the first n results of imap_unordered over 10^8 items."""
    with mp.Pool(2) as pool:
        peak = _rss_mib()
        for got, _ in enumerate(pool.imap_unordered(_square, range(10 ** 8)), 1):
            if got % 4096 == 0:
                peak = max(peak, _rss_mib())
            if got == n:
                break
        return max(peak, _rss_mib())


def interpreter_ms(n, code):
    return budgeted(n, lambda: subprocess.run([sys.executable, '-c', code], check=True))


# ---- shared_memory ------------------------------------------------------------------------------

def shm_attach_close_us(n):
    shm = shared_memory.SharedMemory(create=True, size=MiB)
    t0 = time.perf_counter()
    for _ in range(n):
        other = shared_memory.SharedMemory(shm.name)
        other.close()
    r = (time.perf_counter() - t0) / n * 1e6
    shm.close()
    shm.unlink()
    return r


def shm_create_unlink_us(n):
    t0 = time.perf_counter()
    for _ in range(n):
        shm = shared_memory.SharedMemory(create=True, size=4096)
        shm.close()
        shm.unlink()
    return (time.perf_counter() - t0) / n * 1e6


def _shm_reader(name, n, r, w):
    s = shared_memory.SharedMemory(name)
    for _ in range(n):
        os.read(r, 1)
        out = bytes(s.buf)
        os.write(w, b'x')
    del out
    s.close()


def shm_1mb_MBps(n):
    shm = shared_memory.SharedMemory(create=True, size=MiB)
    to_child, to_parent = os.pipe(), os.pipe()
    p = mp.Process(target=_shm_reader, args=(shm.name, n, to_child[0], to_parent[1]))
    p.start()
    src = bytearray(b'x' * MiB)
    t0 = time.perf_counter()
    for i in range(n):
        src[0] = i & 0xff
        shm.buf[:] = src
        os.write(to_child[1], b'x')
        os.read(to_parent[0], 1)
    t1 = time.perf_counter()
    p.join()
    for fd in to_child + to_parent:
        os.close(fd)
    shm.close()
    shm.unlink()
    return n * MiB / 1e6 / (t1 - t0)


# ---- processes ----------------------------------------------------------------------------------

def _noop():
    pass


def start_join_big_ms(method, n):
    ballast = bytearray(256 << 20)  # zero-filled: touch every page, like the C++ Ballast
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    return start_join_ms(method, n)


def start_join_ms(method, n):
    ctx = mp.get_context(method)

    def step():
        p = ctx.Process(target=_noop)
        p.start()
        p.join()
        assert p.exitcode == 0
    return budgeted(n, step)


def forkserver_ms(n):
    """Steady state: the server started and a first child run before the timing (as mp_bench)."""
    import multiprocessing.forkserver
    multiprocessing.forkserver.ensure_running()
    start_join_ms('forkserver', 1)
    return start_join_ms('forkserver', n)


# name: (unit, base iteration count, minimum, function of n)
METRICS = {
    'lock_uncontended_ns': ('ns', 2_000_000, 1000, lock_uncontended_ns),
    'lock_value_contended_2p': ('ops/s', 200_000, 100, lock_value_contended_2p),
    'value_get_lock_2p': ('ops/s', 200_000, 100, value_get_lock_2p),
    'rawvalue_inc_1p': ('ops/s', 2_000_000, 1000, rawvalue_inc_1p),
    'value_create_us': ('us', 2_000, 100, value_create_us),
    'lock_create_us': ('us', 2_000, 100, lock_create_us),
    'array_copyout_MBps': ('MB/s', 200, 4, array_copyout_MBps),
    'queue_small_msgs': ('msgs/s', 100_000, 100, lambda n: queue_rate(mp.Queue, n, 1)),
    'simplequeue_small_msgs': ('msgs/s', 100_000, 100, lambda n: queue_rate(mp.SimpleQueue, n, 1)),
    'queue_1mb_MBps': ('MB/s', 300, 4, lambda n: queue_rate(mp.Queue, n, b'x' * MiB) * MiB / 1e6),
    'simplequeue_1mb_MBps': ('MB/s', 300, 4, lambda n: queue_rate(mp.SimpleQueue, n, b'x' * MiB) * MiB / 1e6),
    'pipe_duplex_rt_us': ('us', 20_000, 20, pipe_duplex_rt_us),
    'pipe_simplex_rt_us': ('us', 20_000, 20, pipe_simplex_rt_us),
    'event_pingpong_us': ('us', 10_000, 20, event_pingpong_us),
    'condition_pingpong_us': ('us', 10_000, 20, condition_pingpong_us),
    'barrier_2p_us': ('us', 10_000, 20, barrier_2p_us),
    'manager_proxy_call_us': ('us', 10_000, 20, manager_proxy_call_us),
    'manager_value_get_us': ('us', 10_000, 20, manager_value_get_us),
    'manager_dict_set_us': ('us', 10_000, 20, manager_dict_set_us),
    'manager_start_shutdown_ms': ('ms', 50, 2, manager_start_shutdown_ms),
    'pool_map_tasks_chunked': ('tasks/s', 100_000, 100_000, lambda n: pool_map_tasks(n, None)),
    'pool_map_tasks_chunksize1': ('tasks/s', 20_000, 1000, lambda n: pool_map_tasks(n, 1)),
    'pool_apply_us': ('us', 5_000, 20, pool_apply_us),
    'executor_submit_result_us': ('us', 5_000, 20, executor_submit_result_us),
    'executor_map_tasks': ('tasks/s', 20_000, 1000, executor_map_tasks),
    'pool4_create_join_fork_ms': ('ms', 30, 2, lambda n: pool4_create_join_ms('fork', n)),
    'pool4_create_join_spawn_ms': ('ms', 10, 2, lambda n: pool4_create_join_ms('spawn', n)),
    'imap_unordered_lazy_rss_MiB': ('MiB', 1_000_000, 1000, imap_unordered_lazy_rss_mib),
    'python_startup_ms': ('ms', 20, 2, lambda n: interpreter_ms(n, 'pass')),
    'python_import_mp_ms': ('ms', 20, 2, lambda n: interpreter_ms(n, 'import multiprocessing')),
    'process_fork_ms': ('ms', 300, 3, lambda n: start_join_ms('fork', n)),
    'process_spawn_ms': ('ms', 30, 2, lambda n: start_join_ms('spawn', n)),
    'process_fork_big_ms': ('ms', 100, 2, lambda n: start_join_big_ms('fork', n)),
    'process_spawn_big_ms': ('ms', 30, 2, lambda n: start_join_big_ms('spawn', n)),
    'process_forkserver_ms': ('ms', 50, 2, forkserver_ms),
    'shm_attach_close_us': ('us', 100_000, 20, shm_attach_close_us),
    'shm_create_unlink_us': ('us', 50_000, 20, shm_create_unlink_us),
    'shm_1mb_MBps': ('MB/s', 5_000, 4, shm_1mb_MBps),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--list', action='store_true')
    ap.add_argument('--metrics', default='')
    ap.add_argument('--scale', type=float, default=1.0)
    ap.add_argument('--reps', type=int, default=3)
    a = ap.parse_args()
    global BUDGET_S
    BUDGET_S = max(0.02, a.scale)
    if a.list:
        for name, (unit, *_rest) in METRICS.items():
            print(name, unit)
        return
    names = [m for m in a.metrics.split(',') if m] or list(METRICS)
    for name in names:
        if name not in METRICS:
            print(f'ERROR {name} unknown metric', flush=True)
            continue
        unit, base, minimum, fn = METRICS[name]
        n = max(minimum, int(base * a.scale))
        try:
            values = [fn(n) for _ in range(max(1, a.reps))]
            print(f'RESULT {name} {statistics.median(values):.6g} {unit}', flush=True)
        except Exception as e:  # report and go on with the next metric
            print(f'ERROR {name} {type(e).__name__}: {e}'.replace('\n', ' '), flush=True)


if __name__ == '__main__':
    mp.set_start_method('fork')
    main()
