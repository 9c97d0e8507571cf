"""The per-backend worker of :func:`fastmnist.bench.run`: ``python -m fastmnist.bench NAME SPEC_JSON``.

Times every case of the spec on one backend in this fresh process and prints the rows as JSON on
the last line of stdout; progress goes to stderr.
"""
import json
import sys

from .runner import run_backend

rows = run_backend(sys.argv[1], json.loads(sys.argv[2]), log=lambda line: print(line, file=sys.stderr))
print(json.dumps(rows))
