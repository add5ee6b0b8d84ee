"""Validate an image SBOM offline: CycloneDX 1.5 JSON against the schema that the pinned
cyclonedx-python-lib ships (setup/requirements-dev.txt), every purl parsable, every bom-ref
unique, medtls present with a version."""

from __future__ import annotations

import json
from pathlib import Path

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL


def problems(path: Path) -> list[str]:
    text = path.read_text()
    errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text, all_errors=True)
    found = [f"{path}: schema: {e.data.message}" for e in (errors or [])]
    if found:
        return found
    sbom = json.loads(text)
    refs = [c["bom-ref"] for c in sbom.get("components", [])]
    if len(refs) != len(set(refs)):
        found.append(f"{path}: duplicate bom-ref")
    for c in sbom.get("components", []):
        try:
            PackageURL.from_string(c["purl"])
        except (KeyError, ValueError) as exc:
            found.append(f"{path}: {c.get('name')}: bad purl {c.get('purl')!r} ({exc})")
    medtls = [c for c in sbom.get("components", []) if c["name"] == "medtls"]
    if len(medtls) != 1 or not medtls[0].get("version"):
        found.append(f"{path}: medtls must be one component with a version, got {medtls}")
    return found
