"""The relay pairs under test. Each renders its config from bench/templates and starts two
processes: a client-side relay (plain in, TLS out) and a server-side relay (TLS in, plain out)."""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from . import procs
from .certs import CLIENT_NAME, SERVER_NAME, Pki

TEMPLATES = Path(__file__).parent / "templates"
CIPHERS = {"aes256gcm": "TLS_AES_256_GCM_SHA384", "chacha20": "TLS_CHACHA20_POLY1305_SHA256"}


@dataclass
class Setup:
    workdir: Path
    pki: Pki
    cipher: str  # key of CIPHERS

    @property
    def suite(self) -> str:
        return CIPHERS[self.cipher]


@dataclass
class Side:
    name: str
    procs: list[subprocess.Popen] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for p in self.procs:
            procs.stop(p)


def render(template: str, dest: Path, **values) -> Path:
    text = Template((TEMPLATES / template).read_text()).substitute(
        {k: str(v) for k, v in values.items()}
    )
    dest.write_text(text)
    return dest


class Contender:
    name = ""
    executable = ""

    def missing(self) -> str | None:
        """Why this contender cannot run here, or None."""
        if self.executable and not shutil.which(self.executable):
            return f"{self.executable} not found on PATH"
        return None

    def start_client(self, s: Setup, listen: int, upstream: int, tag: str = "client") -> Side:
        raise NotImplementedError

    def start_server(self, s: Setup, listen: int, upstream: int) -> Side:
        raise NotImplementedError

    def _run(self, side: Side, s: Setup, cmd, port: int, env=None) -> Side:
        log = s.workdir / f"{self.name}-{side.name}.log"
        proc = procs.spawn(cmd, log, env)
        side.procs.append(proc)
        try:
            procs.wait_port(port, proc, log)
        except Exception:
            side.stop()
            raise
        return side

    def version(self) -> str:
        return ""


class Stunnel(Contender):
    name = "stunnel"
    executable = "stunnel4"

    def _start(self, s: Setup, tag: str, template: str, listen: int, upstream: int, **kw) -> Side:
        cfg = render(
            template,
            s.workdir / f"stunnel-{tag}.conf",
            listen=f"127.0.0.1:{listen}",
            upstream=f"127.0.0.1:{upstream}",
            log=s.workdir / f"stunnel-{tag}.out",
            ca=s.pki.ca,
            ciphersuite=s.suite,
            server_name=SERVER_NAME,
            client_name=CLIENT_NAME,
            **kw,
        )
        return self._run(Side(tag), s, [self.executable, str(cfg)], listen)

    def start_client(self, s, listen, upstream, tag="client"):
        pki = s.pki
        return self._start(
            s, tag, "stunnel-client.conf", listen, upstream, cert=pki.client_crt, key=pki.client_key
        )

    def start_server(self, s, listen, upstream):
        pki = s.pki
        return self._start(
            s, "server", "stunnel-server.conf", listen, upstream, cert=pki.server_crt,
            key=pki.server_key,
        )  # fmt: skip

    def version(self):
        out = subprocess.run([self.executable, "-version"], capture_output=True, text=True)
        return next((ln for ln in out.stderr.splitlines() if ln.startswith("stunnel")), "")


class Haproxy(Contender):
    name = "haproxy"
    executable = "haproxy"

    def _start(self, s: Setup, tag: str, template: str, listen: int, upstream: int, pem) -> Side:
        cfg = render(
            template,
            s.workdir / f"haproxy-{tag}.cfg",
            listen=f"127.0.0.1:{listen}",
            upstream=f"127.0.0.1:{upstream}",
            ca=s.pki.ca,
            pem=pem,
            ciphersuite=s.suite,
            server_name=SERVER_NAME,
        )
        # -db: stay in the foreground as one process (no master), so its PID is the relay's
        return self._run(Side(tag), s, [self.executable, "-db", "-q", "-f", str(cfg)], listen)

    def start_client(self, s, listen, upstream, tag="client"):
        return self._start(s, tag, "haproxy-client.cfg", listen, upstream, s.pki.client_pem)

    def start_server(self, s, listen, upstream):
        return self._start(s, "server", "haproxy-server.cfg", listen, upstream, s.pki.server_pem)

    def version(self):
        out = subprocess.run([self.executable, "-v"], capture_output=True, text=True)
        return out.stdout.splitlines()[0] if out.stdout else ""


class Medtls(Contender):
    """The medtls proxy in explicit mode: one instance per side, each from its own YAML file."""

    name = "medtls"
    executable = "medtls"

    def missing(self):
        exe = shutil.which(self.executable) or shutil.which(
            self.executable, path=str(Path(sys.executable).parent)
        )
        if not exe:
            return "medtls not installed (pip install -e proxy)"
        self.executable = exe
        return None

    def _env(self, s: Setup) -> dict:
        hooks = str(Path(__file__).parent / "hooks")
        path = os.pathsep.join(p for p in (hooks, os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONPATH": path, "MEDTLS_BENCH_TLS13_SUITES": s.suite}

    def _start(self, s: Setup, tag: str, template: str, listen: int, **values) -> Side:
        cfg = render(
            template,
            s.workdir / f"medtls-{tag}.yaml",
            listen=f"127.0.0.1:{listen}",
            ca=s.pki.ca,
            workers=os.environ.get("MEDTLS_BENCH_WORKERS", "1"),
            buffer_size=os.environ.get("MEDTLS_BENCH_BUFFER_SIZE", _default_buffer()),
            audit_socket=audit_socket(s.workdir),
            **values,
        )
        cmd = [self.executable, "run", "--config", str(cfg)]
        return self._run(Side(tag), s, cmd, listen, env=self._env(s))

    def start_client(self, s, listen, upstream, tag="client"):
        return self._start(
            s, tag, "medtls-client.yaml", listen, upstream=upstream, cert=s.pki.client_crt,
            key=s.pki.client_key, server_name=SERVER_NAME,
        )  # fmt: skip

    def start_server(self, s, listen, upstream):
        return self._start(
            s, "server", "medtls-server.yaml", listen, upstream=upstream,
            cert=s.pki.server_crt, key=s.pki.server_key,
        )  # fmt: skip

    def version(self):
        out = subprocess.run([self.executable, "--version"], capture_output=True, text=True)
        return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else ""


def audit_socket(workdir: Path) -> Path:
    """Where bench/auditsink.py receives medtls' audit messages (journald's /dev/log stand-in)."""
    return workdir / "audit.sock"


class MedtlsBaseline(Medtls):
    """A second medtls, imported from MEDTLS_BENCH_BASELINE (e.g. an export of an older
    `proxy/`), so a change is measured against its baseline in the same run."""

    name = "medtls-base"

    def missing(self):
        base = os.environ.get("MEDTLS_BENCH_BASELINE", "")
        if not base or not (Path(base) / "medtls" / "__init__.py").is_file():
            return "MEDTLS_BENCH_BASELINE does not point at a directory holding medtls/"
        return super().missing()

    def _env(self, s: Setup) -> dict:
        env = super()._env(s)
        hooks, _, rest = env["PYTHONPATH"].partition(os.pathsep)
        base = os.environ["MEDTLS_BENCH_BASELINE"]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (hooks, base, rest) if p)
        return env


def _default_buffer() -> str:
    """medtls' shipped limits.buffer_size, so the harness measures what users get."""
    try:
        from medtls.config import Limits
    except ImportError:
        return "262144"
    return str(Limits().buffer_size)


ALL = {c.name: c for c in (Stunnel(), Haproxy(), Medtls(), MedtlsBaseline())}
