from __future__ import annotations

import pytest

from .harness import Box
from .rsyslog import Rsyslog, available


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


@pytest.fixture
def box_factory(tmp_path, fresh_pki, echo_server):
    boxes: list[Box] = []

    def make(**kw) -> Box:
        box = Box(tmp_path, fresh_pki, echo_server.port, **kw)
        boxes.append(box)
        return box

    yield make
    for box in boxes:
        box.stop()
