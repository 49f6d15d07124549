#!/usr/bin/env python3
"""bench/run.py — mp side by side with CPython's multiprocessing and the raw OS, in one run.

    bench/run.py            full run (5 rounds; about 10 minutes)
    bench/run.py --quick    quick run (3 rounds at a smaller size; under 2 minutes once built)

Builds the release benchmarks (build/bench), then in every round runs the three sides — raw_bench
(bare OS primitives), mp_bench (mp) and py_bench.py (CPython) — one after the other, in an order
that rotates per round, and computes the ratios per round (the host state moves absolute figures
by up to 5x within minutes, so only same-round ratios mean something). Blocking round trips run
twice: with every process pinned to one CPU (`taskset -c 0`, "[1 CPU]", stable) and free
("[2 CPUs]", where a cross-CPU wake-up costs 20-45 us). Prints a markdown table
    metric | mp | CPython | raw | mp vs CPython | mp vs raw
(median over rounds [min-max]; each side's figure is itself the median of --reps repetitions)
and writes it, the per-round data (JSON) and a bar chart (SVG) into bench/results/.

"mp vs CPython" is mp's speed-up over CPython (>1: mp is faster; the goal is >= 10x).
"mp vs raw" is mp's speed as a fraction of the raw primitive's (1 = at the raw limit; the goal,
"within 1.5x of raw", is >= 0.67). Metrics whose mp feature is not in the tree say "not built yet".
Standard library only; the CPython side uses `python3` from PATH (--python to change it) and is
skipped with a message when it is missing.
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

TIME_UNITS = {'ns', 'us', 'ms'}
LOWER_IS_BETTER = TIME_UNITS | {'MiB'}  # times and memory
# CPython metrics with no mp counterpart by design (interpreter start-up).
NOT_IN_MP = {'python_startup_ms', 'python_import_mp_ms'}

# (label, unit, mp/CPython metric, raw metric, pinned to one CPU)
# mp_bench and py_bench.py use the same metric names; None = that side has no such metric.
_RT = [
    ('Pipe() duplex round trip', 'pipe_duplex_rt_us', 'unix_socket_pingpong_us'),
    ('Pipe(duplex=False) x2 round trip', 'pipe_simplex_rt_us', 'pipe_pingpong_us'),
    ('Event ping-pong', 'event_pingpong_us', 'sem_pingpong_us'),
    ('Condition ping-pong', 'condition_pingpong_us', 'condvar_pingpong_us'),
    ('Barrier(2) round', 'barrier_2p_us', 'barrier_2p_us'),
    ('Manager custom proxy call', 'manager_proxy_call_us', 'unix_socket_pingpong_us'),
    ('Manager Value .value get', 'manager_value_get_us', 'unix_socket_pingpong_us'),
    ('Manager dict set', 'manager_dict_set_us', 'unix_socket_pingpong_us'),
]
ROWS = [
    ('Lock acquire+release, 1 proc', 'ns', 'lock_uncontended_ns', 'sem_lock_uncontended_ns', False),
    ('  same, vs futex mutex', 'ns', 'lock_uncontended_ns', 'futex_mutex_uncontended_ns', False),
    ('Lock + Value(lock=False) +=1, 2 procs', 'ops/s', 'lock_value_contended_2p', 'sem_lock_contended_2p', False),
    ('  same, vs futex mutex', 'ops/s', 'lock_value_contended_2p', 'futex_mutex_contended_2p', False),
    ('  same, vs atomic fetch_add ceiling', 'ops/s', 'lock_value_contended_2p', 'atomic_fetch_add_2p', False),
    ('Value get_lock() +=1, 2 procs', 'ops/s', 'value_get_lock_2p', 'mutex_contended_2p', False),
    ('RawValue +=1, 1 proc', 'ops/s', 'rawvalue_inc_1p', 'shared_int_inc_1p', False),
    ("Value('i', 0) creation, per object, vs mmap of a shared page", 'us', 'value_create_us', 'mmap_page_us', False),
    ('Lock() creation, per object, vs mmap of a shared page', 'us', 'lock_create_us', 'mmap_page_us', False),
    ("Array('d', 1 MiB) arr[:] copy-out vs memcpy", 'MB/s', 'array_copyout_MBps', 'memcpy_1mb_MBps', False),
    ('Queue small ints vs pipe', 'msgs/s', 'queue_small_msgs', 'pipe_stream_8b_msgs', False),
    ('  same, vs SPSC shm ring', 'msgs/s', 'queue_small_msgs', 'spsc_ring_8b_msgs', False),
    ('SimpleQueue small ints vs pipe', 'msgs/s', 'simplequeue_small_msgs', 'pipe_stream_8b_msgs', False),
    ('Queue 1 MiB bytes vs pipe', 'MB/s', 'queue_1mb_MBps', 'pipe_stream_1mb_MBps', False),
    ('  same, vs SPSC shm ring (copy in+out)', 'MB/s', 'queue_1mb_MBps', 'spsc_ring_1mb_MBps', False),
    ('SimpleQueue 1 MiB bytes vs pipe', 'MB/s', 'simplequeue_1mb_MBps', 'pipe_stream_1mb_MBps', False),
] + [(f'{label} [1 CPU]', 'us', m, r, True) for label, m, r in _RT] + [
    (f'{label} [2 CPUs]', 'us', m, r, False) for label, m, r in _RT] + [
    ('Busy-wait shm ping-pong floor [2 CPUs]', 'us', None, 'spin_pingpong_us', False),
    ('Process start+join, fork', 'ms', 'process_fork_ms', 'fork_exit_wait_ms', False),
    ('Process start+join, spawn vs posix_spawn', 'ms', 'process_spawn_ms', 'posix_spawn_wait_ms', False),
    ('  spawn vs posix_spawn of mp_bench itself', 'ms', 'process_spawn_ms', 'posix_spawn_mpbin_wait_ms', False),
    ('  spawn vs vfork+exec', 'ms', 'process_spawn_ms', 'vfork_exec_wait_ms', False),
    ('  spawn vs fork+exec', 'ms', 'process_spawn_ms', 'fork_exec_wait_ms', False),
    ('Process start+join, fork, 256 MiB parent vs fork', 'ms', 'process_fork_big_ms', 'fork_exit_wait_big_ms', False),
    ('Process start+join, spawn, 256 MiB parent vs posix_spawn', 'ms', 'process_spawn_big_ms',
     'posix_spawn_mpbin_big_ms', False),
    ('Process start+join, forkserver vs fork', 'ms', 'process_forkserver_ms', 'fork_exit_wait_ms', False),
    ('Manager() start+shutdown vs fork', 'ms', 'manager_start_shutdown_ms', 'fork_exit_wait_ms', False),
    ('SharedMemory attach by name+map+close vs shm_open+mmap', 'us', 'shm_attach_close_us', 'raw_shm_attach_close_us', False),
    ('SharedMemory(create, 4 KiB)+unlink vs shm_open+mmap', 'us', 'shm_create_unlink_us', 'raw_shm_create_unlink_us', False),
    ('SharedMemory 1 MiB write, read by another proc', 'MB/s', 'shm_1mb_MBps', 'raw_shm_1mb_MBps', False),
    ('Pool(2).map 100k tiny, default chunks', 'tasks/s', 'pool_map_tasks_chunked', 'pipe_pool_tasks_chunked', False),
    ('Pool(2).map tiny, chunksize=1', 'tasks/s', 'pool_map_tasks_chunksize1', 'pipe_pool_tasks_chunksize1', False),
    ('Pool.apply round trip vs pipe ping-pong [2 CPUs]', 'us', 'pool_apply_us', 'pipe_pingpong_us', False),
    ('ProcessPoolExecutor(2) submit().result() vs pipe ping-pong [2 CPUs]', 'us', 'executor_submit_result_us',
     'pipe_pingpong_us', False),
    ('ProcessPoolExecutor(2).map 100k tiny', 'tasks/s', 'executor_map_tasks', 'pipe_pool_tasks_chunked', False),
    ('Pool(4) create+close+join, fork vs fork', 'ms', 'pool4_create_join_fork_ms', 'fork_exit_wait_ms', False),
    ('  same, vs 4 live forks released then waited', 'ms', 'pool4_create_join_fork_ms', 'fork4_live_release_wait_ms',
     False),
    ('Pool(4) create+close+join, spawn vs posix_spawn', 'ms', 'pool4_create_join_spawn_ms',
     'posix_spawn_mpbin_wait_ms', False),
    ('imap_unordered over 10^8 lazy items: parent peak RSS', 'MiB', 'imap_unordered_lazy_rss_MiB', None, False),
    ('`python3 -c pass` vs posix_spawn [CPython only]', 'ms', 'python_startup_ms', 'posix_spawn_wait_ms', False),
    ("`python3 -c 'import multiprocessing'` [CPython only]", 'ms', 'python_import_mp_ms', 'posix_spawn_wait_ms', False),
    ('memcpy 1 MiB, 1 proc [reference]', 'MB/s', None, 'memcpy_1mb_MBps', False),
    ('uncontended pthread mutex [reference]', 'ns', None, 'mutex_uncontended_ns', False),
    ('uncontended atomic fetch_add [reference]', 'ops/s', None, 'atomic_fetch_add_1p', False),
    ('pause instruction [reference]', 'ns', None, 'pause_ns', False),
]

MODES = {  # rounds, repetitions per side and round, iteration-count scale
    'full': dict(rounds=5, reps=5, scale=0.3),
    'quick': dict(rounds=3, reps=3, scale=0.08),
    'smoke': dict(rounds=1, reps=1, scale=0.002),
}

NOT_BUILT = 'not built yet'
HEADER = '| metric | mp | CPython | raw | mp vs CPython | mp vs raw |'


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- running the sides --------------------------------------------------------------------------

class Side:
    def __init__(self, name, cmd, env=None):
        self.name, self.cmd, self.env = name, cmd, env
        self.available = {}   # metric -> unit
        self.missing = None   # why the whole side is skipped

    def probe(self):
        try:
            out = subprocess.run(self.cmd + ['--list'], capture_output=True, text=True, timeout=60,
                                 env=self.env, check=True).stdout
        except (OSError, subprocess.SubprocessError) as e:
            self.missing = f'{self.name} cannot run: {e}'
            return
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                self.available[parts[0]] = parts[1]

    def run(self, metrics, pinned, scale, reps, timeout):
        """Runs `metrics` in one process; returns {metric: float or error string}."""
        if not metrics:
            return {}
        cmd = (['taskset', '-c', '0'] if pinned else []) + self.cmd + [
            '--metrics', ','.join(metrics), '--scale', repr(scale), '--reps', str(reps)]
        results = {}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env)
            out, err = proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or '')
            err = f'timed out after {timeout} s'
        for line in out.splitlines():
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[0] == 'RESULT':
                try:
                    results[parts[1]] = float(parts[2])
                except ValueError:
                    results[parts[1]] = f'unparsable value {parts[2]!r}'
            elif len(parts) >= 2 and parts[0] == 'ERROR':
                results[parts[1]] = ' '.join(parts[2:]) or 'error'
        for m in metrics:
            if m not in results:
                tail = (err or '').strip().splitlines()[-1:] or ['no output']
                results[m] = f'no result ({tail[0]})'
        return results


def build(args):
    bdir = os.path.join(ROOT, 'build', 'bench')
    log(f'== building the release benchmarks in {bdir}')
    for cmd in (['cmake', '-S', ROOT, '-B', bdir, '-DCMAKE_BUILD_TYPE=Release', '-DMP_BUILD_TESTS=OFF',
                 '-DMP_BUILD_SAMPLES=OFF', '-DMP_INSTALL=OFF', '-DMP_BUILD_BENCH=ON'],
                ['cmake', '--build', bdir, '--target', 'raw_bench', 'mp_bench', '-j', str(os.cpu_count() or 2)]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f'run.py: {" ".join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}')
        for line in proc.stderr.splitlines():  # configure warnings, e.g. a feature benchmark left out
            if line.startswith('CMake Warning') or 'bench:' in line:
                log(line)
    return os.path.join(bdir, 'bench')


def python_side(python):
    exe = shutil.which(python)
    if not exe:
        side = Side('CPython', [python])
        side.missing = f'CPython side skipped: {python!r} is not on PATH'
        return side
    side = Side('CPython', [exe, os.path.join(HERE, 'py_bench.py')])
    return side


# ---- statistics and formatting --------------------------------------------------------------------

def fmt(v):
    if isinstance(v, str):
        return v
    a = abs(v)
    for div, suffix in ((1e9, ' G'), (1e6, ' M'), (1e3, ' k')):
        if a >= div:
            return f'{v / div:.3g}{suffix}'
    return f'{v:.3g}'


def fmt_ratio(v):
    return f'{v:.3g}x'


def spread(values, f=fmt):
    nums = [v for v in values if isinstance(v, float)]
    if not nums:
        return None
    med = statistics.median(nums)
    if len(nums) == 1:
        return f(med)
    return f'{f(med)} [{f(min(nums))}–{f(max(nums))}]'


def speedup(unit, mine, other):
    """How many times faster `mine` is than `other` (both figures in `unit`)."""
    if not (isinstance(mine, float) and isinstance(other, float)) or mine <= 0 or other <= 0:
        return None
    return other / mine if unit in LOWER_IS_BETTER else mine / other


def first_error(values):
    return next((v for v in values if isinstance(v, str)), None)


def cell(side, metric, values, notes):
    if metric is None:
        return '-'
    if side.missing:
        return 'skipped'
    if metric not in side.available:
        return NOT_BUILT if side.name == 'mp' and metric not in NOT_IN_MP else '-'
    s = spread(values)
    if s is not None:
        return s
    err = first_error(values) or 'no result'
    if 'needs 2 CPUs' in err:
        return 'skipped (1 CPU)'
    notes.append(f'{side.name} `{metric}`: {err}')
    return 'error'


def ratio_cell(unit, mine, other):
    rs = [speedup(unit, a, b) for a, b in zip(mine, other)]
    rs = [float(r) for r in rs if r is not None]
    return spread(rs, fmt_ratio) if rs else '-'


def make_table(sides, data, rounds):
    """data[side][(metric, pinned)] = list of per-round values. Returns (markdown rows, chart rows, notes)."""
    notes, lines, chart = [], [HEADER, '|---|---|---|---|---|---|'], []
    mp, py, raw = sides['mp'], sides['CPython'], sides['raw']
    for label, unit, metric, raw_metric, pinned in ROWS:
        def vals(side, m):
            return data[side.name].get((m, pinned), [None] * rounds) if m else [None] * rounds
        mv, pv, rv = vals(mp, metric), vals(py, metric), vals(raw, raw_metric)
        cells = [cell(mp, metric, mv, notes), cell(py, metric, pv, notes), cell(raw, raw_metric, rv, notes),
                 ratio_cell(unit, mv, pv), ratio_cell(unit, mv, rv)]
        lines.append(f'| {label} ({unit}) | ' + ' | '.join(cells) + ' |')
        per_round = lambda a, b: [r for r in (speedup(unit, x, y) for x, y in zip(a, b)) if r is not None]
        if metric and metric not in NOT_IN_MP:  # the chart is about mp
            chart.append(dict(label=f'{label.strip()} ({unit})', vs_py=per_round(mv, pv), vs_raw=per_round(mv, rv),
                              status=cells[0]))
    return lines, chart, notes


# ---- bar chart (SVG, no dependencies) -------------------------------------------------------------

def svg_chart(chart, title):
    row_h, panel_w, gap, top = 18, 360, 40, 70
    label_w = 20 + int(6.3 * max((len(r['label']) for r in chart), default=10))
    panels = [('mp speed-up over CPython (log)', 'vs_py', 0.1, 1000.0, 10.0),
              ('mp speed as a fraction of the raw limit (log)', 'vs_raw', 0.01, 10.0, 1 / 1.5)]
    width = label_w + 2 * panel_w + gap + 20
    height = top + row_h * len(chart) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="18" font-size="14" font-weight="bold">{esc(title)}</text>',
           '<text x="10" y="34" fill="#555">bars: median over rounds; whiskers: min–max; dashed: target; '
           'green: meets the target</text>']
    for i, row in enumerate(chart):
        y = top + i * row_h
        if i % 2 == 0:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{row_h}" fill="#f4f4f4" fill-opacity="0.5"/>')
        out.append(f'<text x="{label_w - 8}" y="{y + 13}" text-anchor="end">{esc(row["label"])}</text>')
    for p, (name, key, lo, hi, target) in enumerate(panels):
        x0 = label_w + p * (panel_w + gap)
        xs = lambda v: x0 + (math.log10(min(max(v, lo), hi)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * panel_w
        out.append(f'<text x="{x0}" y="{top - 22}" font-weight="bold">{esc(name)}</text>')
        decade = lo
        while decade <= hi * 1.0001:
            x = xs(decade)
            out.append(f'<line x1="{x:.1f}" y1="{top - 12}" x2="{x:.1f}" y2="{top + row_h * len(chart)}" '
                       f'stroke="{"#888" if abs(decade - 1) < 1e-9 else "#ddd"}"/>')
            out.append(f'<text x="{x:.1f}" y="{top - 4}" text-anchor="middle" fill="#555">{decade:g}</text>')
            decade *= 10
        xt = xs(target)
        out.append(f'<line x1="{xt:.1f}" y1="{top - 12}" x2="{xt:.1f}" y2="{top + row_h * len(chart)}" '
                   'stroke="#c00" stroke-dasharray="4,3"/>')
        for i, row in enumerate(chart):
            y = top + i * row_h
            vals = row[key]
            if not vals:
                if p == 0:
                    out.append(f'<text x="{x0 + 4}" y="{y + 13}" fill="#999">{esc(row["status"])}</text>')
                continue
            med = statistics.median(vals)
            color = '#3a3' if med >= target else '#e80'
            base = xs(lo)
            out.append(f'<rect x="{base:.1f}" y="{y + 3}" width="{max(xs(med) - base, 1):.1f}" height="{row_h - 6}" '
                       f'fill="{color}"><title>{esc(row["label"])}: {med:.3g}x</title></rect>')
            out.append(f'<line x1="{xs(min(vals)):.1f}" y1="{y + row_h / 2}" x2="{xs(max(vals)):.1f}" '
                       f'y2="{y + row_h / 2}" stroke="#222"/>')
            out.append(f'<text x="{min(xs(max(vals)), x0 + panel_w - 30) + 4:.1f}" y="{y + 13}" '
                       f'fill="#222">{med:.3g}x</text>')
    out.append('</svg>')
    return '\n'.join(out) + '\n'


def esc(s):
    return str(s).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')


# ---- smoke check ----------------------------------------------------------------------------------

CELL_RE = re.compile(r'^(-|error|skipped|skipped \(1 CPU\)|not built yet|'
                     r'[0-9.e+-]+( [kMG])?x?( \[[0-9.e+-]+( [kMG])?x?–[0-9.e+-]+( [kMG])?x?\])?)$')


def check_table(lines):
    """The table is well formed: header, separator, one row per metric with 6 well-formed cells,
    and every raw figure present (the raw primitives always run)."""
    problems = []
    if lines[0] != HEADER:
        problems.append('bad header')
    if len(lines) != 2 + len(ROWS):
        problems.append(f'{len(lines) - 2} rows, expected {len(ROWS)}')
    for line, row in zip(lines[2:], ROWS):
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) != 6:
            problems.append(f'row {line!r}: {len(cells)} cells')
            continue
        for c in cells[1:]:
            if not CELL_RE.match(c):
                problems.append(f'row {cells[0]!r}: bad cell {c!r}')
        raw_cell = cells[3]
        if raw_cell in ('-', 'error') and row[3] is not None:
            problems.append(f'row {cells[0]!r}: no raw figure')
    return problems


# ---- main ------------------------------------------------------------------------------------------

def machine_info():
    cpu = ''
    try:  # the model name, and family/model numbers: a virtual CPU's name may say little ("AMD EPYC")
        fields = {}
        with open('/proc/cpuinfo') as f:
            for line in f:
                if not line.strip():
                    break  # the first CPU is enough
                key, _, value = line.partition(':')
                fields[key.strip()] = value.strip()
        cpu = fields.get('model name', '')
        if 'cpu family' in fields and 'model' in fields:
            cpu += f" (family {fields['cpu family']} model {fields['model']})"
    except OSError:
        pass
    commit = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'], capture_output=True,
                            text=True).stdout.strip()
    return f'{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}; mp commit {commit or "?"}'


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    g = ap.add_mutually_exclusive_group()
    g.add_argument('--quick', action='store_true', help='3 rounds at a smaller size (< 2 min)')
    g.add_argument('--smoke', action='store_true', help='1 round at a tiny size; checks the table is well formed')
    ap.add_argument('--rounds', type=int, help='override the number of rounds')
    ap.add_argument('--reps', type=int, help='override the repetitions per side and round')
    ap.add_argument('--scale', type=float, help='override the iteration-count scale')
    ap.add_argument('--no-build', action='store_true', help='use the binaries in --bin-dir as they are')
    ap.add_argument('--bin-dir', help='where raw_bench and mp_bench are (default: build/bench/bench)')
    ap.add_argument('--python', default='python3', help='the CPython to compare with (default: python3)')
    ap.add_argument('--out', default=os.path.join(HERE, 'results'), help='output directory')
    ap.add_argument('--tag', help='written as bench-<mode>-<tag>.* (default: bench-<mode>.*)')
    ap.add_argument('--pause-repeat', type=int, metavar='N',
                    help="mp's spin loops execute N pause instructions per pause (0: none): as on a CPU "
                         "whose pause costs N times this one's (sets MP_PAUSE_REPEAT; see lib/support/spin.hpp)")
    args = ap.parse_args()
    if args.pause_repeat is not None and not 0 <= args.pause_repeat <= 1000:
        ap.error('--pause-repeat must be within 0..1000')

    mode = 'smoke' if args.smoke else 'quick' if args.quick else 'full'
    cfg = dict(MODES[mode])
    for k in ('rounds', 'reps', 'scale'):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    t_start = time.monotonic()

    bin_dir = args.bin_dir or os.path.join(ROOT, 'build', 'bench', 'bench')
    if not args.no_build:
        bin_dir = build(args) if not args.bin_dir else bin_dir
    mp_exe, raw_exe = os.path.join(bin_dir, 'mp_bench'), os.path.join(bin_dir, 'raw_bench')
    for exe in (mp_exe, raw_exe):
        if not os.access(exe, os.X_OK):
            sys.exit(f'run.py: {exe} is missing (build it, or drop --no-build)')
    env = dict(os.environ, MP_BENCH_EXE=mp_exe)
    env.pop('MP_PAUSE_REPEAT', None)
    if args.pause_repeat is not None:
        env['MP_PAUSE_REPEAT'] = str(args.pause_repeat)
    sides = {'raw': Side('raw', [raw_exe], env), 'mp': Side('mp', [mp_exe], env), 'CPython': python_side(args.python)}
    for s in sides.values():
        if not s.missing:
            s.probe()
        if s.missing:
            log(s.missing)
    pin_ok = shutil.which('taskset') is not None
    if not pin_ok:
        log('taskset not found: the [1 CPU] rows run unpinned')

    # What each side runs, free and pinned.
    wanted = {name: {False: [], True: []} for name in sides}
    for _label, _unit, metric, raw_metric, pinned in ROWS:
        for name, m in (('mp', metric), ('CPython', metric), ('raw', raw_metric)):
            if m and m in sides[name].available and m not in wanted[name][pinned]:
                wanted[name][pinned].append(m)

    timeout = {'smoke': 60, 'quick': 120, 'full': 900}[mode]
    data = {name: {} for name in sides}
    order = ['raw', 'mp', 'CPython']
    for r in range(cfg['rounds']):
        rot = order[r % 3:] + order[:r % 3]
        log(f'== round {r + 1}/{cfg["rounds"]} ({", ".join(rot)})')
        for name in rot:
            side = sides[name]
            if side.missing:
                continue
            for pinned in (False, True):
                t0 = time.monotonic()
                res = side.run(wanted[name][pinned], pinned and pin_ok, cfg['scale'], cfg['reps'], timeout)
                for m in wanted[name][pinned]:
                    data[name].setdefault((m, pinned), [None] * cfg['rounds'])[r] = res.get(m)
                if wanted[name][pinned]:
                    log(f'   {name}{" [1 CPU]" if pinned else ""}: {time.monotonic() - t0:.1f} s')

    lines, chart, notes = make_table(sides, data, cfg['rounds'])
    elapsed = time.monotonic() - t_start
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    meta = (f'{mode} run, {stamp}: {cfg["rounds"]} rounds x {cfg["reps"]} repetitions, scale {cfg["scale"]}, '
            f'{elapsed:.0f} s. {machine_info()}. '
            + (f'Pause-cost hook: MP_PAUSE_REPEAT={args.pause_repeat} (each pause in mp\'s spins is '
               f'{args.pause_repeat} pause instructions). ' if args.pause_repeat is not None else '')
            + 'CPython: '
            + ('skipped' if sides['CPython'].missing else
               subprocess.run([sides['CPython'].cmd[0], '-c', 'import sys; print(sys.version.split()[0])'],
                              capture_output=True, text=True).stdout.strip()))
    legend = ('Cells: median over rounds [min–max]. Ratios are computed per round. mp vs CPython: speed-up '
              '(goal >= 10x); mp vs raw: fraction of the raw primitive\'s speed (goal >= 0.67, i.e. within 1.5x). '
              '[1 CPU]: all processes pinned with `taskset -c 0`.')
    anchors = '\n'.join(f'- {label.strip()}: raw = `{raw}`' for label, _u, _m, raw, _p in ROWS if raw)
    md = '\n'.join([f'# mp benchmarks ({mode})', '', meta, '', *lines, '', legend, ''] +
                   (['Notes:', *[f'- {n}' for n in notes], ''] if notes else []) +
                   ([s.missing for s in sides.values() if s.missing]) +
                   ['', '<details><summary>raw primitive per row</summary>', '', anchors, '', '</details>', ''])

    print('\n'.join(lines))
    print()
    print(meta)
    for n in notes:
        print(f'note: {n}')

    os.makedirs(args.out, exist_ok=True)
    base = os.path.join(args.out, f'bench-{mode}' + (f'-{args.tag}' if args.tag else ''))
    with open(base + '.md', 'w') as f:
        f.write(md)
    with open(base + '.json', 'w') as f:
        json.dump({'mode': mode, 'config': cfg, 'meta': meta, 'pause_repeat': args.pause_repeat,
                   'data': {s: {f'{m}{" [1 CPU]" if p else ""}': v for (m, p), v in d.items()}
                            for s, d in data.items()}}, f, indent=1)
    with open(base + '.svg', 'w') as f:
        f.write(svg_chart(chart, f'mp vs CPython {sides["CPython"].missing and "(skipped)" or ""} '
                                 f'and vs the raw OS — {mode} run, {stamp}'))
    log(f'wrote {base}.md, .json, .svg')

    problems = check_table(lines)
    if problems:
        for p in problems:
            log(f'malformed table: {p}')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
