"""The event loop, listeners, connections and the byte relay (the I/O side of the proxy).

- `connection`: one connection as a pure state machine (states, events, transition table).
- `daemon`: `Daemon`, the wiring: accepts, feeds each connection's machine its events and
  performs the actions it returns; reload, drain, snapshot (`medtls.core.handle.EngineHandle`).
- `loop`: epoll registrations, cross-thread calls and wake-ups (the daemon's base class).
- `listeners`: what each listener serves, accept back-off, admission (limits.max_*).
- `relay`: the byte pump, the hot path; `sessions`, `netutil`, `fdlimit`: helpers.

The engine knows no observer beyond `medtls.core.events.Observer` and imports nothing of ops.
"""
