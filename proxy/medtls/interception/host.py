"""Apply and tear down the interception ruleset on this host (the only module doing I/O)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from medtls.interception import ruleset
from medtls.interception.spec import InterceptionError, InterceptionSpec

SYS_NET = Path("/sys/class/net")
PROC_SYS = Path("/proc/sys")


def _run(
    argv: list[str], stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise InterceptionError(f"{argv[0]}: command not found") from None
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise InterceptionError(f"{' '.join(argv[:4])}: {msg[0] if msg else 'failed'}")
    return proc


def bridge_mac(bridge: str) -> str:
    """The bridge's MAC address; steered frames are re-addressed to it."""
    path = SYS_NET / bridge / "address"
    if not (SYS_NET / bridge / "bridge").is_dir():
        raise InterceptionError(
            f"interfaces.bridge: {bridge} is not a bridge on this host "
            "(create it with both ports enslaved, see docs/architecture.md; "
            "`medtls rules show --bridge-mac MAC` renders for another host)"
        )
    return path.read_text().strip()


def check_bridge(spec: InterceptionSpec) -> None:
    """The ports must be enslaved to the bridge before the rules mean anything."""
    bridge_mac(spec.bridge)
    for key, port in (("device", spec.device_if), ("lan", spec.lan_if)):
        master = SYS_NET / port / "master"
        if not master.exists() or master.resolve().name != spec.bridge:
            raise InterceptionError(f"interfaces.{key}: {port} is not a port of {spec.bridge}")


def write_sysctl(key: str, value: str) -> bool:
    """Write one sysctl; False when it does not exist (br_netfilter not loaded = already off)."""
    path = PROC_SYS / key.replace(".", "/")
    if not path.exists():
        return False
    path.write_text(value + "\n")
    return True


def apply(spec: InterceptionSpec) -> list[str]:
    """Install sysctls, the nftables tables (one transaction), set the bridge and its ports up,
    then policy routing. Idempotent."""
    check_bridge(spec)
    done = []
    for key, value in ruleset.sysctls(spec):
        if write_sysctl(key, value):
            done.append(f"sysctl {key}={value}")
    _run(["nft", "-f", "-"], stdin=ruleset.nft_script(spec, bridge_mac(spec.bridge)))
    done.append("nft tables bridge/inet medtls")
    # Only now may frames cross: a bridge created down at boot comes up fail-closed.
    for ifname in (spec.device_if, spec.lan_if, spec.bridge):
        _run(["ip", "link", "set", ifname, "up"])
    _delete_ip_rules()
    if not spec.ntp_servers:
        _remove_ntp_routing()
    for argv in ruleset.ip_rules(spec) + ruleset.ip_routes(spec):
        _run(["ip", *argv])
    tables = [ruleset.ROUTE_TABLE_DEVICE] + ([ruleset.ROUTE_TABLE_NTP] if spec.ntp_servers else [])
    for table in tables:
        _prune_routes(table, ruleset.route_destinations(spec, table))
    done.append("policy routing")
    return done


def _prune_routes(table: int, keep: set[str]) -> None:
    """Delete routes of an owned table the plan no longer has (e.g. the device subnet route
    after `device.gateway` was removed); replacing first leaves no window without a route."""
    shown = _run(["ip", "-4", "-o", "route", "show", "table", str(table)], check=False)
    for line in shown.stdout.splitlines():
        dest = line.split()[0] if line.split() else ""
        if dest and dest not in keep:
            _run(["ip", "-4", "route", "del", dest, "table", str(table)], check=False)


def _remove_ntp_routing() -> None:
    _run(["ip", "-4", "route", "flush", "table", str(ruleset.ROUTE_TABLE_NTP)], check=False)
    shown = _run(["ip", "-4", "addr", "show", "dev", "lo", "to", f"{ruleset.NTP_SOURCE}/32"],
                 check=False)  # fmt: skip
    if ruleset.NTP_SOURCE in shown.stdout:
        _run(["ip", "-4", "addr", "del", f"{ruleset.NTP_SOURCE}/32", "dev", "lo"], check=False)


def _delete_ip_rules() -> None:
    for prio in ruleset.rule_priorities():
        for _ in range(32):
            if _run(["ip", "-4", "rule", "del", "priority", str(prio)], check=False).returncode:
                break


def teardown(spec: InterceptionSpec | None) -> list[str]:
    """Remove exactly what `apply` added; sysctls are left (they are safe without the rules)."""
    _run(["nft", "-f", "-"], stdin=ruleset.nft_teardown_script())
    _delete_ip_rules()
    for table in (ruleset.ROUTE_TABLE_LOCAL, ruleset.ROUTE_TABLE_DEVICE):
        _run(["ip", "-4", "route", "flush", "table", str(table)], check=False)
    _remove_ntp_routing()
    if spec is not None and spec.device_mac:
        shown = _run(["ip", "-4", "neigh", "show", spec.device_ip, "dev", spec.bridge], check=False)
        if "PERMANENT" in shown.stdout:
            _run(["ip", "-4", "neigh", "del", spec.device_ip, "dev", spec.bridge], check=False)
    return ["nft tables bridge/inet medtls removed", "policy routing removed"]


def status() -> str:
    """The installed tables as nft prints them ('' when not installed)."""
    out = []
    for family in ("bridge", "inet"):
        proc = _run(["nft", "list", "table", family, ruleset.TABLE_NAME], check=False)
        if proc.returncode == 0:
            out.append(proc.stdout)
    return "".join(out)


def _validation_sources(cfg) -> list[str]:
    enrollment = getattr(cfg, "enrollment", None)
    sources = getattr(enrollment, "validation_sources", None) or ()
    return list(sources)


@contextlib.contextmanager
def validation_window(cfg) -> Iterator[list[str]]:
    """While the block runs, TCP from `enrollment.validation_sources` to the device's address on
    443/80 reaches the box's ACME responder ports instead of the device (both owned sets filled
    in one `nft -f` transaction); afterwards, also on an exception, both sets are flushed again.
    Yields the steered source networks. In explicit mode it does nothing (yields []): the
    responder listens on the box's own address."""
    if cfg.mode != "transparent":
        yield []
        return
    sources = ruleset.validation_sources(_validation_sources(cfg))
    try:
        _run(["nft", "-f", "-"], stdin=ruleset.validation_open_script(sources))
    except InterceptionError as e:
        with contextlib.suppress(InterceptionError):
            _close_window()  # a partial failure must not leave anything steered
        raise InterceptionError(
            f"cannot open the ACME validation window (are the rules applied?): {e}"
        ) from None
    failed = False
    try:
        yield sources
    except BaseException:
        failed = True
        raise
    finally:
        try:
            _close_window()
        except InterceptionError:
            if not failed:  # never hide the order's own error behind this one
                raise


def _close_window() -> None:
    _run(["nft", "-f", "-"], stdin=ruleset.validation_close_script())
