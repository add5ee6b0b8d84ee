"""A real NTP server (Debian's chronyd) on the LAN and chronyd as a one-shot client.

chrony conflicts with the host's systemd-timesyncd, so it is not installed: `apt-get download`
fetches Debian's package once into build/lab/ and `dpkg-deb -x` unpacks it there. Neither the
server (`-x`) nor the client (`-Q`) ever touches the host's clock.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from medlab.net import LAB_DIR, Lab, LabError

REPO = LAB_DIR.parent
CHRONY_ROOT = REPO / "build" / "lab" / "chrony"
CHRONYD = CHRONY_ROOT / "usr" / "sbin" / "chronyd"
NTP_SERVER_IP = "198.18.0.123"
NTP_SERVER_PREFIX = 24


def chronyd() -> str:
    """Path of Debian's chronyd, unpacked into build/lab/chrony on first use."""
    if CHRONYD.is_file():
        return str(CHRONYD)
    CHRONY_ROOT.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CHRONY_ROOT.parent) as tmp:
        got = subprocess.run(["apt-get", "download", "chrony"], cwd=tmp, capture_output=True,
                             text=True, timeout=300, check=False)  # fmt: skip
        debs = sorted(Path(tmp).glob("chrony_*.deb"))
        if got.returncode != 0 or not debs:
            raise LabError(f"apt-get download chrony failed: {got.stderr.strip()[-500:]}")
        tree = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tree)], check=True, timeout=60)
        try:
            tree.rename(CHRONY_ROOT)
        except OSError:
            if not CHRONYD.is_file():  # a parallel run did not win the race either
                raise
            shutil.rmtree(tree, ignore_errors=True)
    return str(CHRONYD)


def start_server(lab: Lab, ip: str = NTP_SERVER_IP, ns: str = "pacs"):
    """chronyd serving its local clock (stratum 8) on IP:123 in namespace `ns` (eth0)."""
    lab.run(ns, ["ip", "addr", "replace", f"{ip}/{NTP_SERVER_PREFIX}", "dev", "eth0"])
    conf = lab.workdir / f"chrony-server-{ns}.conf"
    conf.write_text(
        "local stratum 8\n"
        f"bindaddress {ip}\n"
        "allow 198.18.0.0/15\n"
        "port 123\n"
        "cmdport 0\n"
        f"pidfile {lab.workdir / f'chrony-server-{ns}.pid'}\n"
    )
    log = f"chrony-server-{ns}.log"
    proc = lab.spawn(ns, [chronyd(), "-x", "-d", "-u", "root", "-f", str(conf)], log)
    lab.wait_listen(ns, 123, proc=proc, log=log, udp=True)
    return proc


def stop_server(lab: Lab, proc, ip: str = NTP_SERVER_IP, ns: str = "pacs") -> None:
    lab.stop(proc)
    lab.run(ns, ["ip", "addr", "del", f"{ip}/{NTP_SERVER_PREFIX}", "dev", "eth0"], check=False)


def query(lab: Lab, ns: str, server: str = NTP_SERVER_IP, timeout: int = 3):
    """One NTP measurement with `chronyd -Q` (prints the offset, never sets the clock).

    Returns (ok, output): ok when chronyd got a valid server response.
    """
    pidfile = lab.workdir / f"chrony-client-{ns}.pid"
    argv = [chronyd(), "-Q", "-u", "root", "-t", str(timeout),
            f"server {server} iburst maxsamples 1", f"pidfile {pidfile}"]  # fmt: skip
    r = lab.run(ns, argv, timeout=timeout + 10, check=False)
    out = r.stdout + r.stderr
    return r.returncode == 0 and "System clock wrong by" in out, out
