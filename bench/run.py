"""medtls benchmark: the same loopback chain for every contender, medians of several runs.

    plain client -> client-side relay -> TLS 1.3 (mutual auth) -> server-side relay -> plain sink

Usage: python -m bench.run [--mode full|smoke] [--runs N] [--contenders a,b] [--scenarios x,y]
                           [--out FILE.json] [--markdown FILE.md]
"""

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import checks, load, procs, report
from .certs import make_pki
from .contenders import ALL, Contender, Setup, audit_socket


@dataclass(frozen=True)
class Sizes:
    bulk_bytes: int
    parallel_conns: int
    parallel_bytes_each: int
    conn_seconds: float
    conn_concurrency: int
    rtt_count: int
    idle_conns: int
    runs: int


MODES = {
    "full": Sizes(1 << 30, 8, 128 << 20, 5.0, 16, 5000, 1000, 3),
    "smoke": Sizes(32 << 20, 8, 4 << 20, 1.0, 8, 200, 50, 1),
}

GROUPS = ("bulk", "parallel", "conn", "rtt", "idle", "resume")
# groups measured on the configuration with session resumption on (every other: full handshakes)
RESUME_GROUPS = frozenset({"resume"})
# groups that measure connection setup: where session resumption is probed (bench/checks.py)
HANDSHAKE_GROUPS = frozenset({"conn", "resume"})
# (name, key kind, cipher, metric groups). Handshake cost depends on the key kind, bulk cost on
# the cipher; the full cross product would triple the run time without adding information.
SCENARIOS = {
    "ecdsa-aes256gcm": ("ecdsa", "aes256gcm", GROUPS),
    "rsa-aes256gcm": ("rsa", "aes256gcm", ("conn",)),
    "ecdsa-chacha20": ("ecdsa", "chacha20", ("bulk", "parallel")),
}
CONTENDERS = ("direct", "stunnel", "haproxy", "medtls", "medtls-base")
# medtls-base (a second medtls from MEDTLS_BENCH_BASELINE) runs by default only when that is set.
DEFAULT_CONTENDERS = CONTENDERS if os.environ.get("MEDTLS_BENCH_BASELINE") else CONTENDERS[:-1]


class Direct(Contender):
    name = "direct"


@dataclass
class Chain:
    entry: int
    tls_port: int | None
    sides: list
    resume: bool = False

    @property
    def pids(self) -> list[int]:
        return [pid for side in self.sides for pid in side.pids]

    def stop(self) -> None:
        for side in reversed(self.sides):
            side.stop()


def start_chain(contender: Contender, setup: Setup, sink_port: int) -> Chain:
    if contender.name == "direct":
        return Chain(sink_port, None, [], setup.resume)
    tls_port, entry = procs.free_port(), procs.free_port()
    server = contender.start_server(setup, tls_port, sink_port)
    try:
        client = contender.start_client(setup, entry, tls_port)
    except Exception:
        server.stop()
        raise
    chain = Chain(entry, tls_port, [server, client], setup.resume)
    try:
        load.echo_check(entry)
    except Exception:
        chain.stop()
        raise
    return chain


def measure(group: str, chain: Chain, sizes: Sizes) -> dict[str, float]:
    """One metric group on a running chain."""
    out: dict[str, float] = {}
    pids = chain.pids
    if group == "bulk":
        cpu0 = procs.cpu_seconds(pids)
        secs = load.bulk(chain.entry, sizes.bulk_bytes)
        cpu = procs.cpu_seconds(pids) - cpu0
        out["bulk_MBps"] = sizes.bulk_bytes / secs / 1e6
        if pids:
            out["cpu_s_per_GB"] = cpu / (sizes.bulk_bytes / 1e9)
    if group == "parallel":
        total = sizes.parallel_conns * sizes.parallel_bytes_each
        secs = load.parallel(chain.entry, sizes.parallel_conns, sizes.parallel_bytes_each)
        out["parallel_MBps"] = total / secs / 1e6
    if group == "conn" or (group == "resume" and pids):
        # the same workload; "resume" runs on the configuration with session resumption on
        # (direct has no TLS: its conn figure is the ceiling for both)
        suffix = "_resumed" if group == "resume" else ""
        cpu0 = procs.cpu_seconds(pids)
        done, secs = load.conn_rate(chain.entry, sizes.conn_seconds, sizes.conn_concurrency)
        cpu = procs.cpu_seconds(pids) - cpu0
        out["conn_per_s" + suffix] = done / secs
        if pids:
            out["cpu_ms_per_conn" + suffix] = cpu * 1e3 / done
    if group == "rtt":
        cpu0 = procs.cpu_seconds(pids)
        samples = sorted(load.rtt(chain.entry, sizes.rtt_count))
        cpu = procs.cpu_seconds(pids) - cpu0
        out["rtt_p50_us"] = samples[len(samples) // 2] / 1e3
        out["rtt_p99_us"] = samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1e3
        if pids:
            out["cpu_us_per_rtt"] = cpu * 1e6 / len(samples)
    if group == "idle" and pids:
        rss0 = procs.rss_bytes(pids)
        socks = load.open_idle(chain.entry, sizes.idle_conns)
        try:
            time.sleep(0.5)
            load.echo_check(chain.entry)
            out["rss_idle_MiB"] = procs.rss_bytes(pids) / 2**20
            out["rss_per_conn_KiB"] = (procs.rss_bytes(pids) - rss0) / sizes.idle_conns / 1024
        finally:
            for s in socks:
                s.close()
    return out


def run_contender(c, setup, sink_port, groups, sizes, r, scen, result, broken) -> dict:
    """Every metric group of one run of one contender. A group that failed once (error, stall)
    is not retried in later runs; the chain is restarted after a failure so the next group
    starts clean, and when the next group needs the other configuration (RESUME_GROUPS).
    Errors go to result["errors"]."""
    values: dict[str, float] = {}
    todo = [g for g in groups if g not in broken and "start" not in broken]
    chain = None
    try:
        while todo:
            resume = todo[0] in RESUME_GROUPS
            if chain is not None and chain.resume != resume:
                chain.stop()
                chain = None
            if chain is None:
                variant = dataclasses.replace(setup, resume=resume)
                # a failure of the resumption configuration costs only its own groups
                lost = set(RESUME_GROUPS) if resume else {"start"}
                what = "resumption configuration " if resume else ""
                try:
                    try:
                        chain = start_chain(c, variant, sink_port)
                    except Exception:
                        # a free port can be taken by another job between probe and bind
                        time.sleep(0.5)
                        chain = start_chain(c, variant, sink_port)
                except Exception as exc:
                    _give_up(result, broken, lost, todo, f"{scen}/{c.name}: {what}start: {exc}")
                    continue
                checked = result["checks"].setdefault(scen, {})
                if r == 0 and chain.tls_port and not _checked(checked, c.name, resume):
                    try:
                        probe = bool(HANDSHAKE_GROUPS & set(groups))
                        spare = procs.free_port()
                        found = checks.run_all(c, variant, chain.tls_port, spare, probe)
                    except Exception as exc:
                        chain.stop()
                        chain = None
                        why = exc if isinstance(exc, checks.CheckFailed) else repr(exc)
                        text = f"{scen}/{c.name}: {what}security check: {why}"
                        _give_up(result, broken, lost, todo, text)
                        continue
                    _record(checked, c.name, resume, found)
            group = todo.pop(0)
            try:
                values.update(measure(group, chain, sizes))
            except Exception as exc:
                broken.add(group)
                _error(result, f"{scen}/{c.name}: {group}: {type(exc).__name__}: {exc}")
                chain.stop()
                chain = None
    finally:
        if chain is not None:
            chain.stop()
    return values


def _checked(checked: dict, name: str, resume: bool) -> bool:
    return ("resume_config" if resume else "protocol") in checked.get(name, {})


def _record(checked: dict, name: str, resume: bool, found: dict) -> None:
    """The full-handshake configuration's results at the top of the contender's entry (as
    before resumption was measured), the resumption configuration's under resume_config."""
    entry = checked.setdefault(name, {})
    if resume:
        entry["resume_config"] = found
    else:
        entry.update(found)


def _give_up(result: dict, broken: set, lost: set, todo: list, text: str) -> None:
    """Mark `lost` broken ("start": every group) and drop those groups from `todo`."""
    broken.update(lost)
    todo[:] = [g for g in todo if "start" not in broken and g not in broken]
    _error(result, text)


def _error(result: dict, text: str) -> None:
    result["errors"].append(text)
    print(f"bench: ERROR {text}", file=sys.stderr, flush=True)


def machine() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def start_sink(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = procs.free_port()
    log = workdir / "sink.log"
    proc = procs.spawn([sys.executable, "-m", "bench.sink", str(port), "2"], log)
    procs.wait_port(port, proc, log)
    return proc, port


def start_audit_sink(workdir: Path) -> subprocess.Popen:
    """The local syslog receiver medtls' audit trail writes to (bench/auditsink.py)."""
    path = audit_socket(workdir)
    log = workdir / "auditsink.log"
    proc = procs.spawn([sys.executable, "-m", "bench.auditsink", str(path)], log)
    deadline = time.monotonic() + 15
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"audit sink did not start: {procs.tail(log)}")
        time.sleep(0.02)
    return proc


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=sorted(MODES), default="full")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--contenders", default=",".join(DEFAULT_CONTENDERS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--groups", default=",".join(GROUPS), help="metric groups to run")
    ap.add_argument("--require", default="", help="contenders that must run (comma list)")
    ap.add_argument("--out", type=Path, default=Path("build/bench/latest.json"))
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args(argv)

    sizes = MODES[args.mode]
    if args.runs:
        sizes = Sizes(**{**sizes.__dict__, "runs": args.runs})
    names = [n for n in args.contenders.split(",") if n]
    scenarios = [n for n in args.scenarios.split(",") if n]
    for n in names:
        if n not in CONTENDERS:
            ap.error(f"--contenders: unknown contender {n!r} (known: {', '.join(CONTENDERS)})")
    for n in scenarios:
        if n not in SCENARIOS:
            ap.error(f"--scenarios: unknown scenario {n!r} (known: {', '.join(SCENARIOS)})")
    required = {n for n in args.require.split(",") if n}
    wanted_groups = {g for g in args.groups.split(",") if g}
    for g in wanted_groups - set(GROUPS):
        ap.error(f"--groups: unknown group {g!r} (known: {', '.join(GROUPS)})")

    contenders: list[Contender] = []
    skipped: dict[str, str] = {}
    for n in names:
        c = Direct() if n == "direct" else ALL[n]
        why = c.missing()
        if why:
            skipped[n] = why
            print(f"bench: skipping {n}: {why}", file=sys.stderr)
        else:
            contenders.append(c)
    missing_required = required & set(skipped)
    if missing_required:
        print(
            f"bench: required contender(s) unavailable: {sorted(missing_required)}", file=sys.stderr
        )
        return 2

    raise_fd_limit()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="medtls-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": args.mode,
        "sizes": sizes.__dict__,
        "machine": machine(),
        "versions": {c.name: c.version() for c in contenders if c.name != "direct"},
        "skipped": skipped,
        "errors": [],
        "checks": {},
        "scenarios": {},
    }
    t_start = time.monotonic()
    sink, sink_port = start_sink(workdir)
    audit_sink = start_audit_sink(workdir)
    try:
        for scen in scenarios:
            kind, cipher, groups = SCENARIOS[scen]
            groups = tuple(g for g in groups if g in wanted_groups)
            if not groups:
                continue
            setup = Setup(workdir, make_pki(workdir / "pki", kind), cipher)
            runs: dict[str, dict[str, list[float]]] = {c.name: {} for c in contenders}
            broken: dict[str, set[str]] = {c.name: set() for c in contenders}
            for r in range(sizes.runs):
                # rotate the order so slow drifts of the shared machine hit everyone alike
                order = contenders[r % len(contenders) :] + contenders[: r % len(contenders)]
                for c in order:
                    values = run_contender(c, setup, sink_port, groups, sizes, r, scen, result,
                                           broken[c.name])  # fmt: skip
                    for k, v in values.items():
                        runs[c.name].setdefault(k, []).append(v)
                    if values:
                        print(f"bench: {scen} run {r + 1}/{sizes.runs} {c.name}: "
                              + " ".join(f"{k}={v:.1f}" for k, v in values.items()),
                              file=sys.stderr, flush=True)  # fmt: skip
            result["scenarios"][scen] = report.summarize(runs, kind, cipher)
    finally:
        procs.stop(sink)
        procs.stop(audit_sink)
    result["duration_s"] = round(time.monotonic() - t_start, 1)
    result["machine"]["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]

    text = report.markdown(result)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    print(f"bench: wrote {args.out} in {result['duration_s']} s", file=sys.stderr)
    bad = report.validate(result, list(result["scenarios"]), [c.name for c in contenders])
    for line in bad:
        print(f"bench: FAILED {line}", file=sys.stderr)
    if bad:
        print(f"bench: configs and logs kept in {workdir}", file=sys.stderr)
    elif not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
