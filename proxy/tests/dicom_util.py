"""Helpers for DCMTK/pynetdicom tests."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import stop_process
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filereader import _read_file_meta_info, read_preamble

_SAMPLE = Path(get_testdata_file("CT_small.dcm"))
# DCMTK's tools, not the pynetdicom scripts of the same name in the venv (first on make's PATH).
DCMTK = {
    t: shutil.which(t, path="/usr/bin:/usr/local/bin") or t
    for t in ("storescp", "storescu", "echoscu")
}
_TMP = tempfile.TemporaryDirectory(prefix="medtls-dicom-")  # removed at interpreter exit
CT = Path(_TMP.name) / "ct.dcm"
_ds = dcmread(_SAMPLE)
del _ds[0xFFFCFFFC]  # trailing padding: DCMTK drops it, so it would not round-trip
_ds.save_as(CT, enforce_file_format=True)


def dataset_bytes(path: Path) -> bytes:
    """The bytes after the File Meta group (what travels in the C-STORE)."""
    with open(path, "rb") as f:
        read_preamble(f, False)
        _read_file_meta_info(f)
        return f.read()


_CLONE_NEWNET = 0x40000000
_LIBC = ctypes.CDLL(None, use_errno=True)


class LoopbackNetns:
    """A network namespace of one test with nothing but `lo`. DCMTK 3.6.7's storescp has no
    bind option and listens on every address of its namespace: in the host's that would be a
    test server on every host address, so it runs here, with the clients and the medtls
    processes in front of it (`argv` for a command, `enter` as a Popen preexec_fn)."""

    def __init__(self, name: str):
        self.name = name

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def enter(self) -> None:
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if _LIBC.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {self.name}")
        finally:
            os.close(fd)


@contextlib.contextmanager
def loopback_netns() -> Iterator[LoopbackNetns]:
    name = f"mtdcm{os.getpid() % 100000}x{random.randrange(1 << 20):x}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=20)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True,
                       capture_output=True, timeout=20)  # fmt: skip
        yield LoopbackNetns(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


class Storescp:
    """DCMTK's storescp inside `ns` (see LoopbackNetns)."""

    def __init__(self, ns: LoopbackNetns, outdir: Path, port: int, tls: list[str] | None = None):
        outdir.mkdir(parents=True, exist_ok=True)
        self.outdir = outdir
        self.port = port
        self.log = outdir.parent / f"storescp-{port}.log"
        self._fh = open(self.log, "wb")  # noqa: SIM115
        argv = [DCMTK["storescp"], *(tls or []), "+B", "-od", str(outdir), "-aet", "PACS",
                str(port)]  # fmt: skip
        # `ip netns exec` execs storescp: the pid is storescp's, /proc/PID/net its namespace's
        self.proc = subprocess.Popen(ns.argv(*argv), stdout=self._fh, stderr=subprocess.STDOUT)
        listening = f":{port:04X} 00000000:0000 0A"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # listening? (a probe is a harmless aborted assoc)
            with contextlib.suppress(OSError):
                if listening in Path(f"/proc/{self.proc.pid}/net/tcp").read_text():
                    assert listening not in Path("/proc/net/tcp").read_text(), "on the host"
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"storescp not listening on {port}: {self.log.read_text()}")

    def files(self) -> list[Path]:
        return sorted(self.outdir.iterdir())

    def stop(self):
        stop_process(self.proc, 5)
        self._fh.close()


def storescu(port: int, *extra: str, file: Path = CT, timeout=30, ns: LoopbackNetns | None = None):
    argv = [DCMTK["storescu"], *extra, "-aec", "PACS", "127.0.0.1", str(port), str(file)]
    return subprocess.run(ns.argv(*argv) if ns else argv, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def echoscu(port: int, *extra: str, timeout=30, ns: LoopbackNetns | None = None):
    argv = [DCMTK["echoscu"], *extra, "-aec", "PACS", "127.0.0.1", str(port)]
    return subprocess.run(ns.argv(*argv) if ns else argv, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def associate_seeing_rj(ae, port: int, called: str, **kw):
    """pynetdicom's associate(), plus the A-ASSOCIATE-RJ as it came off the wire: (assoc,
    (result, source, reason) or None). pynetdicom's own verdict can be "aborted" for a rejection
    that arrives at once: its reader thread closes the transport on the RJ (PS3.8 AE-4) and the
    requesting thread, if it has not yet checked that the socket is connected, then aborts
    (seen under load, with and without the box)."""
    from pynetdicom import evt
    from pynetdicom.pdu import A_ASSOCIATE_RJ

    rjs = []

    def on_pdu(event):
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            rjs.append((event.pdu.result, event.pdu.source, event.pdu.reason_diagnostic))

    assoc = ae.associate("127.0.0.1", port, ae_title=called, **kw,
                         evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)])  # fmt: skip
    return assoc, (rjs[0] if rjs else None)
