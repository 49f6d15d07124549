#!/usr/bin/env python3
# samples/check_sample.py — runs one tutorial sample as a CTest test and checks what it prints.
#
#   check_sample.py exact EXE RUNS LINE...  every run prints exactly LINE... (in order)
#   check_sample.py race EXE RUNS LINE...   every run prints LINE... with the last one "Value: N";
#                                           the race (N != 0) shows in at least one run
#   check_sample.py file EXE [unlocked]     run in a fresh temporary directory; prints
#                                           "tmp.txt has 500000 lines" and tmp.txt holds every
#                                           "Data line i from task t." exactly once, nothing else.
#                                           On Windows (MP_SAMPLE_OS=windows) lines end in "\r\n"
#                                           (text mode, as Python's print there), and `unlocked`
#                                           appends may lose lines: an append there is a seek to
#                                           the end then a write, in the C runtime both CPython's
#                                           open(.., 'a') and std::ofstream use (CPython issue
#                                           gh-86772), so only the count printed is checked
#   check_sample.py python EXE PY [sort=A:B] [mask=I,J]
#                                           prints what `python3 PY` prints, after normalizing
#                                           both: lines A..B-1 sorted (an arbitrary order in
#                                           Python too), integers on lines I, J... (pids) masked
#   check_sample.py hang EXE                after 3 s still running, has printed its two lines;
#                                           stopped as Ctrl-C stops it (SIGINT to its process
#                                           group), it leaves no process behind
#
# The start method comes from the environment (MP_START_METHOD), set per test by tests.cmake.
# Each sample's name and output are printed, so `ctest --preset samples` shows them.
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

# Runs the samples through an emulator when set (the Windows build under Wine: "wine").
EMULATOR = os.environ.get("MP_SAMPLE_EMULATOR", "").split()
# Seconds; bounds every run, so a hanging sample fails instead of blocking. Under Wine every file
# open and close is a round trip to wineserver (about 0.15 ms of CPU): shared_file_lock's 500,000
# of them, serialized by its lock by design, take 70-90 s on an idle host.
RUN_TIMEOUT = 300 if EMULATOR else 120
# The OS the samples are built for (cmake/windows.cmake sets "windows"): what differs there.
WINDOWS = os.environ.get("MP_SAMPLE_OS", "") == "windows"


def header(exe):
    method = os.environ.get("MP_START_METHOD", "default")
    print(f"== {os.path.basename(exe)} ({method})", flush=True)


def run(exe, cwd=None):
    start = time.monotonic()
    try:
        proc = subprocess.run(EMULATOR + [exe], cwd=cwd, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        fail(f"{exe} did not finish within {RUN_TIMEOUT} s; output so far: {e.stdout!r}")
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        fail(f"{exe} exited with {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    if proc.stderr:
        fail(f"{exe} wrote to stderr: {proc.stderr}")
    return proc.stdout, elapsed


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def check_exact(exe, runs, expected):
    header(exe)
    for k in range(runs):
        out, elapsed = run(exe)
        if k == 0:
            print(out, end="")
        if out.splitlines() != expected:
            fail(f"run {k + 1}: expected {expected!r}, got {out.splitlines()!r}")
    print(f"-- output exactly as expected in {runs} run(s) (last took {elapsed:.2f} s)")


def check_race(exe, runs, expected):
    header(exe)
    values = []
    for k in range(runs):
        out, _ = run(exe)
        if k == 0:
            print(out, end="")
        lines = out.splitlines()
        if len(lines) != len(expected) or lines[:-1] != expected[:-1]:
            fail(f"run {k + 1}: expected lines like {expected!r}, got {lines!r}")
        m = re.fullmatch(r"Value: (-?\d+)", lines[-1])
        if not m:
            fail(f"run {k + 1}: last line is not 'Value: N': {lines[-1]!r}")
        values.append(int(m.group(1)))
    raced = sum(v != 0 for v in values)
    print(f"-- race shown (Value != 0) in {raced} of {runs} runs: {values}")
    if raced == 0:
        fail("the race never showed")


def check_file(exe, options):
    header(exe)
    racy = WINDOWS and options == ["unlocked"]
    with tempfile.TemporaryDirectory(prefix="mp_sample_", ignore_cleanup_errors=True) as tmp:
        out, elapsed = run(exe, cwd=tmp)
        print(out, end="")
        with open(os.path.join(tmp, "tmp.txt"), "rb") as f:
            data = f.read()
    eol = b"\r\n" if WINDOWS else b"\n"
    if racy:
        # What CPython guarantees there: the count printed is the file's (lines lost to
        # overlapping appends are reported, not failed).
        count = len(data.strip().split(b"\n"))
        if out.splitlines() != [f"tmp.txt has {count} lines"] or count > 500000:
            fail(f"unexpected output {out!r} (tmp.txt has {count} lines)")
        intact = len(set(data.split(eol)) & {f"Data line {i} from task {t}.".encode()
                                              for t in range(50) for i in range(10000)})
        print(f"-- {intact} of 500000 lines intact: on Windows unlocked appends race, as "
              f"CPython's (took {elapsed:.2f} s)")
        return
    if out.splitlines() != ["tmp.txt has 500000 lines"]:
        fail(f"unexpected output {out!r}")
    if not data.endswith(eol):
        fail("tmp.txt does not end with a newline: a line is torn")
    lines = data[:-len(eol)].split(eol)
    expected = {f"Data line {i} from task {t}.".encode() for t in range(50) for i in range(10000)}
    seen = set()
    for n, line in enumerate(lines, 1):
        if line not in expected:
            fail(f"tmp.txt line {n} is torn or unknown: {line!r}")
        if line in seen:
            fail(f"tmp.txt line {n} is a duplicate: {line!r}")
        seen.add(line)
    if seen != expected:
        fail(f"tmp.txt misses {len(expected - seen)} lines")
    print(f"-- all 500000 lines present exactly once, none torn (took {elapsed:.2f} s)")


def normalize(lines, options):
    lines = list(lines)
    for opt in options:
        key, _, value = opt.partition("=")
        if key == "sort":
            a, b = (int(x) for x in value.split(":"))
            lines[a:b] = sorted(lines[a:b])
        elif key == "mask":
            for i in (int(x) for x in value.split(",")):
                if i < len(lines):
                    lines[i] = re.sub(r"\d+", "N", lines[i])
        else:
            fail(f"unknown option {opt!r}")
    return lines


def check_python(exe, original, options):
    header(exe)
    try:
        py = subprocess.run([sys.executable, original], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        fail(f"the Python original {original} did not finish within {RUN_TIMEOUT} s")
    if py.returncode != 0:
        fail(f"the Python original {original} exited with {py.returncode}: {py.stderr}")
    out, elapsed = run(exe)
    print(out, end="")
    want, got = normalize(py.stdout.splitlines(), options), normalize(out.splitlines(), options)
    if got != want:
        fail(f"expected (as {os.path.basename(original)}) {want!r}, got {got!r}")
    print(f"-- output as the Python original's ({os.path.basename(original)}; took {elapsed:.2f} s)")


def descendants(pid):
    """Pids of every live descendant of pid (from /proc)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            # The command name is in parentheses and may contain spaces: split after it.
            parent[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - found
        found |= frontier
    return found


def same_program(exe, main_pid):
    """Pids of the processes running exe (by its name) besides main_pid: under Wine a child is
    not a descendant of its parent (Wine starts each process through a double fork)."""
    name = os.path.basename(exe).lower()
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != main_pid:
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if re.split(r"[\\/]", argv0)[-1].lower() == name:
                found.add(int(entry))
    return found


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def check_hang(exe):
    header(exe)
    with tempfile.TemporaryFile("w+") as out:
        # Its own process group, as a shell gives a foreground job.
        proc = subprocess.Popen(EMULATOR + [exe], stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            proc.wait(timeout=3)
            out.seek(0)
            fail(f"it ended by itself (exit code {proc.returncode}): {out.read()!r}")
        except subprocess.TimeoutExpired:
            pass
        children = same_program(exe, proc.pid) if EMULATOR else descendants(proc.pid)
        out.seek(0)
        text = out.read()
        # Ctrl-C: SIGINT to the whole group (Wine turns it into a CTRL_C_EVENT for each process,
        # as Windows' console sends one to every process attached). A non-daemonic child outlives
        # a parent killed alone, as in CPython; daemonic ones do not.
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=RUN_TIMEOUT)
        out.seek(0)
        after = out.read()[len(text):]
    print(text, end="")
    expected = ["Main: Notifying the process", "Process: Waiting to be notified..."]
    if text.splitlines() != expected:
        fail(f"after 3 s expected {expected!r}, got {text.splitlines()!r}")
    # Windows runs a process's Ctrl-C handling on a new thread of its own: the parent's join() may
    # see its child end first and print its last line (CPython there may equally raise
    # KeyboardInterrupt in the child first). POSIX ends both at the signal.
    if after and not (WINDOWS and after.splitlines() == ["Main: Done"]):
        fail(f"after Ctrl-C it printed {after!r}")
    if not children:
        fail("no child process was running after 3 s")
    deadline = time.monotonic() + 10
    while any(alive(c) for c in children):
        if time.monotonic() > deadline:
            left = [c for c in children if alive(c)]
            for c in left:
                os.kill(c, signal.SIGKILL)
            fail(f"children left behind after killing the sample: {left}")
        time.sleep(0.05)
    print(f"-- hangs by design (the notification is lost): still running after 3 s, then stopped "
          f"like Ctrl-C (SIGINT to its process group); its {len(children)} child process(es) "
          f"ended with it")


def main(argv):
    mode, exe = argv[1], argv[2]
    if mode == "exact":
        check_exact(exe, int(argv[3]), argv[4:])
    elif mode == "race":
        check_race(exe, int(argv[3]), argv[4:])
    elif mode == "file":
        check_file(exe, argv[3:])
    elif mode == "hang":
        check_hang(exe)
    elif mode == "python":
        check_python(exe, argv[3], argv[4:])
    else:
        fail(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv)
