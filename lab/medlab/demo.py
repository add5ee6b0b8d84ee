"""`make lab`: build the lab, show every flow through the real medtls, print a summary.

python -m medlab.demo            run the demo in fresh namespaces and remove them (exit 0 = all OK)
python -m medlab.demo --up       build the lab with the fixed names and leave it running
python -m medlab.demo --down     remove the lab built with --up
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from medlab import services as sv
from medlab.dicomfile import PATIENT_NAME, make_dicom, stored_objects
from medlab.env import LabEnv, build
from medlab.net import NAMESPACES, Lab, LabError, tshark

KEEP_PREFIX = ""
KEEP_DIR = Path(os.environ.get("MEDTLS_LAB_DIR", "/tmp/medtls-lab"))


def run_demo(env: LabEnv) -> list[tuple[bool, str]]:
    lab, results = env.lab, []

    def check(ok: bool, text: str) -> bool:
        results.append((bool(ok), text))
        return ok

    dcm = lab.workdir / "ct-image.dcm"
    pixels = make_dicom(dcm)
    with lab.capture("mallory", "box", "demo-lan.pcap") as pcap:
        r = sv.echo(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, check=False)
        check(r.returncode == 0, "outbound C-ECHO  modality -> PACS 198.18.0.20:104 (TLS 2762)")
        r = sv.store(lab, "modality", sv.PACS_IP, 104, sv.PACS_AET, dcm, check=False)
        got = [o for o in stored_objects(env.pacs_store) if o[2] == pixels]
        check(r.returncode == 0 and got, "outbound C-STORE modality -> PACS, image stored intact")
        r = sv.store(lab, "pacs", sv.DEVICE_IP, 2762, sv.DEVICE_AET, dcm, env.tls("pacs"), False)
        got = [o for o in stored_objects(env.modality_store) if o[2] == pixels]
        check(
            r.returncode == 0 and got, "inbound  C-STORE PACS -> modality (TLS 2762 -> plain 104)"
        )
        r = sv.hl7_send(lab, "modality", sv.HIS_IP, 2575, check=False)
        check(r.returncode == 0 and "MSA|AA|LAB0001" in r.stdout,
              "HL7 ORU^R01 modality -> HIS 198.18.0.30:2575, ACK MSA|AA")  # fmt: skip
        r = sv.hl7_send(lab, "pacs", sv.DEVICE_IP, 2576, tls=env.tls("his"), check=False)
        check(r.returncode == 0 and "MSA|AA|LAB0001" in r.stdout,
              "HL7 from HIS -> modality (TLS 2576 -> plain 2575), ACK MSA|AA")  # fmt: skip
    raw = pcap.read_bytes()
    frames = len(tshark(pcap, "frame"))
    hellos = len(tshark(pcap, "tls.handshake.type == 1"))
    plain = len(tshark(pcap, "tcp.port == 104 or dicom or hl7"))
    leak = PATIENT_NAME.encode() in raw or pixels[:64] in raw
    check(
        hellos >= 4 and plain == 0 and not leak,
        f"LAN capture: {frames} frames, {hellos} TLS ClientHellos, {plain} plaintext DICOM/HL7 "
        f"packets, patient name {'FOUND' if leak else 'absent'}",
    )
    addrs = lab.run("box", ["ip", "-4", "-o", "addr", "show"]).stdout.split("\n")
    box_ips = [a.split()[3] for a in addrs if a.strip() and " lo " not in a]
    check(not box_ips, f"box has no IPv4 address on its ports ({box_ips or 'none'})")
    return results


def summary(env: LabEnv, results, seconds: float) -> str:
    lines = [f"medtls lab ({env.lab.prefix or 'fixed names'}, workdir {env.lab.workdir}):"]
    lines += [f"  {'OK  ' if ok else 'FAIL'} {text}" for ok, text in results]
    passed = sum(ok for ok, _ in results)
    lines.append(f"  {passed}/{len(results)} checks passed in {seconds:.1f}s")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(prog="medlab.demo")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--up", action="store_true", help="build and keep the lab (fixed names)")
    g.add_argument("--down", action="store_true", help="remove the lab built with --up")
    a = p.parse_args()
    if os.geteuid() != 0:
        print("medlab: the lab needs root (network namespaces, nftables)", file=sys.stderr)
        return 2
    if a.down:
        Lab(KEEP_PREFIX, KEEP_DIR).down()
        shutil.rmtree(KEEP_DIR, ignore_errors=True)
        print("medlab: lab removed")
        return 0
    if a.up:
        return keep()
    start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="medtls-lab-"))
    env = None
    try:
        env = build(f"lab{os.getpid()}-", workdir)
        results = run_demo(env)
        print(summary(env, results, time.monotonic() - start))
        ok = all(r for r, _ in results)
        if not ok:
            print(f"medlab: logs in {workdir}", file=sys.stderr)
            return 1
        shutil.rmtree(workdir, ignore_errors=True)
        return 0
    except (LabError, OSError) as e:
        traceback.print_exc()
        print(f"medlab: lab failed: {e}; logs in {workdir}", file=sys.stderr)
        return 1
    finally:
        if env is not None:
            env.lab.down()
        else:
            Lab(f"lab{os.getpid()}-", workdir).down()


def keep() -> int:
    if KEEP_DIR.exists():
        print(f"medlab: {KEEP_DIR} exists; run `make lab-down` first", file=sys.stderr)
        return 1
    try:
        build(KEEP_PREFIX, KEEP_DIR)
    except (LabError, OSError) as e:
        print(f"medlab: lab failed: {e}", file=sys.stderr)
        Lab(KEEP_PREFIX, KEEP_DIR).down()
        return 1
    make_dicom(KEEP_DIR / "ct-image.dcm")
    print(up_banner(KEEP_DIR))
    return 0


def up_banner(keep_dir: Path) -> str:
    """What `make lab-up` prints once the lab is up."""
    return (
        f"medlab: lab is up; namespaces {' '.join(NAMESPACES)}; files in {keep_dir}\n"
        "  try: ip netns exec modality echoscu -aec PACS 198.18.0.20 104\n"
        "       ip netns exec modality storescu -aec PACS 198.18.0.20 104 "
        f"{keep_dir}/ct-image.dcm\n"
        "  see docs/lab.md; remove with: make lab-down"
    )


if __name__ == "__main__":
    sys.exit(main())
