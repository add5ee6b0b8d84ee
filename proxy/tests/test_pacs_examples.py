"""docs/pacs.md shows its configurations as they are in examples/: each YAML block of the page is
an example file, verbatim, and each example passes `medtls check` with the test PKI's files in
place of /etc/medtls/ (so a renamed key or a changed rule breaks this test, not a PACS
installation)."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import MEDTLS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "pacs.md"
EXAMPLES = ("pacs-transparent.yaml", "pacs-explicit.yaml")
# Linux's default ephemeral range starts here (net.ipv4.ip_local_port_range 32768 60999); a
# medtls box with the interception rules uses 40000-60999.
EPHEMERAL_LOW = 32768


def _doc_blocks() -> list[tuple[str, str]]:
    """(file named by the link just above the block, block) for every yaml block of the page."""
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(
        r"^[^\n]*\(\.\./examples/([\w.-]+\.yaml)\)[^\n]*\n\n```yaml\n(.*?)^```$|^```yaml\n",
        text, flags=re.S | re.M,
    )  # fmt: skip
    return [(name, block) for name, block in found]


def test_every_yaml_block_of_the_page_is_an_example_file_verbatim():
    blocks = _doc_blocks()
    assert [name for name, _ in blocks] == list(EXAMPLES), (
        "each ```yaml block must follow a line linking ../examples/<file>.yaml and a blank line"
    )
    for name, block in blocks:
        assert block == (ROOT / "examples" / name).read_text(encoding="utf-8"), name


def _with_test_pki(name: str, pki, tmp_path: Path) -> Path:
    text = (ROOT / "examples" / name).read_text(encoding="utf-8")
    for placeholder, real in (
        ("/etc/medtls/device.crt", pki.crt("box-a")),
        ("/etc/medtls/device.key", pki.key("box-a")),
        ("/etc/medtls/ca.pem", pki.ca),
    ):
        text = text.replace(placeholder, str(real))
    assert "/etc/medtls/" not in text, "a path the test does not provide"
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_passes_medtls_check(name, pki, tmp_path):
    cfg = _with_test_pki(name, pki, tmp_path)
    r = subprocess.run([*MEDTLS, "check", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK (1 outbound, 1 inbound)" in r.stdout


@pytest.mark.parametrize("name", EXAMPLES)
def test_one_pacs_certificate_must_pass_verify_and_allow(name):
    """What the page says of the PACS's one certificate: the outbound verify and an inbound
    allow entry name the same certificate (CN and IP SAN), and the allow entry binds AE titles."""
    raw = yaml.safe_load((ROOT / "examples" / name).read_text(encoding="utf-8"))
    [peer], [port] = raw["outbound"], raw["inbound"]
    assert peer["protocol"] == port["protocol"] == "dicom"
    [allow] = port["allow"]
    assert allow["cn"] == peer["verify"]["cn"]
    assert allow["ip_san"] == peer["verify"]["ip"] == peer["address"]
    assert allow["calling_ae"] == ["PACS"]


def test_explicit_listen_ports_lie_below_the_ephemeral_range():
    raw = yaml.safe_load((ROOT / "examples" / "pacs-explicit.yaml").read_text(encoding="utf-8"))
    listens = [e["listen"] for e in raw["outbound"] + raw["inbound"]]
    assert listens and all(int(x.rsplit(":", 1)[1]) < EPHEMERAL_LOW for x in listens), listens
