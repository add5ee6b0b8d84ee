"""A serving process imports only what serving needs (every module costs RSS in each process).

`medtls run` reports its imports (PYTHONPROFILEIMPORTTIME); optional features that are off must
not pull their modules in, and nothing may spawn helpers (ctypes.util runs `ldconfig -p`).
"""

import socket

import pytest
from conftest import echo_once, free_port

# Never needed while serving: cryptography (item 19 of docs/performance.md), ctypes.util +
# tempfile (libc lookup; a subprocess per clock check), http.server/email (metrics endpoint, off
# here), xml (audit messages are built as text); argparse with gettext and shutil (`run` is
# parsed without it), the other subcommands' modules (interception, subprocess), typing, and json
# (control socket, imported at the first request) — items 41-43.
NEVER = (
    "cryptography", "ctypes.util", "tempfile", "http.server", "email", "xml",
    "argparse", "gettext", "shutil", "medtls.interception", "medtls.ops.cli", "subprocess",
    "typing", "json",
)  # fmt: skip


def _imported(log: str) -> set[str]:
    mods = set()
    for line in log.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                mods.add(name)
    return mods


def _forbidden(mods: set[str], names=NEVER) -> list[str]:
    return sorted(m for m in mods for n in names if m == n or m.startswith(n + "."))


def _echo(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        return echo_once(s, payload)


def test_imports_parser():
    log = "import time: self [us] | cumulative | imported package\nimport time: 5 | 9 |   a.b\n"
    assert _imported(log) == {"a.b"}
    assert _forbidden({"xml.dom", "xmlrpc", "jsonx", "pickle"}) == ["xml.dom"]


def test_serving_process_imports_no_optional_modules(make_pair, echo_server, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    audit = {"transport": "local", "local_socket": str(tmp_path / "audit.sock")}
    pair = make_pair(echo_server.port, a_over={"audit": audit}, b_over={"audit": audit})
    assert _echo(pair.a_port, b"hello") == b"hello"
    pair.a.wait_conn("ok")
    for m in (pair.a, pair.b):
        mods = _imported(m.log())
        assert "medtls.engine.daemon" in mods and "medtls.ops.runtime" in mods, m.log()[-2000:]
        assert _forbidden(mods) == []


@pytest.mark.parametrize("feature", ["metrics"])
def test_enabled_feature_does_import_its_modules(feature, make_pair, echo_server, monkeypatch):
    # The check above sees real imports: with the metrics endpoint on, http.server shows up.
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    over = {"metrics": {"enabled": True, "listen": f"127.0.0.1:{free_port()}"}}
    pair = make_pair(echo_server.port, a_over=over)
    pair.a.wait_log("metrics")
    assert "http.server" in _forbidden(_imported(pair.a.log()))
