"""Fuzz the names reader the daemon runs on a copy of a dicom/hl7 route's first message
(medtls.core.trail.first_names): for any bytes it answers None (incomplete), {} (not a message of
the protocol) or names that are printable ASCII of at most MAX_VALUE characters. Anything else
(an exception, a control character or an unbounded value reaching the log) is a crash."""

import sys

import atheris

with atheris.instrument_imports():
    from medtls.core import trail


def TestOneInput(data: bytes) -> None:
    for protocol in ("dicom", "hl7"):
        names = trail.first_names(protocol, data)
        if names is None:
            continue
        for key, value in names.items():
            if key not in trail.FIELDS:
                raise AssertionError(f"unknown field {key!r}")
            if len(value) > trail.MAX_VALUE or not all(" " <= ch <= "~" for ch in value):
                raise AssertionError(f"{key}={value!r} is not bounded printable ASCII")
        trail.describe(names)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
