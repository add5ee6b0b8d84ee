"""HL7 v2 MLLP peers for the lab (python-hl7's asyncio MLLP): `serve` stores and ACKs, `send`.

python -m medlab.hl7peer serve HOST PORT OUTDIR [--tls CERT KEY CA]
python -m medlab.hl7peer send HOST PORT [--tls CERT KEY CA]   (message on stdin, prints the ACK)
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import time
from pathlib import Path

import hl7
import hl7.mllp


def _ctx(server: bool, cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not server:
        ctx.check_hostname = False
    return ctx


async def serve(host: str, port: int, outdir: Path, ctx) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    count = 0

    async def on_client(reader, writer):
        nonlocal count
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                count += 1
                (outdir / f"msg-{time.time_ns()}.hl7").write_text(str(message))
                writer.writemessage(message.create_ack())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await hl7.mllp.start_hl7_server(on_client, host, port, ssl=ctx)
    print(f"hl7peer: listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


async def send(host: str, port: int, text: str, ctx) -> str:
    reader, writer = await asyncio.wait_for(
        hl7.mllp.open_hl7_connection(host, port, ssl=ctx), timeout=15
    )
    writer.writemessage(hl7.parse(text))
    await writer.drain()
    ack = await asyncio.wait_for(reader.readmessage(), timeout=15)
    writer.close()
    return str(ack)


def main() -> int:
    p = argparse.ArgumentParser(prog="hl7peer")
    p.add_argument("mode", choices=("serve", "send"))
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("outdir", nargs="?", type=Path)
    p.add_argument("--tls", nargs=3, metavar=("CERT", "KEY", "CA"))
    a = p.parse_args()
    ctx = _ctx(a.mode == "serve", *a.tls) if a.tls else None
    if a.mode == "serve":
        asyncio.run(serve(a.host, a.port, a.outdir or Path("."), ctx))
        return 0
    text = sys.stdin.read().replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    try:
        print(asyncio.run(send(a.host, a.port, text, ctx)).replace("\r", "\n"))
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ssl.SSLError) as e:
        print(f"hl7peer: send failed: {e!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
