"""The whole lab in one object: topology, PKI, rules, peers and medtls, built and torn down."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medlab import services as sv
from medlab.net import Lab
from medlab.pki import make_pki


@dataclass
class LabEnv:
    lab: Lab
    pki: Path
    config: Path
    pacs_store: Path = field(default=Path())
    modality_store: Path = field(default=Path())
    medtls: object = None
    restarts: int = 0

    def start_medtls(self) -> None:
        self.restarts += 1
        self.medtls = sv.start_medtls(self.lab, self.config, log=f"medtls-{self.restarts}.log")

    def stop_medtls(self) -> None:
        if self.medtls is not None:
            self.lab.stop(self.medtls)
            self.medtls = None

    def medtls_log(self) -> str:
        return self.lab.log(f"medtls-{self.restarts}.log")

    def tls(self, name: str) -> tuple[str, str, str]:
        return sv.tls_files(self.pki, name)


def build(prefix: str, workdir: Path) -> LabEnv:
    """Brings everything up; on failure the caller still calls `env.lab.down()`."""
    lab = Lab(prefix, workdir)
    env = LabEnv(lab, workdir / "pki", workdir / "medtls.yaml")
    lab.up()
    make_pki(env.pki)
    sv.write_config(env.pki, env.config)
    sv.apply_rules(lab, env.config)
    env.pacs_store = sv.start_pacs(lab, env.pki)
    env.modality_store = sv.start_modality(lab)
    env.start_medtls()
    return env
