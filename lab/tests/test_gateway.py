"""Peers behind the hospital router (`device.prefix`/`device.gateway`) on the real kernel.

The PACS in the data centre (namespace dc, 198.18.5.20, DCMTK storescp +tls) is two hops away:
modality -- box -- LAN (Mallory's wire) -- router 198.18.0.1 / 198.18.5.1 -- dc. The box's own
legs as the device (outbound TLS, replies of inbound TLS, NTP) must go to the router's MAC; a
capture on the LAN leg decides.
"""

from __future__ import annotations

import pytest
import yaml
from medlab import ntp
from medlab import services as sv
from medlab.dicomfile import PATIENT_NAME, stored_objects
from medlab.net import tshark

DC_IP, GATEWAY, ROUTER_MAC = "198.18.5.20", "198.18.0.1", "02:00:5e:10:00:01"
DC_NTP = "198.18.5.123"


def _stored_with(store, pixels):
    return [o for o in stored_objects(store) if o[2] == pixels]


def _config(env, name: str, gateway: bool):
    cfg = yaml.safe_load(env.config.read_text())
    if gateway:
        cfg["device"].update(prefix=24, gateway=GATEWAY)
    cfg["outbound"].append({"name": "dc-pacs", "address": DC_IP, "port": 104,
                            "tls_port": 2762, "verify": {"ip": DC_IP}})  # fmt: skip
    cfg["inbound"][0]["allow"].append({"cn": "dc-pacs", "ip": DC_IP})
    cfg["ntp"] = {"servers": [DC_NTP]}
    cfg["limits"] = {**cfg.get("limits", {}), "connect_timeout": 3}
    path = env.lab.workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def routed(env):
    """medtls with the routed PACS as a peer, the gateway rules, the data centre's peers; the
    lab's own configuration and medtls are restored afterwards, also on failure."""
    lab = env.lab
    gw, plain = _config(env, "gateway", True), _config(env, "no-gateway", False)
    store = lab.workdir / "dc-store"
    store.mkdir(exist_ok=True)
    cert, key, ca = env.tls("dc-pacs")
    pacs = ntp_server = None
    env.stop_medtls()
    try:
        pacs = lab.spawn("dc", [sv.dcmtk("storescp"), "-dhl", "+tls", key, cert, "+cf", ca, "-rc",
                                "-aet", sv.PACS_AET, "-od", str(store), "2762"],
                         "dc-storescp.log")  # fmt: skip
        lab.wait_listen("dc", 2762, proc=pacs, log="dc-storescp.log")
        ntp_server = ntp.start_server(lab, DC_NTP, ns="dc")
        sv.apply_rules(lab, gw)
        env.medtls = sv.start_medtls(lab, gw, log="medtls-gateway.log")
        yield {"gateway": gw, "no_gateway": plain, "store": store}
    finally:
        env.stop_medtls()
        if pacs is not None:
            lab.stop(pacs)
        if ntp_server is not None:
            ntp.stop_server(lab, ntp_server, DC_NTP, ns="dc")
        sv.apply_rules(lab, env.config)
        env.start_medtls()


def test_device_stores_to_routed_pacs_over_tls_via_the_router(env, routed, dicom):
    lab = env.lab
    path, pixels = dicom
    with lab.capture("mallory", "box", "gw-out.pcap") as pcap:
        sv.store(lab, "modality", DC_IP, 104, sv.PACS_AET, path)
    assert _stored_with(routed["store"], pixels), "the routed PACS stored nothing"
    raw = pcap.read_bytes()
    assert PATIENT_NAME.encode() not in raw
    for off in range(0, len(pixels) - 32, 4096):
        assert pixels[off : off + 32] not in raw, f"pixel bytes at {off} visible on the LAN"
    assert tshark(pcap, f"tls.handshake.type == 1 and ip.dst == {DC_IP}"), "no ClientHello"
    to_dc = tshark(pcap, f"ip.dst == {DC_IP}", ("ip.src", "eth.dst", "tcp.dstport"))
    assert to_dc, "nothing to the routed PACS on the LAN leg"
    assert set(to_dc) == {f"{sv.DEVICE_IP}\t{ROUTER_MAC}\t2762"}, set(to_dc)
    assert tshark(pcap, "tcp.port == 104") == [], "plain DICOM on the LAN leg"
    assert tshark(pcap, f"arp.dst.proto_ipv4 == {DC_IP}") == [], "the box ARPed for the PACS"


def test_routed_peer_inbound_tls_reaches_device_in_plain(env, routed, dicom):
    lab = env.lab
    path, pixels = dicom
    with (
        lab.capture("mallory", "box", "gw-in-lan.pcap") as lan,
        lab.capture("modality", "eth0", "gw-in-device.pcap") as device,
    ):
        sv.store(lab, "dc", sv.DEVICE_IP, 2762, sv.DEVICE_AET, path, env.tls("dc-pacs"))
    assert _stored_with(env.modality_store, pixels), "the device stored nothing"
    # The device sees the real peer, in plain, on its DICOM port.
    assert tshark(device, f"ip.src == {DC_IP} and tcp.dstport == 104 and tcp.len > 0")
    assert tshark(device, "tcp.port == 2762") == []
    replies = tshark(lan, f"ip.src == {sv.DEVICE_IP} and tcp.srcport == 2762", ("eth.dst",))
    assert replies and set(replies) == {ROUTER_MAC}, set(replies)
    assert tshark(lan, f"tcp.port == 104 or arp.dst.proto_ipv4 == {DC_IP}") == []


def test_routed_plaintext_to_device_is_still_dropped(env, routed):
    lab = env.lab
    with lab.capture("modality", "eth0", "gw-bypass.pcap") as device:
        lab.run("dc", ["ping", "-c", "1", "-W", "3", sv.DEVICE_IP])  # control: routed path works
        for port in (104, 2575, 2762, 45000):
            r = lab.run("dc", ["socat", "-u", "-", f"TCP:{sv.DEVICE_IP}:{port},connect-timeout=2"],
                        input="plain from the data centre", check=False, timeout=10)  # fmt: skip
            # 2762 is the device's TLS port: medtls accepts and fails the handshake.
            assert port == 2762 or r.returncode != 0, f"plain TCP reached device port {port}"
    assert tshark(device, f"icmp and ip.src == {DC_IP}"), "control: the routed ping is missing"
    assert tshark(device, f"tcp and ip.src == {DC_IP}") == [], "routed plaintext reached the device"


def test_box_ntp_reaches_a_routed_server_as_the_device(env, routed):
    lab = env.lab
    with lab.capture("mallory", "box", "gw-ntp.pcap") as pcap:
        ok, out = ntp.query(lab, "box", server=DC_NTP)
    assert ok, f"the box got no NTP response from {DC_NTP}:\n{out}"
    requests = tshark(pcap, "ntp.flags.mode == 3", ("ip.src", "eth.dst"))
    assert requests and set(requests) == {f"{sv.DEVICE_IP}\t{ROUTER_MAC}"}, set(requests)


def test_without_gateway_the_routed_pacs_is_unreachable(env, routed, dicom):
    """Control: the same medtls, rules without `device.gateway` (on-link routes only)."""
    lab = env.lab
    path, pixels = dicom
    sv.apply_rules(lab, routed["no_gateway"])
    try:
        with lab.capture("mallory", "box", "gw-none.pcap") as pcap:
            r = sv.store(lab, "modality", DC_IP, 104, sv.PACS_AET, path, check=False)
    finally:
        sv.apply_rules(lab, routed["gateway"])
    assert r.returncode != 0 and not _stored_with(routed["store"], pixels)
    assert tshark(pcap, f"arp.dst.proto_ipv4 == {DC_IP}"), "expected the box to ARP for the PACS"
    sv.store(lab, "modality", DC_IP, 104, sv.PACS_AET, path)  # and back with the gateway
    assert _stored_with(routed["store"], pixels)
