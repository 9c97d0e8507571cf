"""What a person at a terminal sees while training: a bar that moves during the epoch and one line
per epoch that stays, in a real pseudo-terminal (also one that reports 0 columns)."""
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest


def run_in_terminal(args, columns=100, timeout=300) -> str:
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = dict(os.environ, FASTMNIST_PROGRESS_SECONDS="0.05")
    env.pop("COLUMNS", None)
    proc = subprocess.Popen([sys.executable, "-m", "fastmnist", *args], stdin=child, stdout=child, stderr=child,
                            env=env, close_fds=True)
    os.close(child)
    out, deadline = b"", time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([main], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(main)
    assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
    return out.decode(errors="replace")


@pytest.mark.parametrize("columns", [100, 0])
def test_bar_moves_and_each_epoch_leaves_a_line(mnist_dir, columns):
    text = run_in_terminal(["train", "--backend", "numpy", "--model", "simple-cnn", "--data", str(mnist_dir),
                            "--limit-train", "3000", "--limit-test", "200", "--epochs", "2"], columns)
    lines = re.findall(r"epoch (\d)/2: loss [\d.]+, accuracy [\d.]+, [\d.]+ s, [\d,]+ samples/s", text)
    assert lines == ["1", "2"], text[-2000:]
    # the bar was drawn with intermediate counts (30 steps an epoch; redrawn every 0.05 s here)
    counts = {int(c) for c in re.findall(r"epoch 1/2:\s+\d+%\|[^|]*\|\s*(\d+)/30", text)}
    assert any(0 < c < 30 for c in counts), text[-2000:]
