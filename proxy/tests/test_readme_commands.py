"""Every command README.md shows is executed here, as written, or, for the long-running `make`
targets and the fleet playbook, checked: the target is one `make help` lists (`make -n` would
still run the recipes that call $(MAKE)), the playbook passes `ansible-playbook --syntax-check`.
A command block this file does not know fails the inventory test, so new commands get a test."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import box_config, control_socket
from pki import PKI

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent


def _blocks() -> list[list[str]]:
    text = README.read_text(encoding="utf-8")
    return [b.strip().splitlines() for b in re.findall(r"^```sh\n(.*?)^```$", text, re.S | re.M)]


def _block_of(first_word: str, needle: str) -> list[str]:
    found = [b for b in _blocks() if b[0].split()[0] == first_word and needle in "\n".join(b)]
    assert len(found) == 1, f"README.md: one sh block starting with {first_word} ({needle})"
    return found[0]


def _make_targets() -> set[str]:
    """Every `make TARGET` README.md names, in blocks, tables or prose."""
    text = README.read_text(encoding="utf-8")
    return set(re.findall(r"`make ([a-z0-9-]+)", text)) | set(
        re.findall(r"^make ([a-z0-9-]+)", text, re.M)
    )


def test_every_command_block_is_covered_here():
    known = [("make", "image-debian"), ("cd", "fleet"), ("medtls", "medtls check")]
    for block in _blocks():
        assert any(block[0].split()[0] == w and n in "\n".join(block) for w, n in known), (
            f"README.md shows a command block no test runs: {block}"
        )


def test_make_help_lists_every_target_the_readme_names():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout  # fmt: skip
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    targets = _make_targets()
    assert {"test", "image-debian", "lab", "lab-up", "bench", "fuzz-smoke"} <= targets
    assert targets <= listed, f"README.md names targets `make help` lacks: {targets - listed}"
    # the lab's help names every namespace it builds
    sys.path.insert(0, str(ROOT / "lab"))
    from medlab.net import NAMESPACES

    lab_line = next(line for line in out.splitlines() if line.split()[0] == "lab")
    assert all(ns in lab_line for ns in NAMESPACES), lab_line


# How `make test` runs each `make` target README.md names: the stage that runs it (or the same
# recipe), or why no test can. A target README.md names that is missing here fails the test below.
README_TARGETS = {
    "test": ("", "is `make test`: .ci/run runs it on a clean clone"),
    "help": ("", "run by test_make_help_lists_every_target_the_readme_names"),
    "test-stages": ("", "run by test_make_test_runs_every_make_target_the_readme_names"),
    "setup": ("", "`make test` depends on it: every CI run installs through it"),
    "image-debian": ("test-image-arm64", "build-image.sh arm64 (no xz), booted"),
    "test-image-arm64": ("test-image-arm64", "a stage"),
    "test-image": ("test-image-arm64", "the same recipe (image_build_and_boot) for amd64"),
    "test-image-deploy": ("test-image-arm64", "the same boot tests, on a published image"),
    "bundle": ("test-image-arm64", "make-bundle.sh on the image build's rootfs.ext4, installed in"
               " the VM by the fleet playbook (image/tests/test_update.py)"),
    "image": ("test-image-static", "pi-gen needs the Raspberry Pi archive, unreachable from CI"
              " machines: its stage and parity are tested structurally (test_pigen_stage.py)"),
    "collection": ("test-collection", "builds and installs it, runs its playbooks"),
    "lab": ("test-lab", "lab/tests/test_make_lab.py runs `make lab`"),
    "lab-up": ("test-lab", "lab/tests/test_make_lab.py runs `make lab-up`"),
    "lab-down": ("test-lab", "lab/tests/test_make_lab.py runs `make lab-down`"),
    "test-lab": ("test-lab", "a stage"),
    "bench": ("bench-smoke", "the same harness end to end with tiny sizes"),
    "fuzz": ("fuzz-smoke", "every target, a few seconds each"),
    "fuzz-smoke": ("fuzz-smoke", "a stage"),
    "audit": ("test-audit", "the TLS scan and the checkers; Lynis runs in audit-lynis only"),
    "test-molecule": ("test-molecule", "a stage"),
    "test-proxy": ("test-proxy", "a stage"),
}  # fmt: skip


def test_make_test_runs_every_make_target_the_readme_names():
    out = subprocess.run(["make", "-s", "--no-print-directory", "test-stages"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    stages = out.split()
    assert stages[0] == "lint" and "test-proxy" in stages, stages
    unknown = _make_targets() - set(README_TARGETS)
    assert not unknown, f"README.md names make targets no test is known to run: {unknown}"
    for target, (stage, _why) in README_TARGETS.items():
        assert not stage or stage in stages, f"`make {target}`: stage {stage} is not in make test"


def test_the_lab_up_banner_names_every_namespace():
    sys.path.insert(0, str(ROOT / "lab"))
    from medlab.demo import up_banner
    from medlab.net import NAMESPACES

    banner = up_banner(Path("/tmp/medtls-lab")).splitlines()[0]
    assert banner.startswith(f"medlab: lab is up; namespaces {' '.join(NAMESPACES)};")
    assert len(NAMESPACES) == 6


def test_the_fleet_commands_work_from_the_documented_directory(tmp_path):
    """The fleet block in a copy of the repository's collection content and ansible/ (the block's
    `cp` must not write into the checkout), the playbook run as `--syntax-check`: the copy's
    ansible.cfg resolves medtls.appliance.site to the copy itself, through its link."""
    for part in ("ansible", "roles", "playbooks", "meta", "examples"):
        shutil.copytree(ROOT / part, tmp_path / part, symlinks=True)
    shutil.copy(ROOT / "galaxy.yml", tmp_path)
    lines = _block_of("cd", "fleet")
    script = []
    for line in lines:
        cmd = line.split("#", 1)[0].strip()
        if cmd.startswith("ansible-playbook "):
            cmd += " --syntax-check"
        script.append(cmd)
    env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    for var in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS"):
        env.pop(var, None)
    r = subprocess.run(["bash", "-euc", "\n".join(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, f"{script}\n{r.stdout}\n{r.stderr}"
    link = tmp_path / "ansible/collections/ansible_collections/medtls/appliance"
    assert f"playbook: {link}/playbooks/site.yml" in r.stdout, r.stdout
    assert link.resolve() == tmp_path.resolve()
    assert (tmp_path / "ansible" / "inventories" / "fleet" / "hosts.yml").exists()


def test_medtls_version():
    r = subprocess.run([sys.executable, "-m", "medtls.cli", "--version"], capture_output=True,
                       text=True, timeout=30, check=True)  # fmt: skip
    assert re.fullmatch(r"medtls \d+\.\d+\.\d+\S*\n", r.stdout)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a network namespace with a bridge")
def test_the_medtls_commands_run_as_written(tmp_path):
    """The README's medtls block, line by line, in a fresh network (and mount) namespace with
    the box's bridge and ports, for a transparent-mode my.yaml: check, run, rules, rules apply,
    status, reload; then `rules teardown`, which the block names."""
    pki = PKI(tmp_path / "pki")
    cfg = box_config(pki, "box-a", mode="transparent")
    cfg["listeners"] = {"address": "127.0.0.1", "outbound": 15001, "inbound": 15002}
    cfg["outbound"] = [{"name": "pacs", "address": "198.18.0.20", "port": 104,
                        "tls_port": 2762, "verify": {"cn": "box-b"}}]  # fmt: skip
    cfg["interfaces"] = {"device": "eth0", "lan": "eth1", "bridge": "br0"}
    cfg["device"] = {"ip": "198.18.0.10"}
    synced = tmp_path / "synchronized"  # this host's clock may not be marked synchronised
    synced.touch()
    cfg["clock"] = {"sync_file": str(synced)}
    cfg["control"] = {"socket": control_socket("readme")}
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    shim = tmp_path / "bin" / "medtls"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m medtls.cli "$@"\n')
    shim.chmod(0o755)

    lines = _block_of("medtls", "medtls check")
    commands = [shlex.split(line, comments=True) for line in lines]
    assert [c[1] for c in commands] == ["check", "run", "rules", "rules", "status", "reload"]
    driver = [
        "set -u",
        "mount --make-rprivate / && mount -t sysfs sysfs /sys",  # /sys of this namespace
        "ip link add br0 type bridge",
        "for p in eth0 eth1; do ip link add $p type veth peer name $p-peer;"
        " ip link set $p master br0; ip link set $p up; done",
        "ip link set br0 up; ip link set lo up",
        'step() { rc=0; "$@" || rc=$?; echo "STEP rc=$rc: $*"; }',
    ]
    for c in commands:
        line = shlex.join(c)
        if c[1] == "run":
            driver += [f"{line} 2>run.log & pid=$!",
                       "for _ in $(seq 100); do medtls status --config my.yaml >/dev/null 2>&1"
                       " && break; sleep 0.1; done"]  # fmt: skip
        else:
            driver.append(f"step {line}")
    driver += ["step medtls rules teardown --config my.yaml", "kill $pid; wait $pid"]
    pythonpath = os.pathsep.join([str(ROOT / "proxy"), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PATH=f"{shim.parent}{os.pathsep}{os.environ['PATH']}",
               PYTHONPATH=pythonpath)  # fmt: skip
    r = subprocess.run(["unshare", "--net", "--mount", "bash", "-c", "\n".join(driver)],
                       cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    out = r.stdout + r.stderr + (tmp_path / "run.log").read_text()
    steps = re.findall(r"^STEP rc=(\d+): (.*)$", r.stdout, re.M)
    assert [cmd.split()[1:3] for _, cmd in steps] == [
        ["check", "--config"], ["rules", "--config"], ["rules", "apply"],
        ["status", "--config"], ["reload", "--config"], ["rules", "teardown"],
    ], out  # fmt: skip
    assert all(rc == "0" for rc, _ in steps), out
    assert "table inet medtls" in r.stdout  # `medtls rules` printed the ruleset
    assert "reload" in out and "ready" in out
