"""Mallory's on-path relay: intercept TCP (tproxy), pass it on from the original source, and
optionally flip one byte at a stream offset in the client -> server direction.

python -m medlab.mitm PORT [--flip-at N]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

IP_TRANSPARENT = 19


def _transparent_socket() -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return s


async def _pipe(reader, writer, flip_at: int | None, tag: str) -> None:
    seen = 0
    try:
        while data := await reader.read(65536):
            if flip_at is not None and seen <= flip_at < seen + len(data):
                i = flip_at - seen
                data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
                print(f"mitm: {tag} flipped byte at offset {flip_at}", flush=True)
            seen += len(data)
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(port: int, flip_at: int | None) -> None:
    loop = asyncio.get_running_loop()

    async def on_client(reader, writer):
        sock = writer.get_extra_info("socket")
        dst, src = sock.getsockname(), sock.getpeername()
        up = _transparent_socket()
        up.bind((src[0], 0))
        up.setblocking(False)
        tag = f"{src[0]}:{src[1]} -> {dst[0]}:{dst[1]}"
        try:
            await asyncio.wait_for(loop.sock_connect(up, dst), 10)
        except (OSError, TimeoutError) as e:
            print(f"mitm: {tag} upstream failed: {e}", flush=True)
            up.close()
            writer.close()
            return
        print(f"mitm: relaying {tag}", flush=True)
        ureader, uwriter = await asyncio.open_connection(sock=up)
        await asyncio.gather(
            _pipe(reader, uwriter, flip_at, tag), _pipe(ureader, writer, None, tag)
        )

    listener = _transparent_socket()
    listener.bind(("0.0.0.0", port))
    listener.listen(16)
    server = await asyncio.start_server(on_client, sock=listener)
    print(f"mitm: listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="mitm")
    p.add_argument("port", type=int)
    p.add_argument("--flip-at", type=int)
    a = p.parse_args()
    asyncio.run(main(a.port, a.flip_at))
    sys.exit(0)
