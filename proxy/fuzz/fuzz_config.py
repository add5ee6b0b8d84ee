"""Fuzz the configuration loader: bytes -> YAML text -> Config or ConfigError, nothing else.

The loader promises (medtls.config.parse_text) that every YAML or value error is a ConfigError
listing problems; any other exception, or a ConfigError without problems, is a crash here."""

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from medtls.config import ConfigError, parse_text

WHERE = Path("/fuzz/medtls.yaml")


def TestOneInput(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        parse_text(text, WHERE, check_files=False)
    except ConfigError as e:
        if not e.problems:
            raise AssertionError("ConfigError without problems") from None


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
