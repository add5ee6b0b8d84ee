"""Every package a role installs is preinstalled in the offline image (no build needed).

The image-context play runs no apt under emulation: build-rootfs.sh installs image/packages/*.list
up front, and a role package missing there fails the offline image build late (in its playbook
step). This test fails as soon as a role's package list and the image's lists disagree.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LISTS = REPO / "image/packages"
ROLES = REPO / "roles"
ARCHES = ("amd64", "arm64")
INSTALL_MODULES = {"ansible.builtin.apt", "ansible.builtin.package", "apt", "package"}
# Packages of features that are off by default stay out of the image; a site that turns one on for
# an image build adds them to its own image/packages/<site>.list (docs/image.md). The role's own
# image-context check names them if they are missing.
OPT_IN = {
    "hardening: medtls_hardening_remote_syslog_packages": "remote syslog (hardening role)",
}


def read_list(path: Path) -> set[str]:
    """The package names of one list, parsed as build-rootfs.sh does (first word, '#' comments)."""
    names = set()
    for line in path.read_text().splitlines():
        words = line.split()
        if words and not words[0].startswith("#"):
            names.add(words[0])
    return names


def image_packages(arch: str) -> set[str]:
    names: set[str] = set()
    for path in sorted(LISTS.glob("*.list")):
        if path.name.startswith("arch-") and path.name != f"arch-{arch}.list":
            continue
        names |= read_list(path)
    return names


def role_package_vars() -> dict[str, list]:
    found = {}
    for defaults in sorted(ROLES.glob("*/defaults/main.yml")):
        data = yaml.safe_load(defaults.read_text()) or {}
        for key, value in data.items():
            if key.startswith("medtls_") and key.endswith("_packages"):
                found[f"{defaults.parents[1].name}: {key}"] = value
    return found


def install_tasks():
    """(task file, task) for every apt/package task of every role, blocks included."""

    def walk(tasks):
        for task in tasks or []:
            if not isinstance(task, dict):
                continue
            for inner in ("block", "rescue", "always"):
                yield from walk(task.get(inner))
            if INSTALL_MODULES & task.keys():
                yield task

    for path in sorted(ROLES.glob("*/tasks/*.yml")):
        for task in walk(yaml.safe_load(path.read_text())):
            yield path, task


def test_roles_declare_their_packages():
    assert role_package_vars(), "no roles/*/defaults medtls_*_packages found"


@pytest.mark.parametrize("arch", ARCHES)
def test_every_role_package_is_in_the_image_lists(arch):
    available = image_packages(arch)
    missing = {}
    for where, packages in role_package_vars().items():
        assert isinstance(packages, list), f"{where} must be a list of package names"
        if where in OPT_IN:
            continue
        templated = [p for p in packages if not isinstance(p, str) or "{{" in p]
        assert not templated, f"{where}: {templated} must be plain package names to be checkable"
        lost = sorted(set(packages) - available)
        if lost:
            missing[where] = lost
    assert not missing, (
        f"not preinstalled in the {arch} image (add them to image/packages/<area>.list): {missing}"
    )


def test_roles_install_only_their_declared_packages():
    """A literal package list in an apt task would bypass the check above: install tasks name
    their packages through medtls_<role>_*packages variables (lists in defaults/, or facts
    composed of them)."""
    for path, task in install_tasks():
        role = path.parents[1].name
        module = next(iter(INSTALL_MODULES & task.keys()))
        args = task[module] if isinstance(task[module], dict) else {}
        if "deb" in args and not args.get("name", args.get("pkg")):
            continue  # the medtls .deb built by `make deb`: a file, not an archive package
        name = str(args.get("name", args.get("pkg", "")))
        assert re.search(rf"\{{\{{.*\bmedtls_{role}_\w*packages\b", name), (
            f"{path.relative_to(REPO)}: task '{task.get('name')}' installs {name!r}; "
            f"name the packages through medtls_{role}_*packages so the image lists can be checked"
        )


def test_opt_in_package_lists_exist_and_are_documented():
    found = role_package_vars()
    image_doc = (REPO / "docs/image.md").read_text()
    for where, feature in OPT_IN.items():
        assert where in found, f"{where} ({feature}) is no longer a role variable: update OPT_IN"
        assert where.split(": ")[1] in image_doc, f"docs/image.md does not explain {where}"


def test_the_check_sees_a_missing_package(tmp_path):
    """The parser must not silently accept everything (a guard for the guard)."""
    lst = tmp_path / "x.list"
    lst.write_text("# comment\nfoo  # trailing\n\n  bar\n")
    assert read_list(lst) == {"foo", "bar"}
    assert "surely-not-a-package" not in image_packages("arm64")
