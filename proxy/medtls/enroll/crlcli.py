"""`medtls crl-fetch --config C [--json]`: fetch the CRLs of `crl_fetch` once (a timer runs it).

Exit 0: every URL gave an installed or unchanged CRL; 1: some URL failed or was refused (the
installed CRL of that CA stays; the state file says why); 2: configuration error."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "crl-fetch", help="fetch, check and install the CRLs of crl_fetch (exit 0 ok, 1 failed)"
    )
    p.add_argument("--config", "-c", default="/etc/medtls/medtls.yaml", help="configuration file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_crl_fetch)


def cmd_crl_fetch(args) -> int:
    from medtls.config import ConfigError, load_config
    from medtls.core.crlstate import StateError, summary

    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"medtls crl-fetch: configuration error:\n{e}", file=sys.stderr)
        return 2
    if cfg.crl_fetch is None:
        print(f"medtls crl-fetch: {args.config}: no crl_fetch section", file=sys.stderr)
        return 2
    from medtls.enroll.crl import fetch_once

    try:
        state = fetch_once(cfg)
    except (OSError, StateError) as e:
        print(f"medtls crl-fetch: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(state), indent=2, sort_keys=True))
    else:
        print(summary(state))
        for u in state.urls:
            print(f"  {u.url}: {u.result}" + (f" ({u.detail})" if u.detail else ""))
        if state.reload:
            print(f"  daemon: {state.reload}")
    return 0 if state.ok else 1
