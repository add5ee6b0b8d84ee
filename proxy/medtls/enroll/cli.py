"""`medtls enroll`: one ACME enrollment/renewal run (medtls-enroll.service, its own process).

Exit status: 0 a certificate was issued or none is due, 1 the run failed (the state file and
the printed line say why), 2 the configuration does not allow a run."""

from __future__ import annotations

import sys
import time

DEFAULT_CONFIG = "/etc/medtls/medtls.yaml"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "enroll",
        help="obtain or renew the identity certificate from the ACME CA when due",
        description="Runs one enrollment: nothing when the certificate is not due yet (unless "
        "--force); otherwise a fresh key, an ACME order answered as the device, the issued "
        "chain checked and installed atomically, and a reload of the running daemon.",
    )
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument("--force", action="store_true", help="renew now even if not due")
    p.add_argument("--json", action="store_true", help="print the resulting state as JSON")
    p.set_defaults(func=cmd_enroll)


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _err(msg: str) -> None:
    print(f"medtls enroll: {msg}", file=sys.stderr)


def cmd_enroll(args) -> int:
    from medtls.config import ConfigError, load_config
    from medtls.core.enrollment import state_json
    from medtls.enroll.run import EnrollConfigError, EnrollFailed, enroll_once

    try:
        cfg = load_config(args.config, check_files=False)
    except ConfigError as e:
        for problem in e.problems:
            _err(f"{args.config}: {problem}")
        return 2
    except OSError as e:
        _err(f"{args.config}: {e.strerror or e}")
        return 2
    if cfg.enrollment is None:
        _err(f"{args.config}: no enrollment section (the identity is issued by hand)")
        return 2
    before = time.time()
    try:
        state = enroll_once(cfg, force=args.force, log=lambda m: None if args.json else print(m))
    except EnrollConfigError as e:
        _err(str(e))
        return 2
    except EnrollFailed as e:  # another run holds the lock
        _err(str(e))
        return 1
    failed = state.last_attempt is not None and state.last_attempt >= before and state.attempts
    if args.json:
        print(state_json(state), end="")
    elif failed:
        _err(f"failed: {state.last_error}; next attempt at {_when(state.next_renewal)}")
    elif state.last_success is not None and state.last_success >= before:
        print(
            f"issued serial {state.serial}, valid until {_when(state.not_after)}, "
            f"renewal from {_when(state.next_renewal)}"
        )
    else:
        print(f"{state.phase}: next renewal at {_when(state.next_renewal)}")
    return 1 if failed else 0
