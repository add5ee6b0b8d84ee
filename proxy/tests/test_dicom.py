"""DICOM through medtls with real peers: DCMTK and pynetdicom."""

import ssl

import pytest
from conftest import box_config, free_port
from dicom_util import CT, Storescp, dataset_bytes, echoscu, loopback_netns, storescu
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification


@pytest.fixture
def ns():
    """DCMTK's storescp, its clients and the boxes in front of it run in a namespace of the
    test alone (storescp listens on every address it has: see dicom_util.LoopbackNetns)."""
    with loopback_netns() as n:
        yield n


@pytest.fixture
def storescp(tmp_path, ns):
    procs = []

    def start(port=None, tls=None):
        s = Storescp(ns, tmp_path / f"out{len(procs)}", port or free_port(), tls)
        procs.append(s)
        return s

    yield start
    for s in procs:
        s.stop()


def test_dcmtk_store_and_echo_through_pair(make_pair, storescp, ns):
    scp = storescp()
    pair = make_pair(scp.port, preexec_fn=ns.enter)
    r = echoscu(pair.a_port, ns=ns)
    assert r.returncode == 0, r.stderr
    r = storescu(pair.a_port, ns=ns)
    assert r.returncode == 0, r.stderr
    [stored] = scp.files()
    assert dataset_bytes(stored) == dataset_bytes(CT)
    assert "tls=TLSv1.3" in pair.a.wait_log("result=ok")


def test_dcmtk_store_to_storescp_tls_directly(pki, run_medtls, storescp, ns):
    tls_port, a_port = free_port(), free_port()
    scp = storescp(tls_port, ["+tls", str(pki.key("pacs")), str(pki.crt("pacs")),
                              "+cf", str(pki.ca), "-rc"])  # fmt: skip
    run_medtls(box_config(pki, "box-a", outbound=[{
        "name": "pacs", "address": "127.0.0.1", "tls_port": tls_port,
        "listen": f"127.0.0.1:{a_port}", "verify": {"cn": "pacs", "ip": "127.0.0.1"}}]),
        "a", [a_port], ns.enter)  # fmt: skip
    r = storescu(a_port, ns=ns)
    assert r.returncode == 0, r.stderr
    [stored] = scp.files()
    assert dataset_bytes(stored) == dataset_bytes(CT)


def test_client_without_certificate_tls13_fails_dicom_result(pki, run_medtls, storescp, ns):
    """TLS 1.3: the client's handshake 'succeeds'; the DICOM result must show the refusal."""
    scp = storescp()
    b_port = free_port()
    b = run_medtls(box_config(pki, "box-b", inbound=[{
        "name": "svc", "listen": f"127.0.0.1:{b_port}", "device_port": scp.port,
        "allow": [{"cn": "box-a"}]}]), "b", [b_port], ns.enter)  # fmt: skip
    r = storescu(b_port, "+tla", "+cf", str(pki.ca), ns=ns)  # anonymous TLS client, no certificate
    assert r.returncode != 0, r.stdout + r.stderr
    assert scp.files() == []
    b.wait_conn("no_certificate")


def _pynetdicom_scp(port, handler_store=None, ssl_context=None):
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage)
    received = []

    def on_store(event):
        received.append(event.dataset)
        return 0x0000

    return ae.start_server(("127.0.0.1", port), block=False, ssl_context=ssl_context,
                           evt_handlers=[(evt.EVT_C_STORE, on_store)]), received  # fmt: skip


def _pynetdicom_store(port, tls_args=None):
    ae = AE(ae_title="CT")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACS", tls_args=tls_args)
    assert assoc.is_established
    try:
        echo = assoc.send_c_echo()
        store = assoc.send_c_store(dcmread(CT))
    finally:
        assoc.release()
    return echo.Status, store.Status


def test_pynetdicom_outbound_through_pair(make_pair):
    port = free_port()
    server, received = _pynetdicom_scp(port)
    try:
        pair = make_pair(port)
        assert _pynetdicom_store(pair.a_port) == (0, 0)
    finally:
        server.shutdown()
    assert received[0].SOPInstanceUID == dcmread(CT).SOPInstanceUID


def test_pynetdicom_tls_peers_both_directions(pki, run_medtls):
    # outbound: plain pynetdicom SCU -> medtls -> pynetdicom TLS SCP (requires client certs)
    tls_port, a_port = free_port(), free_port()
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    sctx.verify_mode = ssl.CERT_REQUIRED
    sctx.load_cert_chain(pki.crt("pacs"), pki.key("pacs"))
    server, received = _pynetdicom_scp(tls_port, ssl_context=sctx)
    # inbound: pynetdicom TLS SCU (client cert) -> medtls -> plain pynetdicom SCP (device)
    dev_port, b_port = free_port(), free_port()
    dev_server, dev_received = _pynetdicom_scp(dev_port)
    try:
        run_medtls(box_config(pki, "box-a", outbound=[{
            "name": "pacs", "address": "127.0.0.1", "tls_port": tls_port,
            "listen": f"127.0.0.1:{a_port}", "verify": {"dns": "pacs.test"}}],
            inbound=[{"name": "dicom", "listen": f"127.0.0.1:{b_port}", "device_port": dev_port,
                      "allow": [{"cn": "ris"}, {"cn": "pacs", "ip": "127.0.0.1"}]}]),
            "box", [a_port, b_port])  # fmt: skip
        assert _pynetdicom_store(a_port) == (0, 0)
        cctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
        cctx.check_hostname = False
        cctx.load_cert_chain(pki.crt("pacs"), pki.key("pacs"))
        assert _pynetdicom_store(b_port, tls_args=(cctx, None)) == (0, 0)
    finally:
        server.shutdown()
        dev_server.shutdown()
    assert len(received) == 1 and len(dev_received) == 1
