"""Stands in for journald's /dev/log for medtls' audit messages during a benchmark.

medtls audits every authenticated connection (IHE ATNA node authentication) to a local syslog
socket by default. This machine has no /dev/log, so without a receiver every message would wait
in medtls' in-memory audit queue (up to 10,000 per process) and be counted as medtls' RSS, which
no appliance with journald sees. This receiver reads and counts them, as journald would.

Run: python -m bench.auditsink PATH; prints "ready" once bound; on SIGTERM prints the count.
"""

import contextlib
import os
import signal
import socket
import sys


def main() -> int:
    path = sys.argv[1]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(path)
    count = 0

    def stop(*_):
        print(f"audit messages received: {count}", flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    buf = bytearray(65536)
    while True:
        if s.recv_into(buf):
            count += 1


if __name__ == "__main__":
    sys.exit(main())
