"""Test doubles for the widget tests: a trainer that publishes hand-made snapshots on demand,
snapshot builders for both systems, and a comm that records what widgets send."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import comm
import numpy as np

from nca_widgets.snapshot import (
    FrameProbe,
    History,
    PoolView,
    Snapshot,
    VolumeProbe,
    frozen,
)


def make_history(n: int, *, start: int = 1, nan_at: tuple[int, ...] = (), lr: float = 1e-3,
                 seed: int = 0) -> History:
    """n steps from `start`, a falling noisy loss; NaN at the given steps."""
    rng = np.random.default_rng(seed)
    step = np.arange(start, start + n, dtype=np.int64)
    loss = (1.0 / np.sqrt(step) * np.exp(0.1 * rng.standard_normal(n))).astype(np.float32)
    for s in nan_at:
        loss[s - start] = np.nan
    return History(
        step=frozen(step), loss=frozen(loss), lr=frozen(np.full(n, lr, np.float32)),
        wall_s=frozen(step * 0.01),
    )


def make_pool(
    p: int = 4, h: int = 6, w: int = 5, *, split: str = "train", seed: int = 0, step: int = -1
) -> PoolView:
    """A pool of p samples with distinct losses, deliberately not sorted."""
    rng = np.random.default_rng(seed)
    return PoolView(
        targets=frozen(rng.integers(0, 256, (p, h, w), dtype=np.uint8)),
        renders=frozen(rng.integers(0, 256, (p, h, w), dtype=np.uint8)),
        losses=frozen(rng.permutation(np.arange(1, p + 1, dtype=np.float32) / 10)),
        digit_indices=frozen(np.arange(100, 100 + p, dtype=np.int64)),
        split=split, step=step,
    )


def make_volume_probe(shape: tuple[int, int, int, int] = (7, 4, 6, 5), *, channel: int = 2,
                      step: int = 0, index: int = 0, seed: int = 0) -> VolumeProbe:
    """A (T, D, H, W) uint8 volume of one of 3 channels; channel 2 is the picture, in [0, 1]."""
    rng = np.random.default_rng(seed + 1000 * channel)
    return VolumeProbe(
        volume=frozen(rng.integers(0, 256, shape, dtype=np.uint8)), channel=channel,
        num_channels=3, value_range=(0.0, 1.0) if channel == 2 else (-1.0, 1.0),
        digit=frozen(np.zeros(shape[2:], np.uint8)), probe_index=index, probe_split="train",
        step=step,
    )


def make_frame_probe(shape: tuple[int, int, int] = (7, 6, 5), *, step: int = 0,
                     index: int = 0, seed: int = 0) -> FrameProbe:
    """A (T, H, W) uint8 rollout with input and target panels and a rising PSNR."""
    rng = np.random.default_rng(seed)
    t = shape[0]
    return FrameProbe(
        frames=frozen(rng.integers(0, 256, shape, dtype=np.uint8)),
        input=frozen(rng.integers(0, 256, shape[1:], dtype=np.uint8)),
        target=frozen(rng.integers(0, 256, shape[1:], dtype=np.uint8)),
        psnr=frozen(np.linspace(5, 20, t).astype(np.float32)), note="noise level 0.50",
        labels=("noisy input", "estimate", "target"),
        probe_index=index, probe_split="test", step=step,
    )


def make_snapshot(system: str = "sa-nca", step: int = 0, **fields: Any) -> Snapshot:
    """A snapshot at `step` with a history of `step` entries, a pool and a probe."""
    probe = make_volume_probe(step=step) if system == "sa-nca" else make_frame_probe(step=step)
    values = dict(
        system=system, title=f"{system} · a fake", step=step,
        picture_kind="volume" if system == "sa-nca" else "frame", total_steps=100,
        status="running", message=None,
        learning_rate=1e-3, steps_per_s=10.0, history=make_history(step),
        pool=make_pool(split="train" if system == "sa-nca" else "test"), probe=probe,
    )
    values.update(fields)
    return Snapshot(**values)


class FakeTrainer:
    """The trainer protocol with no training: tests publish snapshots and read `calls`."""

    def __init__(self, system: str = "sa-nca", snapshot: Snapshot | None = None) -> None:
        self.system = system
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: dict[str, Exception] = {}  # method name -> exception it raises
        self._subscribers: dict[int, Callable[[Snapshot], None]] = {}
        self._next = 0
        self._snapshot = snapshot or make_snapshot(system, 0, status="idle")
        self.status = self._snapshot.status
        self.step = self._snapshot.step
        self._lr = 1e-3

    def _record(self, name: str, **kwargs: Any) -> None:
        self.calls.append((name, kwargs))
        if name in self.fail:
            raise self.fail[name]

    def names(self) -> list[str]:
        """Names of the recorded calls, in order."""
        return [name for name, _ in self.calls]

    @property
    def learning_rate(self) -> float:
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self._record("set_learning_rate", value=value)
        self._lr = value

    def start(self) -> None:
        self._record("start")
        self.status = "running"

    def pause(self, wait: bool = True) -> None:
        self._record("pause", wait=wait)
        self.status = "paused"

    def resume(self) -> None:
        self._record("resume")
        self.status = "running"

    def advance(self, n: int = 1) -> None:
        self._record("advance", n=n)

    def stop(self) -> None:
        self._record("stop")
        self.status = "stopped"

    def save(self, path: Any = None, wait: bool = True) -> Path | Future:
        self._record("save", path=path, wait=wait)
        written = Path(path or f"/tmp/fake-run/checkpoint-{self.step:06d}")
        return written if wait else _done(written)

    def set_probe(self, index: int | None = None, split: str | None = None,
                  channel: int | None = None, **level: float) -> None:
        self._record("set_probe", index=index, split=split, channel=channel, **level)

    def edit(self, mask: np.ndarray, mode: str = "erase", time: int = 0,
             depth: int | None = None) -> None:
        self._record("edit", mask=mask, mode=mode, time=time, depth=depth)

    def clear_edits(self) -> None:
        self._record("clear_edits")

    def prepare_edits(self) -> Future:
        self._record("prepare_edits")
        return _done(None)

    def inject(self, count: int = 8, wait: bool = True) -> Future:
        self._record("inject", count=count, wait=wait)
        return _done(self.step)

    def subscribe(self, fn: Callable[[Snapshot], None]) -> Callable[[], None]:
        sid, self._next = self._next, self._next + 1
        self._subscribers[sid] = fn
        return lambda: self._subscribers.pop(sid, None)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def latest(self) -> Snapshot:
        return self._snapshot

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def publish(self, snapshot: Snapshot | None = None, **changes: Any) -> Snapshot:
        """Hand `snapshot` (or the last one with `changes`) to every subscriber, on this thread."""
        snapshot = snapshot or dataclasses.replace(self._snapshot, **changes)
        self._snapshot = snapshot
        self.status, self.step = snapshot.status, snapshot.step
        for fn in list(self._subscribers.values()):
            fn(snapshot)
        return snapshot


class RecordingComm(comm.DummyComm):
    """A comm that keeps every message a widget sends: `(method, data, buffers)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[tuple[str, dict, list]] = []
        super().__init__(*args, **kwargs)

    def publish_msg(self, msg_type: str, data: dict | None = None, metadata: dict | None = None,
                    buffers: list | None = None, **keys: Any) -> None:
        if msg_type == "comm_msg":
            self.sent.append((data.get("method", ""), data, list(buffers or [])))

    def updates(self) -> list[dict]:
        """The state-update messages ({name: value}, buffers put back in place)."""
        out = []
        for method, data, buffers in self.sent:
            if method == "update":
                state = dict(data["state"])
                for path, buffer in zip(data.get("buffer_paths", []), buffers, strict=True):
                    state[path[0]] = bytes(buffer)
                out.append(state)
        return out

    def customs(self) -> list[tuple[dict, list]]:
        """The custom messages: (content, buffers)."""
        return [(data["content"], buffers) for method, data, buffers in self.sent
                if method == "custom"]

    def clear(self) -> None:
        self.sent.clear()


def front_end_update(widget: Any, **state: Any) -> None:
    """Deliver a state change as the browser would (through the widget's message handler)."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state,
                                             "buffer_paths": []}}, "buffers": []})


def front_end_custom(widget: Any, content: dict, buffers: list[bytes] | None = None) -> None:
    """Deliver a custom message from the browser (e.g. a click, a history request, a stroke)."""
    widget._handle_msg({"content": {"data": {"method": "custom", "content": content}},
                        "buffers": [memoryview(b) for b in buffers or []]})


def _done(result: Any) -> Future:
    future: Future = Future()
    future.set_result(result)
    return future
