"""Attach notebooks to a run that trains elsewhere (the CLI), with the controls working.

The run (`serve(trainer, run_dir)`, which `nca-widgets train` starts) and any number of notebooks
(`attach(run_dir)`) meet in `run_dir/live/`:

- `watchers/<id>`: each attached notebook touches its file every second. The run subscribes to
  its trainer's snapshots only while a watcher file is fresh, so a run nobody watches builds no
  pictures and pays one directory listing per poll.
- `snapshot.pkl`: the newest snapshot (a pickled `Snapshot`: plain numpy), replaced atomically
  at most `publish_hz` times a second while watched.
- `commands/<time>-<id>.json`: controls from notebooks. The run polls them a few times a second
  and applies them in order through the trainer's own methods, so they take effect at train-step
  boundaries like the buttons of a local dashboard; `replies/<id>.json` answers those that wait
  (a save's path).

Detaching removes the watcher file; the run goes on untouched. A run directory is the user's own,
so unpickling its snapshot is as trusted as loading its checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from nca_widgets.publisher import Publisher
from nca_widgets.snapshot import Snapshot

LIVE = "live"  # the folder under the run directory
FRESH_S = 5.0  # a watcher file older than this has left
POLL_S = 0.2  # how often each side looks at the folder


def _folders(run_dir: str | os.PathLike) -> tuple[Path, Path, Path, Path]:
    live = Path(run_dir) / LIVE
    parts = live / "watchers", live / "commands", live / "replies"
    for part in parts:
        part.mkdir(parents=True, exist_ok=True)
    return live, *parts


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Server:
    """The run's side: publishes snapshots while watched and applies notebooks' commands."""

    def __init__(self, trainer: Any, run_dir: str | os.PathLike, poll_s: float = POLL_S):
        self.trainer = trainer
        self.live, self.watchers, self.commands, self.replies = _folders(run_dir)
        self._unsubscribe: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._poll_s = poll_s
        self.applied: list[str] = []  # kinds of the commands applied, in order
        self._thread = threading.Thread(target=self._loop, name="nca-attach-server", daemon=True)
        self._thread.start()

    @property
    def watched(self) -> bool:
        """Whether a notebook is attached (its watcher file is fresh)."""
        now = time.time()
        return any(now - p.stat().st_mtime < FRESH_S for p in self.watchers.iterdir()
                   if not p.name.startswith("."))

    def _loop(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                self._poll()
            except Exception as error:  # a bad command file must not end the control channel
                print(f"nca-widgets: attach: {type(error).__name__}: {error}", flush=True)

    def _poll(self) -> None:
        watched = self.watched
        if watched and self._unsubscribe is None:
            self._unsubscribe = self.trainer.subscribe(self._publish)
            self._publish(self.trainer.latest())  # a paused run publishes nothing new
        elif not watched and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for path in sorted(self.commands.glob("*.json")):
            command = json.loads(path.read_text())
            path.unlink()
            self._apply(command)

    def _publish(self, snapshot: Snapshot) -> None:
        _write_atomically(self.live / "snapshot.pkl", pickle.dumps(snapshot))

    def _apply(self, command: dict) -> None:
        kind, arg, reply = command["kind"], command.get("arg"), command.get("reply")
        trainer = self.trainer
        actions: dict[str, Callable[[], Any]] = {
            "resume": trainer.resume, "start": trainer.start, "stop": trainer.stop,
            "pause": lambda: trainer.pause(wait=False),
            "advance": lambda: trainer.advance(int(arg)),
            "set_lr": lambda: setattr(trainer, "learning_rate", float(arg)),
            "probe": lambda: trainer.set_probe(**arg),
            "save": lambda: trainer.save(wait=False),
        }
        if kind not in actions:
            raise ValueError(f"unknown command {kind!r}")
        try:
            result = actions[kind]()
        except Exception as error:
            self._answer(reply, error=f"{type(error).__name__}: {error}")
            return
        self.applied.append(kind)
        if isinstance(result, Future):  # a save: answer once it is written
            result.add_done_callback(lambda done: self._answer(
                reply, path=None if done.exception() else str(done.result()),
                error=None if done.exception() is None else str(done.exception())))
        else:
            self._answer(reply)

    def _answer(self, reply: str | None, **answer: Any) -> None:
        if reply:
            _write_atomically(self.replies / f"{reply}.json", json.dumps(answer).encode())

    def close(self) -> None:
        """Stop serving; attached notebooks see the run's last snapshot."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self._unsubscribe is not None:
            self._unsubscribe()


def serve(trainer: Any, run_dir: str | os.PathLike) -> Server:
    """Let notebooks attach to `trainer`'s run through `run_dir` (see the module docstring)."""
    return Server(trainer, run_dir)


class AttachedRun:
    """A run that trains elsewhere, seen through its run directory: a trainer for the widgets.

    `Dashboard(attach(run_dir))` shows it like a local run: live loss, pool, scrubber, and
    controls (pause, step, resume, learning rate, save, stop) that reach the run through its
    command folder. `detach()` leaves the run untouched.
    """

    def __init__(self, run_dir: str | os.PathLike, timeout: float = 30.0,
                 poll_s: float = POLL_S):
        self.run_dir = Path(run_dir)
        if not (self.run_dir / LIVE).is_dir():
            raise ValueError(f"{run_dir} has no live run to attach to; start one with "
                             f"`nca-widgets train SYSTEM --run-dir {run_dir}`")
        self.live, self.watchers, self.commands, self.replies = _folders(run_dir)
        self._id = uuid.uuid4().hex
        self._watcher = self.watchers / self._id
        self._publisher = Publisher()
        self._latest: Snapshot | None = None
        self._mtime = 0.0
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poll_s = poll_s
        self._watcher.touch()
        self._thread = threading.Thread(target=self._loop, name="nca-attached", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while self._latest is None:
            if time.monotonic() > deadline:
                self.detach()
                raise TimeoutError(f"no snapshot from the run in {run_dir} within {timeout:.0f} s;"
                                   " is it still training?")
            time.sleep(0.05)

    # --- what the widgets read --------------------------------------------------------------

    @property
    def status(self) -> str:
        """The run's status, as of its newest snapshot."""
        return self.latest().status

    @property
    def step(self) -> int:
        """Train steps done, as of the run's newest snapshot."""
        return self.latest().step

    @property
    def learning_rate(self) -> float:
        """The run's learning rate, as of its newest snapshot (setting it asks the run)."""
        return self.latest().learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._send("set_lr", float(value))

    def latest(self) -> Snapshot:
        """The newest snapshot the run published."""
        return self._latest

    def snapshot(self) -> Snapshot:
        """The newest snapshot the run published."""
        return self._latest

    def subscribe(self, fn: Callable[[Snapshot], None]) -> Callable[[], None]:
        """Call `fn` with every new snapshot of the run; returns the unsubscribe function."""
        return self._publisher.subscribe(fn)

    # --- controls: commands to the run ------------------------------------------------------

    def start(self) -> None:
        """Ask the run to start (a run the CLI trains has started already)."""
        self._send("start")

    def resume(self) -> None:
        """Ask the run to resume at its next step boundary."""
        self._send("resume")

    def pause(self, wait: bool = False) -> None:
        """Ask the run to pause at its next step boundary (never waits)."""
        self._send("pause")

    def advance(self, n: int = 1) -> None:
        """Ask the paused run for exactly `n` more steps."""
        self._send("advance", int(n))

    def stop(self) -> None:
        """Ask the run to stop for good (the CLI then saves and exits)."""
        self._send("stop")

    def save(self, path: Any = None, wait: bool = True, timeout: float | None = 600) -> Any:
        """Ask the run for a checkpoint in its run directory; its path (or a Future of it)."""
        if path is not None:
            raise ValueError("an attached run saves into its own run directory; leave path out")
        written = self._send("save", reply=True)
        return written.result(timeout) if wait else written

    def set_probe(self, index: int | None = None, split: str | None = None,
                  channel: int | None = None, level: float | None = None) -> None:
        """Ask the run to roll out another probe example, channel or level."""
        self._send("probe", {"index": index, "split": split, "channel": channel, "level": level})

    def detach(self) -> None:
        """Stop watching; the run goes on (and stops building pictures if nobody else watches)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self._watcher.unlink()
        self._publisher.close()

    close = detach

    def __repr__(self) -> str:
        snap = self._latest
        return f"AttachedRun({str(self.run_dir)!r}, status={snap.status!r}, step={snap.step})"

    # --- the channel ------------------------------------------------------------------------

    def _send(self, kind: str, arg: Any = None, reply: bool = False) -> Future | None:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        answer: Future | None = None
        if reply:
            answer = Future()
            with self._lock:
                self._pending[name] = answer
        body = {"kind": kind, "arg": arg, "reply": name if reply else None}
        _write_atomically(self.commands / f"{name}.json", json.dumps(body).encode())
        return answer

    def _loop(self) -> None:
        beat = 0.0
        while not self._stop.wait(self._poll_s):
            now = time.monotonic()
            if now - beat > 1.0:
                self._watcher.touch()
                beat = now
            self._read_snapshot()
            self._read_replies()

    def _read_snapshot(self) -> None:
        path = self.live / "snapshot.pkl"
        try:
            mtime = path.stat().st_mtime
            if mtime == self._mtime:
                return
            snapshot = pickle.loads(path.read_bytes())
        except (FileNotFoundError, EOFError, pickle.UnpicklingError):
            return
        self._mtime, self._latest = mtime, snapshot
        self._publisher.offer(snapshot)

    def _read_replies(self) -> None:
        with self._lock:
            pending = list(self._pending.items())
        for name, future in pending:
            path = self.replies / f"{name}.json"
            if not path.exists():
                continue
            answer = json.loads(path.read_text())
            path.unlink()
            with self._lock:
                self._pending.pop(name, None)
            if answer.get("error"):
                future.set_exception(RuntimeError(answer["error"]))
            else:
                future.set_result(Path(answer["path"]) if answer.get("path") else None)


def attach(run_dir: str | os.PathLike, timeout: float = 30.0) -> AttachedRun:
    """Attach to the run training in `run_dir` (e.g. by `nca-widgets train`).

    Returns a trainer for `Dashboard`, `LossPlot`, ... whose controls reach the run.
    """
    return AttachedRun(run_dir, timeout)
