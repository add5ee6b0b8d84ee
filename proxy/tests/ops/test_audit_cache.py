"""The node-authentication message cache changes only speed, never the message."""

from medtls.ops import audit_xml
from medtls.ops.audit_xml import Source

SRC = Source("box-1", "site", node_address="198.18.0.10")
ARGS = ("198.18.0.20", "O=H,CN=pacs @@medtls-event-time@@", "outbound", "", "TLSv1.3", "TLS_X")


def test_cached_message_equals_fresh_build():
    for when in ("2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.000Z"):
        for success in (True, False):
            fresh = audit_xml._node_authentication(SRC, success, *ARGS, when)
            cached = audit_xml.node_authentication(SRC, success, *ARGS, when=when)
            assert cached == fresh
            assert f'EventDateTime="{when}"' in cached


def test_time_is_fresh_per_message():
    a = audit_xml.node_authentication(SRC, True, *ARGS)
    b = audit_xml.node_authentication(SRC, True, *ARGS, when="1999-01-01T00:00:00.000Z")
    assert a != b and 'EventDateTime="1999-01-01T00:00:00.000Z"' in b


def test_local_audit_is_sent_without_waking_the_sender_thread(tmp_path):
    import socket
    import time

    from medtls.ops import syslog

    path = str(tmp_path / "log.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(5)
    sender = syslog.AuditSender(syslog.local_connector(path), stream=False)
    sender.start()
    try:
        sender.submit(b"first")  # connects through the sender thread
        assert rx.recv(100) == b"first"
        deadline = time.monotonic() + 5
        while sender.sent < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        sender._cond.notify = lambda: None  # the thread is never woken again
        for i in range(50):  # read as we go: a unix datagram socket queues only ~10 messages
            sender.submit(b"m%d" % i)
            assert sender.sent == i + 2 and sender.queued() == 0
            assert rx.recv(100) == b"m%d" % i
    finally:
        sender.stop(flush_timeout=0.1)
        rx.close()
