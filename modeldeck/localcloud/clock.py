"""The virtual clock that drives the whole local cloud.

Virtual time flows with wall time, and jumps ahead whenever nothing in the local cloud is doing work that
takes real time: when every Step Functions execution is in a Wait state, no Lambda handler is running (or
each is sleeping), and every thread that takes part in the simulation (``participant()``) sleeps on this
clock, it jumps to the earliest wake-up, stopping at each virtual minute boundary on the way to run the
minute listeners (CloudWatch's metric ingestion and alarm evaluation). A 10-minute canary bake thus takes
a fraction of a second of wall time, and what happens at a given virtual time happens in the same order as
it would in real time.

Only the emulator reads this clock. Production code keeps reading the host clock; the local cloud moves
what the product writes onto virtual time at the boundaries where AWS would stamp it (the Lambda runtime,
CloudWatch's metric ingestion, the Logs → Firehose delivery) and patches the registry's ``utcnow``.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime

# The host's, bound before the local cloud points ``time.monotonic`` at the sandbox's time (see lambda_runtime).
_host_monotonic = time.monotonic

MINUTE = 60.0


class VirtualClock:
    """Virtual wall-clock time for the local cloud, with discrete-event jumps.

    ``holds`` say that something is doing real work now (a Lambda invocation, a running state machine
    execution, a participating thread); the clock never jumps while one is active. ``sleep`` waits for
    virtual time, suspending the sleeping thread's own holds (and any named ones) while it waits.
    """

    def __init__(self, *, jumps: bool = True, start: float | None = None) -> None:
        self.jumps = jumps
        self._offset = 0.0 if start is None else start - time.time()
        self._cond = threading.Condition(threading.RLock())
        self._holds: dict[Hashable, int] = {}
        self._wakes: dict[object, float] = {}
        self._ticking = False
        self._listeners: list[Callable[[datetime], None]] = []
        self._next_minute = math.floor(self.time() / MINUTE) * MINUTE + MINUTE
        self._local = threading.local()
        self._thread: threading.Thread | None = None
        self._stop = False
        self.jumped = 0.0

    # -- reading -----------------------------------------------------------------------------------
    def time(self) -> float:
        """Virtual seconds since the epoch."""
        return time.time() + self._offset

    def now(self) -> datetime:
        """Virtual now, timezone-aware UTC."""
        return datetime.fromtimestamp(self.time(), UTC)

    def monotonic(self) -> float:
        """A monotonic reading that includes every jump (for durations and deadlines)."""
        return _host_monotonic() + self._offset

    @property
    def offset(self) -> float:
        """How far virtual time is ahead of the host clock, in seconds."""
        return self._offset

    def from_host(self, epoch_seconds: float) -> float:
        """A timestamp the product took from the host clock, as virtual time (it runs at the clock's offset)."""
        return epoch_seconds + self._offset

    def not_before(self, epoch_seconds: float) -> None:
        """Move the clock forward to ``epoch_seconds`` if it is behind (restored state: time never goes back)."""
        with self._cond:
            ahead = epoch_seconds - self.time()
            if ahead > 0:
                self._offset += ahead
                self._next_minute = math.floor(self.time() / MINUTE) * MINUTE + MINUTE
                self._cond.notify_all()

    # -- minute listeners and the scheduler --------------------------------------------------------
    def every_minute(self, listener: Callable[[datetime], None]) -> None:
        """Call ``listener(boundary)`` at each virtual minute boundary (before sleepers due then wake)."""
        with self._cond:
            self._listeners.append(listener)

    def start(self) -> None:
        """Start the scheduler thread (minute listeners and jumps)."""
        with self._cond:
            if self._thread is not None:
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="local-clock", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the scheduler thread, for good: the cloud is closing. Sleepers wake at once, so a thread the
        closing cloud leaves behind (an asynchronous invocation, an execution) finishes now instead of sleeping
        on in wall time while it holds process-wide locks (``ENV_LOCK`` during a cold start), which stalled the
        next cloud in the process."""
        with self._cond:
            thread, self._thread, self._stop = self._thread, None, True
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        with self._cond:
            while not self._stop:
                now = self.time()
                boundary = self._next_minute
                if now >= boundary:
                    self._tick(boundary)
                    continue
                if any(wake <= now for wake in self._wakes.values()):
                    # A sleeper is due and has not resumed yet: let it take its holds back first.
                    self._cond.wait(0.005)
                    continue
                if self.jumps and self._wakes and not self._busy():
                    target = min(min(self._wakes.values()), boundary)
                    self._offset += target - now
                    self.jumped += target - now
                    self._cond.notify_all()
                    continue
                horizon = min([boundary, *self._wakes.values()]) - now
                self._cond.wait(max(0.001, min(horizon, 0.25)))

    def _tick(self, boundary: float) -> None:
        self._ticking = True
        listeners = list(self._listeners)
        try:
            self._cond.release()
            try:
                at = datetime.fromtimestamp(boundary, UTC)
                for listener in listeners:
                    try:
                        listener(at)
                    except Exception as exc:  # a bad round must not stop the clock
                        print(f"local cloud: minute {at:%H:%M} failed: {exc!r}", file=sys.stderr)
            finally:
                self._cond.acquire()
        finally:
            self._ticking = False
            self._next_minute = boundary + MINUTE
            self._cond.notify_all()

    # -- holds -------------------------------------------------------------------------------------
    def _busy(self) -> bool:
        return any(count > 0 for count in self._holds.values())

    def _thread_key(self) -> Hashable:
        return ("thread", threading.get_ident())

    def acquire(self, key: Hashable) -> None:
        """Something named ``key`` is doing real work: no jump until it is released (or sleeps)."""
        with self._cond:
            self._holds[key] = self._holds.get(key, 0) + 1

    def release(self, key: Hashable) -> None:
        """The work named ``key`` is done."""
        with self._cond:
            count = self._holds.get(key, 0) - 1
            if count > 0:
                self._holds[key] = count
            else:
                self._holds.pop(key, None)
            self._cond.notify_all()

    @contextmanager
    def hold(self, key: Hashable | None = None) -> Iterator[None]:
        """Hold the clock while the block runs (by default on behalf of the current thread, whose sleeps
        on this clock then release it)."""
        key = self._thread_key() if key is None else key
        self.acquire(key)
        try:
            yield
        finally:
            self.release(key)

    def participant(self) -> AbstractContextManager[None]:
        """The current thread takes part in the simulation: virtual time only passes while it sleeps on
        this clock (tests and the demo drive traffic this way, minute by minute)."""
        return self.hold()

    def waiting(self) -> AbstractContextManager[None]:
        """The current thread waits on a lock another thread holds: that is not work, so the clock may jump
        meanwhile (the holder may itself be sleeping on the clock)."""
        return self.suspended(self._thread_key())

    @contextmanager
    def suspended(self, key: Hashable) -> Iterator[None]:
        """The work named ``key`` waits on something that holds the clock itself (e.g. a Lambda task)."""
        with self._cond:
            held = self._holds.get(key, 0)
            if held:
                self._holds[key] = held - 1
                self._cond.notify_all()
        try:
            yield
        finally:
            if held:
                with self._cond:
                    self._holds[key] = self._holds.get(key, 0) + 1

    # -- sleeping ----------------------------------------------------------------------------------
    def sleep(
        self, seconds: float, *, suspend: Hashable | None = None, interrupted: Callable[[], bool] | None = None
    ) -> bool:
        """Wait ``seconds`` of virtual time; returns False if ``interrupted()`` became true first.

        While it waits, the current thread's holds (and the hold named ``suspend``) do not count, so the
        clock may jump to this wake-up when nothing else is busy.
        """
        if seconds <= 0:
            return True
        keys = [self._thread_key()] + ([suspend] if suspend is not None else [])
        with self._cond:
            wake = self.time() + seconds
            token = object()  # kept alive: an id() of a freed object is reused by the next sleeper
            self._wakes[token] = wake
            saved = {k: self._holds.pop(k) for k in keys if k in self._holds}
            self._cond.notify_all()
            try:
                while (self.time() < wake or self._ticking) and not self._stop:
                    if interrupted is not None and interrupted():
                        return False
                    self._cond.wait(max(0.001, min(wake - self.time(), 0.05)))
                return True
            finally:
                del self._wakes[token]
                for k, count in saved.items():
                    self._holds[k] = self._holds.get(k, 0) + count
                self._cond.notify_all()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass for the caller (a participant's sleep)."""
        with self.participant():
            self.sleep(seconds)

    def run_until(
        self,
        done: Callable[[], bool],
        *,
        step: float = MINUTE,
        during: Callable[[], object] | None = None,
        limit: float = 24 * 3600.0,
    ) -> float:
        """Take part in the simulation until ``done()``: call ``during()`` then sleep ``step`` virtual
        seconds, repeatedly. Returns the virtual seconds that passed. Raises TimeoutError past ``limit``."""
        start = self.time()
        with self.participant():
            while not done():
                if self.time() - start > limit:
                    raise TimeoutError(f"not done after {limit:g} virtual seconds")
                if during is not None:
                    during()
                self.sleep(step)
        return self.time() - start
