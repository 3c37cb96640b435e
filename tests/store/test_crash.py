"""Crash safety: SIGKILL a writing process at random moments; acknowledged writes survive.

A child process (crash_child.py) writes through the store with synchronous=FULL and prints
every acknowledged write. The test kills it with SIGKILL at a random moment, 20 times on
the same file, and after each kill checks: the file passes PRAGMA integrity_check, every
acknowledged revision is present with its key, the store starts again, and the next
child's revisions continue above everything acknowledged before.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

CHILD = Path(__file__).with_name("crash_child.py")


def run_and_kill(path: Path, tag: str, rng: random.Random) -> list[tuple[int, str]]:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), tag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first == "ready\n", f"child did not start: {first!r} {proc.stderr.read()}"
        time.sleep(rng.uniform(0.02, 0.3))  # the random moment of the crash
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()  # lines already written before the kill are acknowledged
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    acked = []
    for line in rest.splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2 and parts[0].isdigit():  # a torn last line was never complete
            acked.append((int(parts[0]), parts[1]))
    return acked


def test_acknowledged_writes_survive_20_sigkills(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    highest_acked = 0
    total = 0
    for round_no in range(20):
        acked = run_and_kill(path, f"r{round_no}", rng)
        assert acked, "the child acknowledged nothing before it was killed"
        revisions = [rev for rev, _ in acked]
        assert min(revisions) > highest_acked, "revisions went backwards after a restart"
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            stored = dict(
                conn.execute(
                    f"SELECT id, name FROM kine WHERE id IN ({','.join('?' * len(revisions))})",
                    revisions,
                ).fetchall()
            )
        finally:
            conn.close()
        missing = [(rev, key) for rev, key in acked if stored.get(rev) != key]
        assert not missing, f"round {round_no}: acknowledged writes lost: {missing[:5]}"
        highest_acked = max(revisions)
        total += len(acked)
    assert total > 20
