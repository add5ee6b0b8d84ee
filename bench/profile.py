"""Profile one contender under one workload: syscalls per MB (strace -c), Python hot spots
(py-spy, Python contenders only) and native hot spots (perf, cpu-clock).

Usage: python -m bench.profile [--contender medtls] [--workload bulk|conn|rtt]
                               [--tools none,strace,pyspy,perf] [--out build/bench/profile]
Each tool gets its own workload run, since tracing slows the relay down.
"""

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import load, procs
from .certs import make_pki
from .contenders import ALL, Setup
from .run import raise_fd_limit, start_audit_sink, start_chain, start_sink

TOOLS = ("none", "strace", "pyspy", "perf")


def workload(kind: str, port: int, size: int, seconds: float) -> tuple[float, float]:
    """Run the workload; (MB moved, seconds)."""
    if kind == "bulk":
        secs = load.bulk(port, size)
        return size / 1e6, secs
    if kind == "conn":
        done, secs = load.conn_rate(port, seconds, 8)
        return done * 64 / 1e6, secs
    if kind == "rtt":
        samples = load.rtt(port, int(seconds * 5000), warmup=0)
        return len(samples) * 1024 / 1e6, sum(samples) / 1e9
    raise ValueError(kind)


def _attach(cmd: list[str], log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    time.sleep(1.0)  # tracers need a moment to attach to every thread
    return proc


def _detach(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def strace_summary(path: Path, mb: float) -> str:
    rows = []
    total = 0
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls = int(parts[3])
            rows.append((calls, parts[-1]))
        elif parts and parts[-1] == "total":
            total = int(parts[3])
    rows.sort(reverse=True)
    out = [f"syscalls: {total} total, {total / mb:.0f} per MB"]
    out += [f"  {name:<16} {calls:>10} ({calls / mb:.1f}/MB)" for calls, name in rows[:8]]
    return "\n".join(out)


def pyspy_summary(paths: list[Path], top: int = 15) -> str:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    self_c: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [re.sub(r" \(.*?/", " (", f) for f in stack.split(";")]
            self_c[frames[-1]] += n
            for f in set(frames):
                incl[f] += n
    if not total:
        return "py-spy: no samples"
    out = [f"py-spy: {total} samples; self time:"]
    out += [f"  {n / total:6.1%}  {f}" for f, n in self_c.most_common(top)]
    out.append("inclusive:")
    out += [f"  {n / total:6.1%}  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


def perf_summary(data: Path, top: int = 20) -> str:
    out = []
    for sort in ("dso", "dso,sym"):
        rep = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none",
             "--sort", sort, "--percent-limit", "1"],
            capture_output=True, text=True,
        )  # fmt: skip
        rows = [ln for ln in rep.stdout.splitlines() if re.match(r"\s+\d+\.\d+%", ln)]
        out.append(f"perf (cpu-clock, self, by {sort}):")
        out += rows[:top]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--contender", default="medtls", choices=sorted(ALL))
    ap.add_argument("--workload", default="bulk", choices=("bulk", "conn", "rtt"))
    ap.add_argument("--bytes", type=int, default=512 << 20)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--cipher", default="aes256gcm")
    ap.add_argument("--tools", default="none,strace,pyspy,perf")
    ap.add_argument("--out", type=Path, default=Path("build/bench/profile"))
    args = ap.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    for t in tools:
        if t not in TOOLS:
            ap.error(f"--tools: unknown tool {t!r} (known: {', '.join(TOOLS)})")
    contender = ALL[args.contender]
    why = contender.missing()
    if why:
        print(f"profile: {args.contender}: {why}", file=sys.stderr)
        return 2
    raise_fd_limit()
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="medtls-profile-"))
    setup = Setup(workdir, make_pki(workdir / "pki", "ecdsa"), args.cipher)
    sink, sink_port = start_sink(workdir)
    audit_sink = start_audit_sink(workdir)
    chain = None
    report = [f"{args.contender} {args.workload} {args.cipher}"]
    try:
        chain = start_chain(contender, setup, sink_port)
        pids = procs.tree(chain.pids)
        tag = f"{args.contender}-{args.workload}"
        for tool in tools:
            if tool == "pyspy" and args.contender != "medtls":
                continue
            tracer = []
            files: list[Path] = []
            if tool == "strace":
                files = [args.out / f"{tag}.strace"]
                cmd = ["strace", "-c", "-f", "-q", "-o", str(files[0])]
                for pid in pids:
                    cmd += ["-p", str(pid)]
                tracer = [_attach(cmd, args.out / f"{tag}.strace.log")]
            elif tool == "pyspy":
                for pid in chain.pids:
                    f = args.out / f"{tag}-{pid}.pyspy"
                    files.append(f)
                    cmd = [shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                           "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                           "--output", str(f), "--subprocesses", "--nonblocking"]  # fmt: skip
                    tracer.append(_attach(cmd, args.out / f"{tag}-{pid}.pyspy.log"))
            elif tool == "perf":
                files = [args.out / f"{tag}.perf.data"]
                cmd = ["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-o", str(files[0]),
                       "-p", ",".join(map(str, pids))]  # fmt: skip
                tracer = [_attach(cmd, args.out / f"{tag}.perf.log")]
            cpu0 = procs.cpu_seconds(chain.pids)
            mb, secs = workload(args.workload, chain.entry, args.bytes, args.seconds)
            cpu = procs.cpu_seconds(chain.pids) - cpu0
            for t in tracer:
                _detach(t)
            line = f"[{tool}] {mb:.0f} MB in {secs:.2f} s = {mb / secs:.0f} MB/s"
            line += f", relay CPU {cpu:.2f} s"
            if args.workload == "conn":
                line += f", {mb * 1e6 / 64 / secs:.0f} conn/s"
            report.append(line)
            if tool == "strace":
                report.append(strace_summary(files[0], mb))
            elif tool == "pyspy":
                report.append(pyspy_summary(files))
            elif tool == "perf":
                report.append(perf_summary(files[0]))
            print(report[-1] if tool == "none" else "\n".join(report[-2:]), flush=True)
    finally:
        if chain:
            chain.stop()
        procs.stop(sink)
        procs.stop(audit_sink)
        shutil.rmtree(workdir, ignore_errors=True)
    (args.out / f"{args.contender}-{args.workload}.txt").write_text("\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
