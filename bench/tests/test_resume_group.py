"""The resume group's pure parts: the two configurations each contender renders, the probes'
verdicts, and which chain configuration each metric group runs on."""

import dataclasses
import re
from pathlib import Path

import pytest

from bench import checks, contenders, run
from bench.certs import make_pki

S_CLIENT = """CONNECTED(00000003)
---
Certificate chain
---
{status}, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384
Server public key is 256 bit
"""


def test_session_status_reads_s_client_and_s_server_output():
    assert checks.session_status(S_CLIENT.format(status="Reused")) == "Reused"
    assert checks.session_status(S_CLIENT.format(status="New")) == "New"
    page = "<pre>\nCiphers ...\n---\nReused, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384\n"
    assert checks.session_status(page) == "Reused"
    assert checks.session_status("New, TLSv1.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384") is None
    assert checks.session_status("connect: Connection refused") is None


def test_judge_resumption():
    on = {"server_side": "Reused", "client_side": "New", "pair": "New"}
    assert checks.judge_resumption(True, on) == []  # client side: reported, not fatal
    off = {"server_side": "New", "client_side": "New", "pair": "New"}
    assert checks.judge_resumption(True, off) == ["server side did not resume a session (New)"]
    assert checks.judge_resumption(False, off) == []
    assert checks.judge_resumption(False, {**off, "pair": "Reused"}) == [
        "pair resumed a session with resumption off"
    ]
    assert checks.judge_resumption(False, {**off, "server_side": "Reused"}) == [
        "server side resumed a session with resumption off"
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    return contenders.Setup(work, make_pki(work / "pki", "ecdsa"), "aes256gcm")


def _configs(name: str, setup, resume: bool) -> str:
    c = contenders.ALL[name]
    s = dataclasses.replace(setup, resume=resume)
    paths = [c.client_config(s, 1001, 1002), c.server_config(s, 1003, 1004)]
    assert all(p.name.endswith("-resume" + p.suffix) == resume for p in paths)
    return "\n".join(p.read_text() for p in paths)


def test_stunnel_configurations(setup):
    full = _configs("stunnel", setup, False)
    assert full.count("sessionResume = no") == 2 and full.count("options = NO_TICKET") == 2
    resume = _configs("stunnel", setup, True)
    assert resume.count("sessionResume = yes") == 2 and "NO_TICKET" not in resume


def test_haproxy_configurations(setup):
    full = _configs("haproxy", setup, False)
    assert full.count("no-tls-tickets") == 2 and " no-ssl-reuse" in full
    assert "tune.ssl.cachesize 0" in full  # else TLS 1.3 resumes via session IDs
    resume = _configs("haproxy", setup, True)
    for opt in ("no-tls-tickets", "no-ssl-reuse", "cachesize"):
        assert opt not in resume
    assert "$" not in full + resume


def test_medtls_configurations_load_with_the_lifetime_set(setup):
    config = pytest.importorskip("medtls.config")
    if not contenders.ALL["medtls"]._knows_session_lifetime():
        pytest.skip("this medtls has no tls.session_lifetime")
    c = contenders.ALL["medtls"]
    for resume, lifetime in ((False, 0), (True, contenders.SESSION_LIFETIME)):
        s = dataclasses.replace(setup, resume=resume)
        for path in (c.client_config(s, 1001, 1002), c.server_config(s, 1003, 1004)):
            assert config.load_config(path, check_files=False).session_lifetime == lifetime


_SESSION_LINE = re.compile(r"^(sessionResume = \w+|options = NO_TICKET|\s*tune\.ssl\.cachesize 0"
                           r"|\s*session_lifetime: \d+)$")  # fmt: skip


def _normalized(text: str) -> list[str]:
    """The lines that are not about sessions, with session options and file suffixes removed."""
    out = []
    for line in text.splitlines():
        if _SESSION_LINE.match(line) or not line.strip():
            continue
        for token in (" no-tls-tickets", " no-ssl-reuse", "-resume"):
            line = line.replace(token, "")
        out.append(line)
    return out


@pytest.mark.parametrize("name", ["stunnel", "haproxy", "medtls"])
def test_the_two_configurations_differ_only_in_their_session_lines(name, setup):
    # why the resumption configuration may skip the rogue-server check (bench/checks.run_all)
    full, resume = _configs(name, setup, False), _configs(name, setup, True)
    assert full != resume
    assert _normalized(full) == _normalized(resume)


def test_drop_key_for_a_medtls_without_resumption():
    text = "tls:\n  profile: bcp195\n  session_lifetime: 0\noutbound:\n"
    assert contenders.drop_key(text, "session_lifetime") == "tls:\n  profile: bcp195\noutbound:\n"


class _Chain:
    def __init__(self, resume):
        self.resume, self.tls_port, self.pids = resume, 1, []

    def stop(self):
        pass


def _run(monkeypatch, groups, failing_check=None):
    """run_contender with chains, checks and measurements replaced by recorders."""
    log = []

    def start_chain(c, setup, sink_port):
        log.append(("start", setup.resume))
        return _Chain(setup.resume)

    def run_all(c, setup, tls_port, spare, resumption):
        log.append(("check", setup.resume, resumption))
        if setup.resume == failing_check:
            raise checks.CheckFailed("server side did not resume a session (New)")
        return {"protocol": "TLSv1.3", "resumption": {"resume": setup.resume}}

    def measure(group, chain, sizes):
        log.append((group, chain.resume))
        return {group: 1.0}

    monkeypatch.setattr(run, "start_chain", start_chain)
    monkeypatch.setattr(run.checks, "run_all", run_all)
    monkeypatch.setattr(run, "measure", measure)
    result = {"errors": [], "checks": {}}
    broken = set()
    setup = contenders.Setup(Path("/nonexistent"), None, "aes256gcm")
    values = run.run_contender(contenders.ALL["stunnel"], setup, 9, groups, None, 0, "s", result,
                               broken)  # fmt: skip
    return log, values, result, broken


def test_resume_group_runs_on_its_own_configuration(monkeypatch):
    log, values, result, _ = _run(monkeypatch, ("conn", "rtt", "resume"))
    assert log == [("start", False), ("check", False, True), ("conn", False), ("rtt", False),
                   ("start", True), ("check", True, True), ("resume", True)]  # fmt: skip
    assert set(values) == {"conn", "rtt", "resume"}
    entry = result["checks"]["s"]["stunnel"]
    assert entry["resumption"] == {"resume": False}
    assert entry["resume_config"]["resumption"] == {"resume": True}


def test_a_failed_resumption_check_costs_only_the_resume_group(monkeypatch):
    _log, values, result, broken = _run(monkeypatch, ("conn", "resume"), failing_check=True)
    assert set(values) == {"conn"} and broken == {"resume"}
    assert result["errors"] == [
        "s/stunnel: resumption configuration security check: "
        "server side did not resume a session (New)"
    ]
    assert "resume_config" not in result["checks"]["s"]["stunnel"]


def test_a_failed_full_configuration_check_stops_everything(monkeypatch):
    log, values, _result, broken = _run(monkeypatch, ("conn", "resume"), failing_check=False)
    assert values == {} and "start" in broken
    assert log == [("start", False), ("check", False, True)]


def test_resumption_is_probed_only_where_connection_setup_is_measured(monkeypatch):
    log, *_ = _run(monkeypatch, ("bulk", "parallel"))
    assert ("check", False, False) in log
