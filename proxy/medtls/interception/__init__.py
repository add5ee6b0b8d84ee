"""Interception: the kernel side of transparent mode on the two-port bridge.

`spec` turns a validated `Config` into an `InterceptionSpec`; `ruleset` renders the nftables
tables, sysctls and policy routing from it as text (pure, no I/O); `host` applies and tears them
down; `learn` recognises the device from its first frames (sans-io) and `learnio` reads them.
"""
