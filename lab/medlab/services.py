"""Start the lab's real peers and the real medtls, and drive the DICOM/HL7 clients."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

from medlab.net import LAB_DIR, Lab, LabError

REPO = LAB_DIR.parent
EXAMPLE_CONFIG = REPO / "examples" / "ct-modality.yaml"
VENV_BIN = Path(sys.executable).parent
# pynetdicom installs its own echoscu/storescu/storescp into the venv: always use DCMTK's.
DCMTK_BIN = Path("/usr/bin")


def dcmtk(tool: str) -> str:
    return str(DCMTK_BIN / tool)


DEVICE_IP, PACS_IP, HIS_IP, MALLORY_IP = "198.18.0.10", "198.18.0.20", "198.18.0.30", "198.18.0.66"
PACS_AET, DEVICE_AET = "PACS", "CT"
HL7_MESSAGE = (
    "MSH|^~\\&|CT|RADIOLOGY|HIS|HOSPITAL|20260101120000||ORU^R01|LAB0001|P|2.5\r"
    "PID|1||MEDTLS-LAB-4711||CANARY^MALLORY^LAB\r"
    "OBR|1|||CT^Head\r"
    "OBX|1|TX|RESULT||no findings in the lab||||||F"
)


def write_config(pki: Path, out: Path, **overrides) -> Path:
    """The example configuration (the contract), pointed at the lab PKI; nothing else changed."""
    cfg = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    cfg["identity"] = {"certificate": str(pki / "device.crt"), "key": str(pki / "device.key")}
    cfg["trust"] = {"ca": str(pki / "ca.crt")}
    # The lab shares the host's clock, which no NTP server here synchronises; a real box waits
    # for time sync before it validates certificates (clock.require_sync, default true).
    cfg["clock"] = {"require_sync": False}
    # Its own control socket: another medtls on this host (a second lab, a developer's box
    # config) would otherwise answer on the default path and this one would refuse to start.
    cfg["control"] = {"socket": str(out.parent / "control.sock")}
    cfg.update(overrides)
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def medtls_argv(*args: str) -> list[str]:
    # The medtls of this checkout (the venv's entry point may belong to another one).
    return ["env", f"PYTHONPATH={REPO / 'proxy'}", sys.executable, "-m", "medtls", *args]


def apply_rules(lab: Lab, config: Path) -> None:
    lab.run("box", medtls_argv("rules", "apply", "--config", str(config)))


def start_medtls(lab: Lab, config: Path, log: str = "medtls.log"):
    proc = lab.spawn("box", medtls_argv("run", "--config", str(config)), log)
    for port in (15001, 15002):
        lab.wait_listen("box", port, timeout=20, proc=proc, log=log)
    return proc


def start_pacs(lab: Lab, pki: Path) -> Path:
    """DCMTK storescp with TLS (client certificate required) and the HL7 receiver (HIS)."""
    store = lab.workdir / "pacs-store"
    store.mkdir(exist_ok=True)
    argv = [
        dcmtk("storescp"),
        "+tls",
        str(pki / "pacs.key"),
        str(pki / "pacs.crt"),
        "+cf",
        str(pki / "ca.crt"),
        "-rc",
        "-aet",
        PACS_AET,
        "-od",
        str(store),
        "2762",
    ]
    lab.spawn("pacs", argv, "pacs-storescp.log")
    lab.wait_listen("pacs", 2762, log="pacs-storescp.log")
    hl7dir = lab.workdir / "his-inbox"
    hl7 = [
        sys.executable,
        "-m",
        "medlab.hl7peer",
        "serve",
        HIS_IP,
        "2575",
        str(hl7dir),
        "--tls",
        str(pki / "his.crt"),
        str(pki / "his.key"),
        str(pki / "ca.crt"),
    ]
    lab.spawn("pacs", hl7, "his-hl7.log", env={"PYTHONPATH": str(LAB_DIR)})
    lab.wait_listen("pacs", 2575, log="his-hl7.log")
    return store


def start_modality(lab: Lab) -> Path:
    """The legacy device: plain DICOM on 104 and plain HL7 MLLP on 2575 (inbound targets)."""
    store = lab.workdir / "modality-store"
    store.mkdir(exist_ok=True)
    # -dhl: the modality has a default route (via the lab router, which has no upstream); a
    # reverse lookup of each peer would wait for DNS timeouts instead of failing at once.
    lab.spawn(
        "modality",
        [dcmtk("storescp"), "-dhl", "-aet", DEVICE_AET, "-od", str(store), "104"],
        "modality-storescp.log",
    )
    lab.wait_listen("modality", 104, log="modality-storescp.log")
    hl7 = [sys.executable, "-m", "medlab.hl7peer", "serve", DEVICE_IP, "2575",
           str(lab.workdir / "modality-hl7-inbox")]  # fmt: skip
    lab.spawn("modality", hl7, "modality-hl7.log", env={"PYTHONPATH": str(LAB_DIR)})
    lab.wait_listen("modality", 2575, log="modality-hl7.log")
    return store


def echo(
    lab: Lab, ns: str, host: str, port: int, aec: str, tls: tuple | None = None, check=True,
    aet: str = "LABSCU",
):  # fmt: skip
    argv = [dcmtk("echoscu"), "-to", "10", "-ta", "10", "-td", "10", "-aet", aet, "-aec", aec]
    if tls:
        argv += ["+tls", tls[1], tls[0], "+cf", tls[2]]
    return lab.run(ns, [*argv, host, str(port)], timeout=40, check=check)


def store(lab: Lab, ns: str, host: str, port: int, aec: str, dcm: Path, tls=None, check=True):
    argv = [dcmtk("storescu"), "-to", "10", "-ta", "10", "-td", "10", "-aet", "LABSCU", "-aec", aec]
    if tls:
        argv += ["+tls", tls[1], tls[0], "+cf", tls[2]]
    return lab.run(ns, [*argv, host, str(port), str(dcm)], timeout=60, check=check)


def hl7_send(lab: Lab, ns: str, host: str, port: int, tls=None, check=True):
    argv = [sys.executable, "-m", "medlab.hl7peer", "send", host, str(port)]
    if tls:
        argv += ["--tls", *tls]
    return lab.run(ns, ["env", f"PYTHONPATH={LAB_DIR}", *argv], input=HL7_MESSAGE, check=check)


def pynetdicom_echo(lab: Lab, ns: str, host: str, port: int, aec: str, aet: str = "PYSCU") -> dict:
    """pynetdicom as the SCU (medlab.dicomscu): the association's outcome as a dict."""
    argv = [sys.executable, "-m", "medlab.dicomscu", host, str(port), aec, "--aet", aet]
    r = lab.run(ns, ["env", f"PYTHONPATH={LAB_DIR}", *argv], timeout=40, check=False)
    if r.returncode != 0 or not r.stdout.strip():
        raise LabError(f"{ns}: medlab.dicomscu exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def tls_files(pki: Path, name: str) -> tuple[str, str, str]:
    """(cert, key, ca) for a lab node."""
    return str(pki / f"{name}.crt"), str(pki / f"{name}.key"), str(pki / "ca.crt")


def wait_for(predicate, timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise LabError(f"timed out waiting for {what}")
