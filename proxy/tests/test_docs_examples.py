"""The pair by hand of docs/configuration.md is examples/by-hand-pair.sh, and it works as shown:
run unmodified from the repository root, a DICOM file goes through two medtls processes, and
every process it started is gone afterwards, also when it fails."""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "by-hand-pair.sh"
DOC = ROOT / "docs" / "configuration.md"
RECEIVER_PORT = 11112  # the storescp port the script uses


def _doc_block() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Run a pair by hand (loopback)\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```sh\n(.*?)^```$", section, flags=re.S | re.M)
    assert len(blocks) == 1, "the section shows exactly one sh block: the script"
    return blocks[0]


def test_the_docs_show_the_script_verbatim():
    assert _doc_block() == SCRIPT.read_text(encoding="utf-8")
    assert os.access(SCRIPT, os.X_OK), f"{SCRIPT} is not executable"


@pytest.fixture
def env(tmp_path) -> dict:
    """PATH as after `make setup` (`make test` puts the venv first), medtls from this checkout."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "medtls"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m medtls.cli "$@"\n')
    shim.chmod(0o755)
    for tool in ("dump2dcm", "echoscu", "storescu", "openssl"):
        assert shutil.which(tool, path="/usr/bin"), f"{tool} missing (setup/apt/lab.list: dcmtk)"
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    pythonpath = os.pathsep.join([str(ROOT / "proxy"), os.environ.get("PYTHONPATH", "")])
    work = tmp_path / "tmp"
    work.mkdir()
    return dict(os.environ, PATH=path, PYTHONPATH=pythonpath, TMPDIR=str(work))


def _run(env: dict) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run the script as the docs say, in its own session; return it and what is left of it."""
    proc = subprocess.Popen(
        [str(SCRIPT.relative_to(ROOT))], cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    out = "(no output: still running after 30 s)"
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    finally:
        left = _session_members(proc.pid)
        for pid in left:  # the test stops what the script did not
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, "")
    return done, list(left.values())


def _session_members(sid: int) -> dict[int, str]:
    """{pid: command line} of the processes of session `sid` other than its leader."""
    members = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        pid = int(stat.parent.name)
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and pid != sid:  # field 6 of stat: the session id
                members[pid] = (stat.parent / "cmdline").read_text().replace("\0", " ")
        except OSError:
            continue
    return members


def test_the_pair_carries_a_dicom_file_and_leaves_nothing(env):
    done, left = _run(env)
    assert done.returncode == 0, done.stdout
    assert "arrived through A -> TLS -> B" in done.stdout
    assert "tls=TLSv1.3" in done.stdout and "result=ok" in done.stdout
    assert not left, f"processes left running: {left}"
    assert not list(Path(env["TMPDIR"]).iterdir()), "working directory not removed"


def test_a_failing_pair_exits_non_zero_and_stops_what_it_started(env):
    # The receiver's port is taken by a listener that hangs up at once, so storescp cannot
    # start while both medtls processes are up: the script has to give up and clean up.
    with socket.socket() as blocker:
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", RECEIVER_PORT))
        blocker.listen(8)
        blocker.settimeout(0.2)
        stop = threading.Event()

        def hang_up():
            while not stop.is_set():
                try:
                    blocker.accept()[0].close()
                except OSError:
                    continue

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        try:
            done, left = _run(env)
        finally:
            stop.set()
            thread.join(5)
    assert done.returncode != 0, done.stdout
    assert "storescp exited early" in done.stdout
    assert "arrived" not in done.stdout
    assert not left, f"processes left running: {left}"
    assert not list(Path(env["TMPDIR"]).iterdir()), "working directory not removed"
