"""One lab per test session with its own namespace prefix; always torn down."""

from __future__ import annotations

import os
import sys
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from medlab.dicomfile import make_dicom
from medlab.env import build
from medlab.net import Lab

# Every medtls the lab starts (venv entry point, /usr/bin/python3 -m medtls) runs this checkout's
# proxy/, not whatever the venv was installed from.
_PROXY = Path(__file__).resolve().parents[2] / "proxy"
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(_PROXY), str(_PROXY / "testpki")]
    + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
)


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (network namespaces, nftables)")
    workdir = tmp_path_factory.mktemp("lab")
    prefix = f"t{os.getpid()}-"
    try:
        yield build(prefix, workdir)
    finally:
        Lab(prefix, workdir).down()


@pytest.fixture(autouse=True)
def _medtls_running(env):
    """Every test starts with medtls up and the rules applied, whatever the previous one did."""
    if env.medtls is None or env.medtls.poll() is not None:
        env.start_medtls()
    yield


@pytest.fixture
def dicom(env, request):
    """A fresh DICOM object (unique pixels per test); returns (path, pixel bytes)."""
    path = env.lab.workdir / f"{request.node.name}.dcm"
    pixels = make_dicom(path, seed=zlib.crc32(request.node.name.encode()))
    return path, pixels
