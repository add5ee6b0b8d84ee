"""Helpers for DCMTK/pynetdicom tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
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


class Storescp:
    def __init__(self, outdir: Path, port: int, tls: list[str] | None = None):
        outdir.mkdir(parents=True, exist_ok=True)
        self.outdir = outdir
        self.port = port
        self.log = outdir.parent / f"storescp-{port}.log"
        self._fh = open(self.log, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [DCMTK["storescp"], *(tls or []), "+B", "-od", str(outdir), "-aet", "PACS", str(port)],
            stdout=self._fh, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # listening? (a probe is a harmless aborted assoc)
            if f":{port:04X} 00000000:0000 0A" in Path("/proc/net/tcp").read_text():
                return
            time.sleep(0.05)
        raise AssertionError(f"storescp not listening on {port}")

    def files(self) -> list[Path]:
        return sorted(self.outdir.iterdir())

    def stop(self):
        stop_process(self.proc, 5)
        self._fh.close()


def storescu(port: int, *extra: str, file: Path = CT, timeout=30):
    return subprocess.run(
        [DCMTK["storescu"], *extra, "-aec", "PACS", "127.0.0.1", str(port), str(file)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def echoscu(port: int, *extra: str, timeout=30):
    return subprocess.run(
        [DCMTK["echoscu"], *extra, "-aec", "PACS", "127.0.0.1", str(port)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
