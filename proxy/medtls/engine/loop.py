"""The event loop's machinery: epoll registrations, cross-thread calls, and wake-ups.

`EventLoop` is the base of `medtls.engine.daemon.Daemon`, which dispatches what `epoll` reports
(its hot path reads `fdmap` and calls `_set_mask` directly, with no indirection in between).
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import threading

READ = select.EPOLLIN
WRITE = select.EPOLLOUT
ERRHUP = select.EPOLLERR | select.EPOLLHUP
GONE = object()  # fdmap's answer for a descriptor no longer registered


class EventLoop:
    """epoll plus a wake-up socket: `call_soon()` from any thread, signals through the same."""

    def __init__(self):
        self.ep = select.epoll()
        self.fdmap: dict[int, object] = {}  # fd -> what the owner registered (None: wake-up)
        self._calls: list = []
        self._lock = threading.Lock()
        self._loop_thread: int | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poll_add(self._wake_r.fileno(), READ, None)

    def call_soon(self, fn, *args) -> None:
        """Run fn(*args) on the loop thread (thread-safe)."""
        with self._lock:
            self._calls.append((fn, args))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def in_loop(self) -> bool:
        """True on the loop thread, or before the loop runs (nothing to hand over to yet)."""
        return self._loop_thread is None or threading.get_ident() == self._loop_thread

    def call_and_wait(self, fn, timeout: float):
        """fn() on the loop thread; its result, or None if it did not finish within timeout.

        Before the loop runs, a call from the main thread (start-up itself) runs at once; one from
        another thread (the control socket, between attach() and serve_forever()) waits for the
        loop, so that it never runs beside start-up."""
        if threading.get_ident() == self._loop_thread or (
            self._loop_thread is None and threading.current_thread() is threading.main_thread()
        ):
            return fn()
        done = threading.Event()
        result = []

        def run():
            result.append(fn())
            done.set()

        self.call_soon(run)
        done.wait(timeout)
        return result[0] if result else None

    def install_signals(self, handlers: dict) -> None:
        """signal number -> function run on the loop (main thread only)."""
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum, fn in handlers.items():
            signal.signal(signum, lambda *_, fn=fn: self.call_soon(fn))

    def _drain_wakeups(self, log) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, args in calls:
            try:
                fn(*args)
            except Exception:
                log.exception("internal error in %s", getattr(fn, "__name__", fn))

    def _set_mask(self, side, mask: int) -> None:
        """Register `side` (a relay Side) for `mask` events; 0 takes it out of epoll."""
        if side is None or side.mask == mask:
            return
        if mask == 0:
            self._poll_del(side.fd)
        elif side.mask == 0:
            self._poll_add(side.fd, mask, side)
        else:
            self.ep.modify(side.fd, mask)
        side.mask = mask

    def _poll_add(self, fd: int, mask: int, data) -> None:
        self.ep.register(fd, mask)
        self.fdmap[fd] = data

    def _poll_del(self, fd: int) -> None:
        if self.fdmap.pop(fd, GONE) is not GONE:
            with contextlib.suppress(OSError, ValueError):
                self.ep.unregister(fd)

    def _close_loop(self) -> None:
        self._poll_del(self._wake_r.fileno())
        self._wake_r.close()
        self._wake_w.close()
        self.ep.close()
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)
