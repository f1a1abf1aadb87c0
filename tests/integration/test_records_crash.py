"""Crash safety with a real child process killed by SIGKILL mid-session.

Whatever the child was told was committed is in the database afterwards, unchanged;
the chain verifies; the next opening of the records marks the session interrupted
with its last event; and a session whose process is still alive is left alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from estim.cli import main as estim_main
from estim.protocols.catalog import get_protocol
from estim.records.models import Outcome
from estim.records.seed import seed_demo_patient
from estim.records.store import Store

CHILD = Path(__file__).with_name("records_child.py")
CODE = "PF-0042"
WAIT_S = 60.0  # only stops a broken test from hanging; never a timing assertion


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "records.db"
    with Store.open(path) as store:
        seed_demo_patient(store, get_protocol("stress"), code=CODE, diary_days=3)
    return path


class Child:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.session_id: int | None = None
        self.committed = -1

    def read_until(self, events: int) -> None:
        """Read the child's reports until it has committed ``events`` events."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + WAIT_S
        while self.committed < events:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"child ended early (exit {self.proc.poll()})")
            self._take(line)
            assert time.monotonic() < deadline, "child too slow to report"

    def drain(self) -> None:
        """After the kill: everything it managed to print before it died."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._take(line)

    def _take(self, line: str) -> None:
        word, _, value = line.strip().partition(" ")
        if word == "session":
            self.session_id = int(value)
        elif word == "committed":
            self.committed = int(value)


@contextmanager
def child(db: Path) -> Iterator[Child]:
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), CODE],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield Child(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT_S)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.mark.parametrize("kill_after", [5, 60])
def test_sigkill_mid_session_loses_nothing_committed(db: Path, kill_after: int) -> None:
    with child(db) as c:
        c.read_until(kill_after)
        os.kill(c.proc.pid, signal.SIGKILL)
        c.proc.wait(timeout=WAIT_S)
        c.drain()
        assert c.proc.returncode == -signal.SIGKILL
    assert c.session_id is not None

    store = Store.open(db)
    with store:
        before = store.session(c.session_id)
        assert before.is_open  # nobody has looked yet
        events = store.events(c.session_id)
        # Every event the child saw committed is there, in order, unchanged.
        assert len(events) >= c.committed + 1
        for ev in events[1 : c.committed + 1]:
            assert ev.kind == "status"
            assert ev.data["n"] == ev.sequence - 1
        assert store.verify(c.session_id).ok

        [recovered] = store.recover_interrupted()
        assert recovered.id == c.session_id
        assert recovered.outcome is Outcome.INTERRUPTED
        last = events[-1]
        assert f"last event #{last.sequence} 'status'" in (recovered.reason or "")
        assert recovered.ended_at is not None
        assert recovered.last_event_kind == "records.end"
        after = store.events(c.session_id)
        assert after[:-1] == events
        assert after[-1].data["last_sequence"] == last.sequence
        assert store.verify(c.session_id).ok
        assert store.recover_interrupted() == []
    lock_dir = db.with_name(db.name + ".locks")
    assert list(lock_dir.iterdir()) == []


def test_the_next_records_command_marks_the_session_interrupted(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with child(db) as c:
        c.read_until(10)
        os.kill(c.proc.pid, signal.SIGKILL)
        c.proc.wait(timeout=WAIT_S)
        c.drain()
    assert estim_main(["log", "verify", str(c.session_id), "--db", str(db)]) == 0
    out = capsys.readouterr()
    assert "marked interrupted" in out.err
    assert "ok," in out.out
    with Store.open(db) as store:
        assert store.session(c.session_id or 0).outcome is Outcome.INTERRUPTED


def test_a_session_still_running_in_another_process_is_left_alone(db: Path) -> None:
    with child(db) as c:
        c.read_until(3)
        with Store.open(db) as store:
            assert store.recover_interrupted() == []
            assert store.session(c.session_id or 0).is_open
            c.read_until(c.committed + 3)  # still recording
            assert store.verify(c.session_id or 0).ok
        os.kill(c.proc.pid, signal.SIGKILL)
        c.proc.wait(timeout=WAIT_S)
        c.drain()
    with Store.open(db) as store:
        assert [s.id for s in store.recover_interrupted()] == [c.session_id]
