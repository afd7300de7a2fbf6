"""Training progress events for accel-agent: one file, standard library only.

Copy this file next to your training script (or put clients/python on
PYTHONPATH) and report steps and phases::

    import goodput

    with goodput.run("llama70b-0412", labels={"model": "llama-70b"}) as r:
        with r.phase("init"):
            model = build()
        for batch in loader:            # or: with r.phase("data_wait"): ...
            with r.step_timer(tokens=4194304, model_flops=1.2e16):
                train_step(batch)
            if step % 1000 == 0:
                with r.phase("checkpoint_save"):
                    save()
                r.checkpoint()

Events are JSON datagrams on the agent's Unix socket (docs/goodput.md).
Sending never blocks and never raises: when the agent is absent, slow or
restarting, events are dropped and training goes on. The agent learns the
sender's pid from the kernel, and from it the GPUs the process holds.
"""

import json
import math
import os
import socket
import time
from contextlib import contextmanager

__all__ = ["run", "Run", "DEFAULT_SOCKET"]

#: Where the agent listens unless ``socket_path`` or ``ACCEL_EVENTS_SOCKET`` says otherwise.
DEFAULT_SOCKET = "/run/accel-agent/events.sock"

_MAX_DATAGRAM = 64 * 1024


def _number(v):
    """A finite, non-negative float, or None (the agent refuses the rest)."""
    if v is None:
        return None
    v = float(v)
    if math.isnan(v) or math.isinf(v) or v < 0:
        return None
    return v


class Run:
    """One rank of a training run, reporting to the agent.

    ``rank`` defaults to the ``RANK`` environment variable (torchrun sets
    it), else 0. ``devices`` (GPU indexes or UUIDs) defaults to the GPUs
    this process holds. ``resume_step`` is the step of the checkpoint the
    run resumed from: steps done above it before a restart count as wasted.
    Every ``announce_every`` seconds (None: never) the run_start is sent
    again, without ``resume_step``, so that an agent restarted meanwhile
    learns the run's labels and devices again.
    """

    def __init__(self, name, rank=None, world_size=None, devices=None,
                 resume_step=None, labels=None, socket_path=None, announce_every=300.0):
        self.name = str(name)
        if rank is None:
            rank = int(os.environ.get("RANK", "0") or 0)
        self.rank = int(rank)
        self.world_size = world_size
        self.devices = devices
        self.resume_step = resume_step
        self.labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self.socket_path = (socket_path or os.environ.get("ACCEL_EVENTS_SOCKET")
                            or DEFAULT_SOCKET)
        #: The last step reported; the next ``step()`` without a number is one more.
        self.current_step = int(resume_step or 0)
        self.dropped = 0
        self.announce_every = announce_every
        self._announced = None
        self._sock = None

    # -- sending ---------------------------------------------------------

    def _send(self, kind, **fields):
        msg = {"v": 1, "kind": kind, "run": self.name, "rank": self.rank}
        msg.update({k: v for k, v in fields.items() if v is not None})
        try:
            data = json.dumps(msg, separators=(",", ":"), allow_nan=False).encode()
        except ValueError:
            self.dropped += 1
            return False
        if len(data) > _MAX_DATAGRAM:
            self.dropped += 1
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(data, self.socket_path)
            return True
        except OSError:
            # No agent (ENOENT, ECONNREFUSED), a full queue (EAGAIN), no
            # permission: the event is dropped, training goes on.
            self.dropped += 1
            return False

    # -- the events ------------------------------------------------------

    def start(self):
        """Sends run_start (``run()`` does it for you)."""
        self._announce(self.resume_step)
        return self

    def _announce(self, resume_step):
        self._send("run_start", world_size=self.world_size, devices=self.devices,
                   resume_step=resume_step, labels=self.labels or None)
        self._announced = time.monotonic()

    def _maybe_announce(self):
        if (self.announce_every is not None and self._announced is not None
                and time.monotonic() - self._announced >= self.announce_every):
            self._announce(None)

    def end(self):
        """Sends run_end (``run()`` does it when its block ends normally)."""
        self._send("run_end")

    def step(self, seconds, tokens=None, model_flops=None, dtype="bf16", step=None):
        """Reports one finished step: its whole wall time in seconds, the
        tokens and the model FLOPs this rank computed in it."""
        self._maybe_announce()
        self.current_step = int(step) if step is not None else self.current_step + 1
        self._send("step", step=self.current_step, seconds=_number(seconds),
                   tokens=_number(tokens), model_flops=_number(model_flops), dtype=dtype)

    @contextmanager
    def step_timer(self, tokens=None, model_flops=None, dtype="bf16"):
        """Times the block as one step and reports it (if it did not raise)."""
        t0 = time.monotonic()
        yield self
        self.step(max(time.monotonic() - t0, 1e-9), tokens=tokens,
                  model_flops=model_flops, dtype=dtype)

    def phase_done(self, phase, seconds):
        """Reports a finished span of ``phase`` (init, compile, data_wait,
        checkpoint_save, checkpoint_load, eval, or custom:<name>)."""
        self._send("phase", phase=phase, seconds=_number(seconds))

    @contextmanager
    def phase(self, phase):
        """Times the block as a span of ``phase`` and reports it, also when
        the block raises."""
        t0 = time.monotonic()
        try:
            yield self
        finally:
            self.phase_done(phase, time.monotonic() - t0)

    def checkpoint(self, step=None):
        """Reports a saved checkpoint holding ``step`` (default: the current one)."""
        self._send("checkpoint", step=int(step if step is not None else self.current_step))

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@contextmanager
def run(name, **kwargs):
    """A run for the block: run_start on entry, run_end when the block ends
    normally (an exception leaves the run open: the job failed, and its
    restart is the same run). Takes the arguments of :class:`Run`."""
    r = Run(name, **kwargs).start()
    try:
        yield r
        r.end()
    finally:
        r.close()
