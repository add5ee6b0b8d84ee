"""The systemd-timesyncd drop-in for `ntp.servers` (pure: text out).

The interception unit writes it under /run at every start and reload, so a configuration that
arrives at first boot (no Ansible run) still points timesyncd at the servers the ruleset lets the
box reach as the device. A drop-in of the same name in /etc (the interception role's variable)
takes precedence over it.
"""

from __future__ import annotations

from medtls.config import Config

RUNTIME_DROPIN = "/run/systemd/timesyncd.conf.d/medtls.conf"


def dropin(cfg: Config) -> str | None:
    """The drop-in text, or None when `ntp.servers` is empty (no drop-in at all)."""
    if not cfg.ntp.servers:
        return None
    return (
        f"# Written by `medtls rules timesyncd` from {cfg.path} (ntp.servers): the box reaches\n"
        "# these as the device. Empty assignments first reset what other drop-ins listed.\n"
        "[Time]\n"
        "NTP=\n"
        f"NTP={' '.join(cfg.ntp.servers)}\n"
        "FallbackNTP=\n"
    )
