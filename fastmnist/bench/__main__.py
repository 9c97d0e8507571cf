"""The per-backend worker of :func:`fastmnist.bench.run`: ``python -m fastmnist.bench NAME SPEC_JSON``.

Times every case of the spec on one backend in this fresh process and prints the rows as JSON on
the last line of stdout; progress goes to stderr. ``python -m fastmnist.bench --serve NAME SPEC_JSON``
is the worker of interleaved timing instead (lockstep.py).
"""
import json
import sys

from .lockstep import serve
from .runner import run_backend

if sys.argv[1] == "--serve":  # interleaved timing: lockstep.py
    serve(sys.argv[2], json.loads(sys.argv[3]))
else:
    rows = run_backend(sys.argv[1], json.loads(sys.argv[2]), log=lambda line: print(line, file=sys.stderr))
    print(json.dumps(rows))
