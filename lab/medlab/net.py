"""Run commands and background processes in the lab's namespaces; clean up all of them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parent.parent
TOPOLOGY = LAB_DIR / "topology.sh"
NAMESPACES = ("modality", "box", "pacs", "mallory", "router", "dc")


class LabError(Exception):
    pass


class Lab:
    """One lab instance: namespaces PREFIX{modality,box,pacs,mallory,router,dc}, their processes."""

    def __init__(self, prefix: str, workdir: Path):
        self.prefix = prefix
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def ns(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def up(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(TOPOLOGY), "up", self.prefix], check=True)

    def down(self) -> None:
        for _, proc in reversed(self.procs):
            self.stop(proc)
        self.procs.clear()
        subprocess.run([str(TOPOLOGY), "down", self.prefix], check=False)

    def run(
        self, ns: str, argv: list[str], timeout: float = 30, check: bool = True, **kw
    ) -> subprocess.CompletedProcess:
        cmd = ["ip", "netns", "exec", self.ns(ns), *argv]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
        except subprocess.TimeoutExpired as e:
            raise LabError(f"{ns}: timed out after {timeout}s: {' '.join(argv)}") from e
        if check and proc.returncode != 0:
            raise LabError(
                f"{ns}: {' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def spawn(self, ns: str, argv: list[str], log: str, env: dict | None = None, stdin=None):
        """Start a background process in `ns`; its output goes to workdir/LOG."""
        logf = open(self.workdir / log, "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(ns), *argv],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=stdin,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        logf.close()
        self.procs.append((log, proc))
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 5) -> None:
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def log(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_listen(
        self, ns: str, port: int, timeout: float = 15, proc=None, log=None, udp: bool = False
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            flags = "-Hlun" if udp else "-Hltn"
            out = self.run(ns, ["ss", flags, f"sport = :{port}"], check=False).stdout
            if out.strip():
                return
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = self.log(log)[-2000:] if log else ""
        raise LabError(f"{ns}: nothing listens on port {port} after {timeout}s\n{tail}")

    @contextlib.contextmanager
    def capture(self, ns: str, iface: str, name: str, bpf: str = ""):
        """tcpdump on `iface` in `ns` into workdir/NAME while the block runs; yields the path."""
        path = self.workdir / name
        argv = [
            "tcpdump",
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-s",
            "0",
            "-i",
            iface,
            "-w",
            str(path),
        ]
        proc = self.spawn(ns, argv + ([bpf] if bpf else []), f"{name}.log")
        deadline = time.monotonic() + 10
        while "listening on" not in self.log(f"{name}.log"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"tcpdump on {ns}/{iface} did not start: {self.log(name + '.log')}")
            time.sleep(0.05)
        try:
            yield path
        finally:
            time.sleep(0.3)
            self.stop(proc, signal.SIGINT)


def tshark(pcap: Path, display_filter: str, fields: tuple[str, ...] = ()) -> list[str]:
    """Lines tshark prints for the packets matching `display_filter` (one per packet)."""
    argv = ["tshark", "-r", str(pcap), "-Y", display_filter]
    if fields:
        argv += ["-T", "fields"] + [x for f in fields for x in ("-e", f)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise LabError(f"tshark {display_filter!r}: {proc.stderr.strip()}")
    return [line for line in proc.stdout.splitlines() if line.strip()]
