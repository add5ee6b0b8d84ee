"""The relay pairs under test. Each renders its config from bench/templates and starts two
processes: a client-side relay (plain in, TLS out) and a server-side relay (TLS in, plain out).

Every contender has two configurations: full handshakes only (no tickets issued, no session
offered: what every metric group but `resume` measures) and session resumption on both sides
(Setup.resume, the `resume` group). bench/checks.py proves which one is in effect."""

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import ClassVar

from . import procs
from .certs import CLIENT_NAME, SERVER_NAME, Pki

TEMPLATES = Path(__file__).parent / "templates"
CIPHERS = {"aes256gcm": "TLS_AES_256_GCM_SHA384", "chacha20": "TLS_CHACHA20_POLY1305_SHA256"}


@dataclass
class Setup:
    workdir: Path
    pki: Pki
    cipher: str  # key of CIPHERS
    resume: bool = False  # session resumption on both sides

    @property
    def suite(self) -> str:
        return CIPHERS[self.cipher]

    @property
    def suffix(self) -> str:
        """Keeps the two configurations' files apart in the workdir."""
        return "-resume" if self.resume else ""


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

    def client_config(self, s: Setup, listen: int, upstream: int, tag: str = "client") -> Path:
        raise NotImplementedError

    def server_config(self, s: Setup, listen: int, upstream: int) -> Path:
        raise NotImplementedError

    def command(self, cfg: Path) -> list[str]:
        raise NotImplementedError

    def _env(self, s: Setup) -> dict | None:
        return None

    def start_client(self, s: Setup, listen: int, upstream: int, tag: str = "client") -> Side:
        cfg = self.client_config(s, listen, upstream, tag)
        return self._run(Side(tag), s, self.command(cfg), listen, self._env(s))

    def start_server(self, s: Setup, listen: int, upstream: int) -> Side:
        cfg = self.server_config(s, listen, upstream)
        return self._run(Side("server"), s, self.command(cfg), listen, self._env(s))

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
    # the section's session cache (client: the last session, offered again) and tickets
    SESSIONS: ClassVar = {
        False: "sessionResume = no\noptions = NO_TICKET",
        True: "sessionResume = yes",
    }

    def _render(self, s: Setup, tag: str, template: str, listen: int, upstream: int, **kw) -> Path:
        return render(
            template,
            s.workdir / f"stunnel-{tag}{s.suffix}.conf",
            listen=f"127.0.0.1:{listen}",
            upstream=f"127.0.0.1:{upstream}",
            log=s.workdir / f"stunnel-{tag}{s.suffix}.out",
            session_options=self.SESSIONS[s.resume],
            ca=s.pki.ca,
            ciphersuite=s.suite,
            server_name=SERVER_NAME,
            client_name=CLIENT_NAME,
            **kw,
        )

    def command(self, cfg):
        return [self.executable, str(cfg)]

    def client_config(self, s, listen, upstream, tag="client"):
        pki = s.pki
        return self._render(
            s, tag, "stunnel-client.conf", listen, upstream, cert=pki.client_crt, key=pki.client_key
        )

    def server_config(self, s, listen, upstream):
        pki = s.pki
        return self._render(
            s, "server", "stunnel-server.conf", listen, upstream, cert=pki.server_crt,
            key=pki.server_key,
        )  # fmt: skip

    def version(self):
        out = subprocess.run([self.executable, "-version"], capture_output=True, text=True)
        return next((ln for ln in out.stderr.splitlines() if ln.startswith("stunnel")), "")


class Haproxy(Contender):
    name = "haproxy"
    executable = "haproxy"

    def _render(self, s: Setup, tag: str, template: str, listen: int, upstream: int, pem) -> Path:
        return render(
            template,
            s.workdir / f"haproxy-{tag}{s.suffix}.cfg",
            listen=f"127.0.0.1:{listen}",
            upstream=f"127.0.0.1:{upstream}",
            ca=s.pki.ca,
            pem=pem,
            ciphersuite=s.suite,
            server_name=SERVER_NAME,
            **haproxy_sessions(s.resume),
        )

    def command(self, cfg):
        # -db: stay in the foreground as one process (no master), so its PID is the relay's
        return [self.executable, "-db", "-q", "-f", str(cfg)]

    def client_config(self, s, listen, upstream, tag="client"):
        return self._render(s, tag, "haproxy-client.cfg", listen, upstream, s.pki.client_pem)

    def server_config(self, s, listen, upstream):
        return self._render(s, "server", "haproxy-server.cfg", listen, upstream, s.pki.server_pem)

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

    def _render(self, s: Setup, tag: str, template: str, listen: int, **values) -> Path:
        cfg = render(
            template,
            s.workdir / f"medtls-{tag}{s.suffix}.yaml",
            listen=f"127.0.0.1:{listen}",
            ca=s.pki.ca,
            workers=os.environ.get("MEDTLS_BENCH_WORKERS", "1"),
            buffer_size=os.environ.get("MEDTLS_BENCH_BUFFER_SIZE", _default_buffer()),
            audit_socket=audit_socket(s.workdir),
            control_socket=s.workdir / f"control-{tag}{s.suffix}.sock",
            session_lifetime=SESSION_LIFETIME if s.resume else 0,
            **values,
        )
        if not s.resume and not self._knows_session_lifetime():
            # a medtls from before resumption existed: no tickets is all it can do
            cfg.write_text(drop_key(cfg.read_text(), "session_lifetime"))
        return cfg

    def command(self, cfg):
        return [self.executable, "run", "--config", str(cfg)]

    def client_config(self, s, listen, upstream, tag="client"):
        return self._render(
            s, tag, "medtls-client.yaml", listen, upstream=upstream, cert=s.pki.client_crt,
            key=s.pki.client_key, server_name=SERVER_NAME,
        )  # fmt: skip

    def server_config(self, s, listen, upstream):
        return self._render(
            s, "server", "medtls-server.yaml", listen, upstream=upstream,
            cert=s.pki.server_crt, key=s.pki.server_key,
        )  # fmt: skip

    def version(self):
        out = subprocess.run([self.executable, "--version"], capture_output=True, text=True)
        return (out.stdout or out.stderr).strip().splitlines()[0] if out.returncode == 0 else ""

    def _config_source(self) -> Path | None:
        spec = importlib.util.find_spec("medtls.config")
        return Path(spec.origin) if spec and spec.origin else None

    def _knows_session_lifetime(self) -> bool:
        src = self._config_source()
        try:
            return src is not None and "session_lifetime" in src.read_text()
        except OSError:
            return False


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

    def _config_source(self):
        return Path(os.environ["MEDTLS_BENCH_BASELINE"]) / "medtls" / "config.py"


SESSION_LIFETIME = 3600  # medtls' shipped default


def haproxy_sessions(resume: bool) -> dict[str, str]:
    """Template values: tickets on the bind side, session reuse on the server line. Off also
    means no session-ID cache: without tickets OpenSSL's TLS 1.3 falls back to stateful
    session IDs, which haproxy's shared cache would resume."""
    if resume:
        return {"session_options": "", "server_reuse": "", "session_global": ""}
    return {
        "session_options": " no-tls-tickets",
        "server_reuse": " no-ssl-reuse",
        "session_global": "    tune.ssl.cachesize 0",
    }


def drop_key(yaml_text: str, key: str) -> str:
    """The YAML text without the lines setting `key` (any indentation)."""
    return "".join(
        ln for ln in yaml_text.splitlines(keepends=True) if not ln.lstrip().startswith(f"{key}:")
    )


def _default_buffer() -> str:
    """medtls' shipped limits.buffer_size, so the harness measures what users get."""
    try:
        from medtls.config import Limits
    except ImportError:
        return "262144"
    return str(Limits().buffer_size)


ALL = {c.name: c for c in (Stunnel(), Haproxy(), Medtls(), MedtlsBaseline())}
