"""A sampling profiler from the standard library: where a running process spends its time.

Every ``interval`` seconds a thread looks at every other thread's stack
(``sys._current_frames``) and counts, per thread kind (the event loop, the
rebuild's worker), the innermost kxds/bench function on it and the whole
stack's kxds/bench frames. Unlike cProfile it sees every thread (the rebuild runs
in a worker thread, the xDS server on the event loop) and barely slows them.
It samples only when it gets the GIL (a thread holding it through a long C
call is seen after it), so the counts are shares, not exact times; time
inside gRPC's C core shows as the event loop's callback frame (``events.py:_run``).
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from types import FrameType

_OURS = ("/kxds/", "/bench/", "/grpc/", "/asyncio/")


def _where(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    short = path.rsplit("/", 2)
    return f"{'/'.join(short[-2:])}:{code.co_name}"


class Sampler:
    """Samples every thread but its own until :meth:`stop`; :meth:`report` tells."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.own: Counter[str] = Counter()
        """Innermost frame of one of ours (or the C call it is in)."""
        self.inclusive: Counter[str] = Counter()
        self.samples = 0
        self.active = False
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._stop = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = threading.get_ident()
        names = {t.ident: t.name for t in threading.enumerate()}
        while not self._stop.wait(self.interval):
            if not self.active:
                continue
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                thread = "loop" if names.get(ident) == "MainThread" else "worker"
                stack: list[str] = []
                f: FrameType | None = frame
                while f is not None:
                    if any(p in f.f_code.co_filename for p in _OURS):
                        stack.append(_where(f))
                    f = f.f_back
                if not stack or stack[0].endswith(("selectors.py:select",
                                                   "base_events.py:_run_once",
                                                   "unix_events.py:_do_waitpid")):
                    continue  # idle: waiting for I/O or a child process
                if ident not in names:
                    names = {t.ident: t.name for t in threading.enumerate()}
                self.samples += 1
                self.own[f"{thread} {stack[0]}"] += 1
                for where in set(stack):
                    self.inclusive[f"{thread} {where}"] += 1

    def report(self, top: int = 25) -> str:
        seconds = self.samples * self.interval
        lines = [f"{self.samples} busy samples every {self.interval * 1e3:.0f} ms "
                 f"(about {seconds:.2f} s of busy thread time)", "", "innermost frame:"]
        lines += [f"  {n:6d}  {k}" for k, n in self.own.most_common(top)]
        lines += ["", "anywhere on the stack:"]
        lines += [f"  {n:6d}  {k}" for k, n in self.inclusive.most_common(top)]
        return "\n".join(lines) + "\n"
