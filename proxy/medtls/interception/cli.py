"""`medtls rules` and `medtls learn`: render, apply and remove the interception ruleset."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from medtls.config import ConfigError, load_config
from medtls.interception import host, learnio, ruleset, timesync
from medtls.interception.learn import Changed, Learned, Learner, parse_frame
from medtls.interception.spec import InterceptionError, InterceptionSpec, spec_from_config

DEFAULT_CONFIG = "/etc/medtls/medtls.yaml"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rules",
        help="render, apply or remove the nftables/sysctl/routing interception ruleset",
        description="show (default) prints the ruleset as one `nft -f` file; apply installs it "
        "atomically; teardown removes exactly the owned tables, rules and routes; timesyncd "
        "prints (or with --output writes) the timesyncd drop-in for ntp.servers.",
    )
    p.add_argument(
        "action",
        nargs="?",
        default="show",
        choices=("show", "apply", "teardown", "status", "timesyncd"),
    )
    _common(p)
    p.add_argument("--bridge-mac", help="MAC of the bridge (default: read from the host)")
    p.add_argument("--output", type=Path,
                   help=f"timesyncd: write the drop-in here (e.g. {timesync.RUNTIME_DROPIN}); "
                   "removed when ntp.servers is empty")  # fmt: skip
    p.set_defaults(func=cmd_rules)

    lp = subparsers.add_parser(
        "learn",
        help="learn the device's MAC and IP from its first frames, then apply the rules",
        description="Listens on interfaces.device for ARP, DHCP or IPv4 frames of the device. "
        "A device different from the one learned before is logged and refused.",
    )
    _common(lp)
    lp.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
    lp.add_argument("--no-apply", action="store_true", help="only learn and record the device")
    lp.add_argument("--watch", action="store_true", help="keep watching and log device changes")
    lp.set_defaults(func=cmd_learn)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"default {DEFAULT_CONFIG}")
    p.add_argument("--device-ip", help="device IPv4 address (overrides device.ip / learned)")
    p.add_argument("--device-mac", help="device MAC (overrides device.mac / learned)")
    p.add_argument("--state", type=Path, default=learnio.DEFAULT_STATE,
                   help=f"learned-device state file (default {learnio.DEFAULT_STATE})")  # fmt: skip


def _err(prog: str, msg: str) -> None:
    print(f"medtls {prog}: {msg}", file=sys.stderr)


def _load(args, prog: str):
    try:
        return load_config(args.config, check_files=False)
    except ConfigError as e:
        for problem in e.problems:
            _err(prog, f"{args.config}: {problem}")
        return None


def _spec(args, cfg) -> InterceptionSpec:
    ip, mac = args.device_ip, args.device_mac
    if cfg.device.ip is None and ip is None:
        learned = learnio.load_state(args.state)
        if learned is not None:
            ip, mac = learned.ip, mac or learned.mac
    return spec_from_config(cfg, device_ip=ip, device_mac=mac)


def cmd_rules(args) -> int:
    if args.action == "status":
        try:
            text = host.status()
        except InterceptionError as e:
            _err("rules", str(e))
            return 1
        print(text or "medtls rules: not installed", end="" if text else "\n")
        return 0 if text else 1
    cfg = _load(args, "rules")
    if cfg is None:
        if args.action == "teardown":
            return _teardown(None)
        return 2
    if args.action == "timesyncd":
        return _timesyncd(cfg, args.output)
    try:
        spec = _spec(args, cfg)
        if args.action == "show":
            mac = args.bridge_mac or host.bridge_mac(spec.bridge)
            sys.stdout.write(ruleset.render(spec, mac))
            return 0
        if args.action == "teardown":
            return _teardown(spec)
        for line in host.apply(spec):
            print(f"medtls rules: applied {line}")
        return 0
    except InterceptionError as e:
        if args.action == "teardown":
            return _teardown(None)
        _err("rules", str(e))
        return 1


def _timesyncd(cfg, output: Path | None) -> int:
    text = timesync.dropin(cfg)
    if output is None:
        sys.stdout.write(text or "# ntp.servers is empty: no timesyncd drop-in\n")
        return 0
    try:
        if text is None:
            output.unlink(missing_ok=True)
            print(f"medtls rules: no ntp.servers; {output} removed")
            return 0
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(f".{output.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(output)
    except OSError as e:
        _err("rules", f"--output {output}: {e.strerror or e}")
        return 1
    print(f"medtls rules: wrote {output} (NTP={' '.join(cfg.ntp.servers)})")
    return 0


def _teardown(spec: InterceptionSpec | None) -> int:
    try:
        for line in host.teardown(spec):
            print(f"medtls rules: {line}")
    except InterceptionError as e:
        _err("rules", str(e))
        return 1
    return 0


def cmd_learn(args) -> int:
    cfg = _load(args, "learn")
    if cfg is None:
        return 2
    try:
        expected = learnio.load_state(args.state)
        learner = Learner(expected, expected_mac=args.device_mac or cfg.device.mac)
        device_ip = args.device_ip or cfg.device.ip
        learned = None
        for frame in learnio.frames(cfg.interfaces.device, None if args.watch else args.timeout):
            obs = parse_frame(frame)
            event = learner.feed(obs) if obs else None
            if event is None and learned is None and expected is not None and obs and obs.ip:
                # The recorded device is back (same MAC and IP): confirm it once.
                event = Learned(expected, obs.source)
            if isinstance(event, Changed):
                _log(f"{event}; refused (rules keep {learner.identity or 'no device'})")
                if not args.watch:
                    return 3
            elif isinstance(event, Learned):
                ident = event.identity
                if device_ip and ident.ip != device_ip:
                    _log(f"learned {ident} but device.ip is {device_ip}; refused")
                    return 3
                learnio.save_state(args.state, ident, event.source)
                _log(f"learned device {ident} from {event.source}; recorded in {args.state}")
                learned = ident
                if not args.no_apply:
                    host.apply(spec_from_config(cfg, device_ip=ident.ip, device_mac=ident.mac))
                    _log(f"interception rules applied for {ident}")
                if not args.watch:
                    return 0
    except InterceptionError as e:
        _err("learn", str(e))
        return 1
    if learned is None:
        _err("learn", f"no frame with an IPv4 address from the device on {cfg.interfaces.device}")
        return 4
    return 0


def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} medtls learn: {msg}", file=sys.stderr, flush=True)
