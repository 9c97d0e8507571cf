"""Epochs of every target timed turn about (``fastmnist bench --interleave``).

:func:`fastmnist.bench.run` times one target after the other, each in a process of its own: on a
machine whose speed drifts from minute to minute (a shared VM: the same fit measured 0.065-0.16 s
within half an hour on a 2-core Zen 4), a ratio between two targets then also measures the drift.
Here every target's process starts at once and waits on its pipe; each case is built and warmed
up in each, then its repeats go round the targets, one timed call each, the order rotating from
round to round, so that every target's repeats spread over the same minutes. A process sleeps
``config.BENCH_INTERLEAVE_GAP_S`` after each timed call, before it answers: the threads a library
leaves spinning after its last parallel region (Numba's OpenMP threads, PyTorch's) must not run
into the next target's turn.

The worker: ``python -m fastmnist.bench --serve NAME SPEC_JSON``; requests and answers are JSON
lines, answers on stdout behind :data:`MARK` (a library may print there too).
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from .. import config
from .cases import spec_cases

MARK = "@fastmnist-bench "


def serve(name: str, spec: dict) -> None:
    """The worker: build, warm up and time the cases the parent names, one request at a time."""
    from .runner import warm_up
    from .targets import target
    t = target(name)
    cases = {c.name: c for c in spec_cases(spec)}
    current = None

    def answer(value):
        print(MARK + json.dumps(value), flush=True)

    with t.context():
        answer("ready")
        for line in sys.stdin:
            request = json.loads(line)
            if request["op"] == "build":
                current = None  # the previous case's data goes before the next one's is made
                case = cases[request["case"]]
                current = case.make(t)
                if current is not None:
                    warm_up(case, current)
                    time.sleep(config.BENCH_INTERLEAVE_GAP_S)  # as after a timed call: no spinning into a turn
                answer(current is not None)
            else:
                fn, sync = current
                t0 = time.perf_counter()
                fn()
                sync()
                seconds = time.perf_counter() - t0
                time.sleep(config.BENCH_INTERLEAVE_GAP_S)
                answer(seconds)


class _Worker:
    def __init__(self, t, spec: dict, env: dict, log):
        self.target, self.log = t, log
        self.proc = subprocess.Popen([sys.executable, "-m", "fastmnist.bench", "--serve", t.name, json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        self.errors: list[str] = []  # its error output, passed on to the log as it comes: the reason if it fails
        self.reader = threading.Thread(target=self._read_errors, daemon=True)
        self.reader.start()
        self.ask(None)  # "ready"

    def _read_errors(self):
        for line in self.proc.stderr:
            self.errors.append(line.rstrip())
            self.log(self.errors[-1])

    def ask(self, request):
        """Send ``request`` (None: nothing, wait for the next answer); the answer, or WorkerFailed."""
        from .runner import WorkerFailed, error_line
        try:
            if request is not None:
                self.proc.stdin.write(json.dumps(request) + "\n")
                self.proc.stdin.flush()
            for line in self.proc.stdout:
                at = line.find(MARK)  # after whatever a library left on the line without a newline
                if line[:max(at, 0)].strip() or at < 0:
                    self.log(line[:at if at >= 0 else len(line)].rstrip())  # the library's own output
                if at >= 0:
                    return json.loads(line[at + len(MARK):])
        except (BrokenPipeError, OSError):
            pass
        code = self.proc.wait()
        self.reader.join(timeout=10)  # the rest of its error output
        raise WorkerFailed(f"its benchmark worker failed (exit {code}): {error_line(self.errors)}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def run_interleaved(targets: list, spec: dict, env_for, log) -> tuple[list, dict]:
    """(rows, {target: WorkerFailed}) for every case of ``spec`` on ``targets``, repeats turn about."""
    from .runner import WorkerFailed, _row
    rows, failed, workers = [], {}, {}
    for t in targets:
        try:
            workers[t] = _Worker(t, spec, env_for(t), log)
        except WorkerFailed as exc:
            failed[t] = exc
    try:
        for case in spec_cases(spec):
            times = {}
            for t, worker in list(workers.items()):
                try:
                    if worker.ask({"op": "build", "case": case.name}):
                        times[t] = []
                except WorkerFailed as exc:
                    failed[t] = exc
                    del workers[t]
            order = list(times)  # the targets this case applies to (none: the tutorials and a CNN)
            for r in range(case.repeat if order else 0):
                for t in order[r % len(order):] + order[:r % len(order)]:
                    if t not in workers:
                        continue
                    try:
                        times[t].append(workers[t].ask({"op": "time"}))
                    except WorkerFailed as exc:
                        failed[t] = exc
                        del workers[t]
            for t in order:
                if t in workers:
                    rows.append(_row(case, t, times[t]))
                    log(f"{case.name:48s} {t.name:6s} {rows[-1]['median_s'] * 1e3:10.3f} ms")
    finally:
        for worker in workers.values():
            worker.close()
    return rows, failed
