#!/usr/bin/env python3
"""Write a CycloneDX 1.5 JSON SBOM of an image root filesystem.

Usage: sbom.py --rootfs DIR --name IMAGE_NAME --output FILE [--medtls-version V]

Components: every package dpkg lists as installed in DIR/var/lib/dpkg/status (what
`dpkg-query --admindir=DIR/var/lib/dpkg -W` shows), plus medtls itself with its version: from
its Debian package when installed as one, otherwise from the package tree the proxy role put into
the image (`__version__`), or --medtls-version. An image without medtls is an error: the SBOM
would describe something that is not the appliance.

Runs on the build host with its python3 (standard library only), never inside the image.
SOURCE_DATE_EPOCH, when set, fixes the timestamp (reproducible builds).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

SPEC_VERSION = "1.5"
# Where the proxy role installs the package tree (roles/proxy medtls_proxy_install_dir/lib) and
# where a Debian package of medtls puts it.
MEDTLS_TREES = ("opt/medtls/lib/medtls", "usr/lib/python3/dist-packages/medtls")
_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)


class SbomError(Exception):
    pass


def parse_dpkg_status(text: str) -> list[dict[str, str]]:
    """The paragraphs of a dpkg status file as {field: value} (continuation lines joined)."""
    packages: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    last = None
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if fields:
                packages.append(fields)
            fields, last = {}, None
        elif line[0] in " \t":
            if last is not None:
                fields[last] += "\n" + line.strip()
        elif ":" in line:
            last, value = line.split(":", 1)
            fields[last] = value.strip()
    return packages


def installed(paragraphs: list[dict[str, str]]) -> list[dict[str, str]]:
    """Packages whose status is 'installed' (not config-files, half-installed, ...)."""
    found = []
    for p in paragraphs:
        status = p.get("Status", "").split()
        if status and status[-1] == "installed" and p.get("Package") and p.get("Version"):
            found.append(p)
    return found


def os_release(rootfs: Path) -> dict[str, str]:
    for rel in ("etc/os-release", "usr/lib/os-release"):
        path = rootfs / rel
        if path.is_file():
            values = {}
            for line in path.read_text(errors="replace").splitlines():
                if "=" in line and not line.startswith("#"):
                    key, value = line.split("=", 1)
                    values[key] = value.strip().strip("\"'")
            return values
    return {}


def purl_deb(distro_id: str, distro: str, name: str, version: str, arch: str) -> str:
    qualifiers = [f"arch={quote(arch, safe='')}"] if arch else []
    if distro:
        qualifiers.append(f"distro={quote(distro, safe='')}")
    tail = "?" + "&".join(qualifiers) if qualifiers else ""
    path = f"{quote(distro_id, safe='')}/{quote(name, safe='')}@{quote(version, safe='')}"
    return f"pkg:deb/{path}{tail}"


def deb_component(p: dict[str, str], distro_id: str, distro: str) -> dict:
    name, version, arch = p["Package"], p["Version"], p.get("Architecture", "")
    purl = purl_deb(distro_id, distro, name, version, arch)
    component = {
        "type": "application" if name == "medtls" else "library",
        "bom-ref": purl,
        "name": name,
        "version": version,
        "purl": purl,
    }
    if p.get("Maintainer"):
        component["supplier"] = {"name": p["Maintainer"]}
    properties = [{"name": "deb:architecture", "value": arch}] if arch else []
    if p.get("Source"):
        source = p["Source"].split()
        properties.append({"name": "deb:source", "value": source[0]})
        if len(source) > 1:
            properties.append({"name": "deb:source-version", "value": source[1].strip("()")})
    if properties:
        component["properties"] = properties
    return component


def medtls_tree_version(rootfs: Path) -> str | None:
    for tree in MEDTLS_TREES:
        init = rootfs / tree / "__init__.py"
        if init.is_file():
            m = _VERSION.search(init.read_text(errors="replace"))
            if m:
                return m.group(1)
    return None


def build_sbom(rootfs: Path, name: str, medtls_version: str | None, now: datetime.datetime) -> dict:
    status = rootfs / "var/lib/dpkg/status"
    try:
        text = status.read_text(errors="replace")
    except OSError as exc:
        raise SbomError(f"{status}: cannot read the dpkg database ({exc.strerror or exc})") from exc
    packages = installed(parse_dpkg_status(text))
    if not packages:
        raise SbomError(f"{status}: no installed package")
    release = os_release(rootfs)
    distro_id = release.get("ID", "debian") or "debian"
    distro = "-".join(v for v in (distro_id, release.get("VERSION_CODENAME", "")) if v)
    components = [deb_component(p, distro_id, distro) for p in packages]
    debs = {p["Package"]: p["Version"] for p in packages}
    if "medtls" in debs:
        version = debs["medtls"]
    else:
        version = medtls_version or medtls_tree_version(rootfs)
        if not version:
            raise SbomError(
                f"{rootfs}: medtls is not installed (no medtls package, no "
                f"{' or '.join(MEDTLS_TREES)}); give --medtls-version or build the appliance first"
            )
        purl = f"pkg:generic/medtls@{quote(version, safe='')}"
        components.append(
            {
                "type": "application",
                "bom-ref": purl,
                "name": "medtls",
                "version": version,
                "purl": purl,
            }
        )
    if medtls_version and medtls_version != version:
        raise SbomError(f"--medtls-version {medtls_version} but the image holds medtls {version}")
    components.sort(key=lambda c: (c["name"], c["bom-ref"]))
    image_ref = f"image:{name}@{version}"
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {
                "components": [
                    {
                        "type": "application",
                        "name": "medtls image/scripts/sbom.py",
                        "version": version,
                    }
                ]
            },
            "component": {
                "type": "operating-system",
                "bom-ref": image_ref,
                "name": name,
                "version": version,
                "description": f"medtls appliance image ({release.get('PRETTY_NAME', distro)})",
            },
        },
        "components": components,
        "dependencies": [{"ref": image_ref, "dependsOn": [c["bom-ref"] for c in components]}],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rootfs", required=True, type=Path)
    parser.add_argument("--name", required=True, help="image name, e.g. medtls-debian-trixie-arm64")
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--medtls-version")
    args = parser.parse_args(argv)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    now = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
        if epoch
        else datetime.datetime.now(datetime.UTC)
    )
    try:
        sbom = build_sbom(args.rootfs, args.name, args.medtls_version, now)
    except SbomError as exc:
        print(f"sbom.py: {exc}", file=sys.stderr)
        return 2
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(json.dumps(sbom, indent=1, sort_keys=False) + "\n")
    tmp.replace(args.output)
    print(
        f"sbom.py: {args.output}: {len(sbom['components'])} components,"
        f" medtls {sbom['metadata']['component']['version']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
