"""What the operations wing (medtls.ops) may know of a running engine: one small interface.

`medtls.engine.daemon.Daemon` implements it; `medtls.ops` receives an `EngineHandle` and uses
nothing else of the engine (no attribute probing, no private names). Every method may be called
from any thread unless it says otherwise.
"""

from __future__ import annotations


class EngineHandle:
    """A running proxy engine, as observers and the control socket see it."""

    # Set by ops before serving: a callable returning a reason (str) while certificates must not
    # be validated (clock not synchronised), or None. The engine refuses TLS while it says so.
    validation_gate = None

    @property
    def config(self):
        """The configuration generation in force (`medtls.config.Config`)."""
        raise NotImplementedError

    def add_observer(self, observer) -> None:
        """Subscribe a `medtls.core.events.Observer` (before serving starts)."""
        raise NotImplementedError

    def call_soon(self, fn, *args) -> None:
        """Run fn(*args) on the engine's loop thread."""
        raise NotImplementedError

    def reload(self) -> bool:
        """Re-read the configuration and TLS material; keep the old generation on any error.
        Blocks until the loop has done it; True when the new generation is active."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop accepting and drain (limits.drain_timeout)."""
        raise NotImplementedError

    def certificates(self) -> list:
        """The `medtls.core.certinfo.CertInfo` list of the generation in force, as parsed when
        the engine built it (identity, trust.ca, trust.crl, peer CAs)."""
        raise NotImplementedError

    def snapshot(self) -> dict:
        """Plain data: pid, started, config, generation, mode, stopping, listeners,
        connections {total, by_direction, by_route, by_state, max}, certificates [{role, path,
        subject, not_after}]."""
        raise NotImplementedError
