"""`medtls` command line: subcommands come from modules exposing `register(subparsers)`.

Each `register` adds its subparser and sets `func=callable(args) -> int` as default.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from medtls import __version__

SUBCOMMAND_MODULES = (
    "medtls.commands",
    "medtls.interception.cli",
    "medtls.ops.cli",
)


def _load(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        # Only skip when the optional module itself (or its package) is absent, never hide a
        # missing dependency inside an existing module.
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtls", description="Mutual-TLS proxy for legacy medical devices."
    )
    parser.add_argument("--version", action="version", version=f"medtls {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        mod = _load(name)
        if mod is not None and hasattr(mod, "register"):
            mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
