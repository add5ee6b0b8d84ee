from __future__ import annotations

import pytest
from medtls_testpki import CA

from .rsyslog import Rsyslog, available


@pytest.fixture
def ops_pki(tmp_path):
    ca = CA(tmp_path / "pki")
    return ca


@pytest.fixture
def rsyslog_factory(tmp_path):
    if not available():
        pytest.fail("rsyslogd with the gtls driver is required (apt: rsyslog rsyslog-gnutls)")
    started: list[Rsyslog] = []

    def make(ca, cert, key, **kw) -> Rsyslog:
        r = Rsyslog(tmp_path / f"rsyslog{len(started)}", ca, cert, key, **kw)
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()
