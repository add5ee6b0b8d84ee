"""Interception: the kernel side of transparent mode on the two-port bridge.

`spec` turns a validated `Config` into an `InterceptionSpec`; `ruleset` renders the nftables
tables, sysctls and policy routing from it as text (pure, no I/O); `host` applies and tears them
down; `learn` recognises the device from its first frames (sans-io) and `learnio` reads them.
`validation_window(cfg)` steers the ACME CA's validation connections to the box for the
duration of an enrollment order (host.py).
"""

from medtls.interception.host import validation_window

__all__ = ["validation_window"]
