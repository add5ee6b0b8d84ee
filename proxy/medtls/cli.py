"""`medtls` command line: subcommands come from modules exposing `register(subparsers)`.

Each `register` adds its subparser and sets `func=callable(args) -> int` as default.
Only the module of the command being run is imported, and `medtls run` in its plain forms is
parsed without argparse: every module a serving process imports stays resident in it
(docs/performance.md, items 41-42).
"""

from __future__ import annotations

import importlib
import sys
from types import SimpleNamespace

from medtls import __version__

# Subcommand -> the module that registers it (tests/test_cli.py checks this against `register`).
SUBCOMMANDS = {
    "run": "medtls.commands",
    "check": "medtls.commands",
    "rules": "medtls.interception.cli",
    "learn": "medtls.interception.cli",
    "status": "medtls.ops.cli",
    "reload": "medtls.ops.cli",
    "enroll": "medtls.enroll.cli",
    "crl-fetch": "medtls.enroll.crlcli",
    "console": "medtls.ops.cli",
    "led": "medtls.ops.cli",
    "probe": "medtls.probe",
    "update": "medtls.update.cli",
}
RUN_OPTIONS = {"--config": "config", "-c": "config", "--log-level": "log_level"}
LOG_LEVELS = ("debug", "info", "warning", "error")


def _load(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        # Only skip when the optional module itself (or its package) is absent, never hide a
        # missing dependency inside an existing module.
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            return None
        raise


def _command(argv: list[str]) -> str | None:
    # Only a leading command narrows the parser: `medtls -h run` still lists every command.
    return argv[0] if argv and not argv[0].startswith("-") else None


def build_parser(command: str | None = None):
    """The parser with every subcommand, or only the modules `command` needs (if known)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="medtls", description="Mutual-TLS proxy for legacy medical devices."
    )
    parser.add_argument("--version", action="version", version=f"medtls {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = [SUBCOMMANDS[command]] if command in SUBCOMMANDS else SUBCOMMANDS.values()
    for name in dict.fromkeys(wanted):
        mod = _load(name)
        if mod is not None and hasattr(mod, "register"):
            mod.register(sub)
    return parser


def fast_run_args(argv: list[str]) -> SimpleNamespace | None:
    """`run --config FILE [--log-level L]` (also `-c FILE`, `--opt=value`) without argparse.

    argparse and what it imports (gettext, locale, shutil with bz2/lzma) cost ~1 MiB in each
    serving process. Anything else (help, abbreviations, repeats, errors) returns None and goes
    through argparse, so what is accepted here parses exactly as argparse would parse it.
    """
    if not argv or argv[0] != "run":
        return None
    values: dict[str, str] = {}
    rest = argv[1:]
    i = 0
    while i < len(rest):
        opt, eq, val = rest[i].partition("=")
        if eq and opt.startswith("--"):
            i += 1
        elif i + 1 < len(rest):
            opt, val = rest[i], rest[i + 1]
            i += 2
        else:
            return None
        dest = RUN_OPTIONS.get(opt)
        if dest is None or dest in values or val.startswith("-"):
            return None
        values[dest] = val
    if "config" not in values or values.get("log_level", "info") not in LOG_LEVELS:
        return None
    from medtls.commands import cmd_run

    return SimpleNamespace(
        command="run", config=values["config"], log_level=values.get("log_level"), func=cmd_run
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = fast_run_args(argv)
    if args is None:
        parser = build_parser(_command(argv))
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help(sys.stderr)
            return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
