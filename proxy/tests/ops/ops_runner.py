"""Runs the real medtls Daemon with ops attached, exactly as `medtls run` is asked to
(/work/ops-requests.md section 3). Used by the tests only while `medtls run` and
medtls.config do not wire medtls.ops yet."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from medtls.commands import setup_logging
from medtls.config import ConfigError, load_config
from medtls.daemon import Daemon
from medtls.ops.config import OPS_SECTIONS, parse_ops_sections
from medtls.ops.runtime import attach


def main(path: str) -> int:
    raw = yaml.safe_load(Path(path).read_text())
    ops_cfg, problems = parse_ops_sections(raw)
    if problems:
        for p, m in problems:
            print(f"{p}: {m}", file=sys.stderr)
        return 1
    core = Path(path).with_suffix(".core.yaml")
    core.write_text(yaml.safe_dump({k: v for k, v in raw.items() if k not in OPS_SECTIONS}))
    try:
        config = load_config(core)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    setup_logging(config.logging.level)
    daemon = Daemon(config)
    ops = attach(daemon, config, ops_cfg)
    try:
        daemon.start()
        daemon.serve_forever()
    finally:
        ops.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
