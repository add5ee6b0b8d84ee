"""HL7 MLLP (python-hl7) and stunnel4 as real far peers."""

import asyncio
import socket
import ssl
import subprocess
import time

import hl7
import hl7.mllp
import pytest
from conftest import EchoServer, box_config, free_port

MSG = "\r".join([
    "MSH|^~\\&|CT|RADIOLOGY|HIS|HOSPITAL|20260101120000||ORU^R01|MSG00042|P|2.5",
    "PID|||12345^^^HOSP||DOE^JOHN",
    "OBR|1||ACC123|CT^CT HEAD",
])  # fmt: skip


async def _handler(reader, writer):
    try:
        while not writer.is_closing():
            msg = await reader.readmessage()
            writer.writemessage(msg.create_ack(ack_code="AA", message_id="ACK42"))
            await writer.drain()
    except asyncio.IncompleteReadError:
        writer.close()


async def _roundtrip(server_port, client_port, server_ssl=None, client_ssl=None):
    server = await hl7.mllp.start_hl7_server(_handler, "127.0.0.1", server_port, ssl=server_ssl)
    async with server:
        reader, writer = await hl7.mllp.open_hl7_connection(
            "127.0.0.1", client_port, ssl=client_ssl
        )
        writer.writemessage(hl7.parse(MSG))
        await writer.drain()
        ack = await asyncio.wait_for(reader.readmessage(), 10)
        writer.close()
        return ack


def _assert_ack(ack):
    assert str(ack.segment("MSA")[1]) == "AA"
    assert str(ack.segment("MSA")[2]) == "MSG00042"


def test_hl7_mllp_both_directions(pki, run_medtls):
    his_tls, a_port, b_port, dev_port = free_port(), free_port(), free_port(), free_port()
    run_medtls(box_config(pki, "box-a", outbound=[{
        "name": "his", "address": "127.0.0.1", "tls_port": his_tls,
        "listen": f"127.0.0.1:{a_port}", "verify": {"cn": "his"}}],
        inbound=[{"name": "hl7-orders", "listen": f"127.0.0.1:{b_port}", "device_port": dev_port,
                  "allow": [{"cn": "his"}]}]), "box", [a_port, b_port])  # fmt: skip
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    sctx.verify_mode = ssl.CERT_REQUIRED
    sctx.load_cert_chain(pki.crt("his"), pki.key("his"))
    # outbound: device (plain) -> medtls -> HIS (TLS)
    _assert_ack(asyncio.run(_roundtrip(his_tls, a_port, server_ssl=sctx)))
    # inbound: HIS (TLS, client cert) -> medtls -> device (plain)
    cctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    cctx.check_hostname = False
    cctx.load_cert_chain(pki.crt("his"), pki.key("his"))
    _assert_ack(asyncio.run(_roundtrip(dev_port, b_port, client_ssl=cctx)))


@pytest.fixture
def stunnel(tmp_path):
    procs = []

    def start(conf: str, port: int):
        path = tmp_path / f"stunnel{len(procs)}.conf"
        path.write_text(f"foreground = yes\npid =\ndebug = 4\n{conf}")
        log = open(tmp_path / f"stunnel{len(procs)}.log", "wb")  # noqa: SIM115
        p = subprocess.Popen(["stunnel4", str(path)], stdout=log, stderr=subprocess.STDOUT)
        procs.append((p, log))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return p
            except OSError:
                time.sleep(0.05)
        raise AssertionError("stunnel did not start")

    yield start
    for p, log in procs:
        p.terminate()
        p.wait(5)
        log.close()


def _echo_roundtrip(port, payload=b"stunnel says hi" * 5000):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    return got == payload


def test_stunnel_as_tls_server(pki, run_medtls, stunnel):
    echo = EchoServer()
    st_port, a_port = free_port(), free_port()
    stunnel(f"""[srv]
accept = 127.0.0.1:{st_port}
connect = 127.0.0.1:{echo.port}
cert = {pki.crt('pacs')}
key = {pki.key('pacs')}
CAfile = {pki.ca}
verifyChain = yes
requireCert = yes
""", st_port)  # fmt: skip
    run_medtls(box_config(pki, "box-a", outbound=[{
        "name": "st", "address": "127.0.0.1", "tls_port": st_port,
        "listen": f"127.0.0.1:{a_port}", "verify": {"cn": "pacs"}}]), "a", [a_port])  # fmt: skip
    assert _echo_roundtrip(a_port)
    echo.close()


def test_stunnel_as_tls_client(pki, run_medtls, stunnel):
    echo = EchoServer()
    st_port, b_port = free_port(), free_port()
    run_medtls(box_config(pki, "box-b", inbound=[{
        "name": "svc", "listen": f"127.0.0.1:{b_port}", "device_port": echo.port,
        "allow": [{"cn": "ris"}]}]), "b", [b_port])  # fmt: skip
    stunnel(f"""[cli]
client = yes
accept = 127.0.0.1:{st_port}
connect = 127.0.0.1:{b_port}
cert = {pki.crt('ris')}
key = {pki.key('ris')}
CAfile = {pki.ca}
verifyChain = yes
""", st_port)  # fmt: skip
    assert _echo_roundtrip(st_port)
    echo.close()
