"""`systemd-analyze security` of the medtls unit exactly as roles/proxy renders it.

The Molecule proxy verifier asserts the exposure (<= 2.0) on the running unit in its container;
this renders the role's template with the role's defaults through Ansible and scores the file
offline on the controller, so the number is reproducible without a container.

    python -m medtls_audit.unit [--out build/audit]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "roles/proxy/templates/medtls.service.j2"
DEFAULTS = ROOT / "roles/proxy/defaults/main.yml"


def render(dest: Path) -> None:
    subprocess.run(
        [
            "ansible", "localhost", "-c", "local", "-i", "localhost,", "-o",
            "-m", "ansible.builtin.template",
            "-a", f"src={TEMPLATE} dest={dest} mode=0644",
            "-e", f"@{DEFAULTS}",
            "-e", f"ansible_python_interpreter={sys.executable}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip


def parse(text: str) -> tuple[float, list[str]]:
    """Overall exposure and the settings systemd-analyze marks as not met (✗)."""
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", text)
    if not m:
        raise ValueError("no 'Overall exposure level' in systemd-analyze output")
    unmet = [re.sub(r"\s{2,}", "  ", line[1:].strip()) for line in text.splitlines()
             if line.startswith("✗")]  # fmt: skip
    return float(m.group(1)), unmet


def analyze(unit: Path) -> str:
    res = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    if "Overall exposure level" not in res.stdout:
        raise RuntimeError(f"systemd-analyze security failed: {res.stderr.strip()}")
    return res.stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("build/audit"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    unit = args.out.resolve() / "medtls.service"
    try:
        render(unit)
        text = analyze(unit)
    except subprocess.CalledProcessError as e:
        print(f"error: rendering {TEMPLATE}: {(e.stdout or '')[-400:]}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (args.out / "unit-security.txt").write_text(text)
    score, unmet = parse(text)
    print(f"systemd-analyze security (offline) {unit}: exposure {score}")
    for line in unmet:
        print(f"  not set: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
