"""pi-gen's stage rules, as its build.sh (run_stage, run_sub_stage) implements them.

run_stage: in a stage directory, `prerun.sh` runs if executable; `EXPORT_IMAGE` is sourced at
export (and the stage exported unless `SKIP_IMAGES` exists); `SKIP` skips the stage; every
directory is a sub-stage (skipped if it contains `SKIP`), in glob order.
run_sub_stage: for i in {00..99}: `${i}-debconf`, `${i}-packages-nr`, `${i}-packages`,
`${i}-patches/` (quilt), `${i}-run.sh` (only if executable: `[ -x ${i}-run.sh ]`), and
`${i}-run-chroot.sh` (fed to on_chroot on stdin). Anything else in a sub-stage is ignored,
except what its scripts use themselves (by convention `files/`).
"""

from __future__ import annotations

import re
from pathlib import Path

STAGE_FILES = {"prerun.sh", "EXPORT_IMAGE", "EXPORT_NOOBS", "SKIP", "SKIP_IMAGES"}
SUB_STAGE_SUFFIXES = ("debconf", "packages-nr", "packages", "patches", "run.sh", "run-chroot.sh")
SUB_STAGE_EXTRA = {"files", "SKIP"}
USER_NAME = re.compile(r"^[a-z][-a-z0-9_]*$")
_ENTRY = re.compile(r"^(\d\d)-(" + "|".join(re.escape(s) for s in SUB_STAGE_SUFFIXES) + r")$")


def sub_stage_problems(sub: Path) -> list[str]:
    problems = []
    for entry in sorted(sub.iterdir()):
        if entry.name in SUB_STAGE_EXTRA:
            continue
        m = _ENTRY.match(entry.name)
        if not m:
            problems.append(f"{entry}: pi-gen ignores this name")
            continue
        kind = m.group(2)
        if kind == "patches" and not entry.is_dir():
            problems.append(f"{entry}: must be a directory of quilt patches")
        if kind != "patches" and not entry.is_file():
            problems.append(f"{entry}: must be a file")
        if kind == "run.sh" and not (entry.stat().st_mode & 0o111):
            problems.append(f"{entry}: not executable, pi-gen would skip it silently")
    return problems


def stage_problems(stage: Path) -> list[str]:
    problems = []
    for entry in sorted(stage.iterdir()):
        if entry.is_dir():
            problems += sub_stage_problems(entry)
        elif entry.name not in STAGE_FILES:
            problems.append(f"{entry}: pi-gen ignores this file in a stage directory")
    prerun = stage / "prerun.sh"
    if prerun.exists() and not (prerun.stat().st_mode & 0o111):
        problems.append(f"{prerun}: not executable, pi-gen would skip it silently")
    return problems


def rules_in_pigen_source(build_sh: str) -> set[str]:
    """The per-sub-stage names a pi-gen build.sh tests for, e.g. {'debconf', 'run.sh', ...}."""
    return set(re.findall(r'\$\{i\}-([a-z.-]+?)"?\s*\]', build_sh)) | set(
        re.findall(r"\$\{i\}-([a-z.-]+\.sh)\b", build_sh)
    )
