"""The Ansible content as the collection medtls.appliance (galaxy.yml at the repository root).

Built with scripts/build-collection.sh (ansible-galaxy collection build), installed with
ansible-galaxy into a temporary path, and its playbook run from there, outside the checkout, so
nothing resolves through the checkout's link (ansible/collections/.../appliance). Also: the
version is medtls's, every fully qualified name the content uses belongs to a collection that
requirements.yml lists (or to ansible.builtin / medtls.appliance) and exists in it, and the
installed collections satisfy requirements.yml without Galaxy (unreachable here)."""

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", ANSIBLE_NOCOLOR="1")
ENV.pop("ANSIBLE_CONFIG", None)
ENV.pop("ANSIBLE_COLLECTIONS_PATH", None)

FQCN = re.compile(r"^([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)$")
# Jinja: lookup('ns.coll.name'...), query(...), `| ns.coll.filter`, `is ns.coll.test`.
JINJA_FQCN = re.compile(
    r"(?:lookup|query|q)\(\s*['\"]([a-z0-9_]+\.[a-z0-9_]+\.[a-z0-9_]+)['\"]"
    r"|(?:\||\bis)\s*([a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*)\b"
)
NAME_KEYS = {"role", "ansible_connection", "import_playbook", "ansible.builtin.import_playbook"}
ROLE_CALLS = {"ansible.builtin.include_role", "ansible.builtin.import_role"}


def _galaxy() -> dict:
    return yaml.safe_load((ROOT / "galaxy.yml").read_text())


def _requirements() -> dict[str, SpecifierSet]:
    reqs = yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]
    return {r["name"]: SpecifierSet(r.get("version", "*").replace("*", "")) for r in reqs}


def _content_files() -> list[Path]:
    """The YAML of roles, playbooks, inventories and Molecule (not through the checkout link)."""
    files = [
        *ROOT.glob("roles/*/*/*.yml"),
        *ROOT.glob("playbooks/*.yml"),
        ROOT / "ansible/site.yml",
        *ROOT.glob("ansible/inventories/**/*.yml"),
        *ROOT.glob("molecule/**/*.yml"),
        ROOT / ".config/molecule/config.yml",
    ]
    return [f for f in files if "collections" not in f.relative_to(ROOT).parts]


def _names_in(node, found: set[str]) -> None:
    if isinstance(node, dict):
        is_task = "name" in node  # a task (ansible-lint makes every task named); not a sysctl map
        for key, value in node.items():
            if is_task and isinstance(key, str) and FQCN.match(key):
                found.add(key)
            if key in NAME_KEYS and isinstance(value, str) and FQCN.match(value):
                found.add(value)
            if key in ROLE_CALLS and isinstance(value, dict) and FQCN.match(str(value.get("name"))):
                found.add(value["name"])
            if key == "roles" and isinstance(value, list):
                found.update(r for r in value if isinstance(r, str))
            if key == "callbacks_enabled" and isinstance(value, str):
                found.update(c.strip() for c in value.split(","))
            _names_in(value, found)
    elif isinstance(node, list):
        for item in node:
            _names_in(item, found)
    elif isinstance(node, str):
        for m in JINJA_FQCN.finditer(node):
            found.add(m.group(1) or m.group(2))


def _used_names() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    for path in _content_files():
        names: set[str] = set()
        for doc in yaml.safe_load_all(path.read_text()):
            _names_in(doc, names)
        for name in names:
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return used


def _installed() -> dict[str, tuple[Path, str]]:
    """Collection -> (directory, version) as ansible-galaxy sees them (first one found wins)."""
    out = subprocess.run(
        [BIN / "ansible-galaxy", "collection", "list", "--format", "json"],
        env=ENV,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    found: dict[str, tuple[Path, str]] = {}
    for base, collections in json.loads(out).items():
        for name, info in collections.items():
            ns, coll = name.split(".")
            found.setdefault(name, (Path(base) / ns / coll, info["version"]))
    return found


def _exists_in(collection_dir: Path, name: str) -> bool:
    if (collection_dir / "roles" / name).is_dir() or (
        collection_dir / "playbooks" / f"{name}.yml"
    ).is_file():
        return True
    if any((collection_dir / "plugins").glob(f"*/{name}.py")):
        return True
    runtime = collection_dir / "meta" / "runtime.yml"
    routing = (
        (yaml.safe_load(runtime.read_text()) or {}).get("plugin_routing", {})
        if runtime.exists()
        else {}
    )
    return any(name in plugins for plugins in routing.values())


def test_the_collection_version_is_medtls_version():
    init = (ROOT / "proxy/medtls/__init__.py").read_text()
    version = re.search(r'^__version__ = "([^"]+)"$', init, re.M).group(1)
    assert _galaxy()["version"] == version, "galaxy.yml version must be medtls.__version__"
    assert (_galaxy()["namespace"], _galaxy()["name"]) == ("medtls", "appliance")


def _role_references(node, found: list[str]) -> None:
    """Role names in `roles:` lists and include_role/import_role tasks, plus imported playbooks."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "roles" and isinstance(value, list):
                found += [r if isinstance(r, str) else r.get("role", r.get("name")) for r in value]
            elif key in ROLE_CALLS | {"include_role", "import_role"} and isinstance(value, dict):
                found.append(value.get("name"))
            elif key in ("ansible.builtin.import_playbook", "import_playbook"):
                found.append(value)
            _role_references(value, found)
    elif isinstance(node, list):
        for item in node:
            _role_references(item, found)


def test_every_role_and_playbook_reference_is_fully_qualified():
    """No bare role names (no roles_path fallback exists): medtls.appliance.<role>."""
    seen = 0
    for path in _content_files():
        for doc in yaml.safe_load_all(path.read_text()):
            found: list[str] = []
            _role_references(doc, found)
            seen += len(found)
            for name in found:
                assert FQCN.match(str(name)), (
                    f"{path.relative_to(ROOT)}: {name!r} is not fully qualified"
                )
    assert seen >= 10


def test_every_fqcn_belongs_to_a_listed_collection_and_exists_there():
    used = _used_names()
    assert "community.crypto.openssl_csr" in used  # the scan sees the roles' modules
    assert "community.general.chroot" in used  # ... the inventories' connections
    assert "ansible.posix.profile_tasks" in used  # ... Molecule's callbacks
    assert "medtls.appliance.hardening" in used  # ... and the playbook's roles
    listed = _requirements()
    installed = _installed()
    own = ROOT
    problems = []
    for name, where in sorted(used.items()):
        ns, coll, plugin = name.split(".")
        collection = f"{ns}.{coll}"
        if collection == "medtls.appliance":
            if not _exists_in(own, plugin):
                problems.append(f"{name} ({', '.join(sorted(where))}): no such role or playbook")
            continue
        if collection == "ansible.builtin":
            continue  # ansible-lint (fqcn, syntax-check) resolves ansible.builtin
        if collection not in listed:
            problems.append(
                f"{name} ({', '.join(sorted(where))}): {collection} is not in requirements.yml"
            )
        elif collection not in installed or not _exists_in(installed[collection][0], plugin):
            problems.append(
                f"{name} ({', '.join(sorted(where))}): not found in the installed {collection}"
            )
    assert not problems, "\n".join(problems)
    # galaxy.yml's dependencies (what the roles need) are a subset of requirements.yml
    assert set(_galaxy()["dependencies"]) <= set(listed)


def test_requirements_are_satisfied_by_the_installed_collections():
    installed = _installed()
    for name, spec in _requirements().items():
        assert name in installed, f"requirements.yml: {name} is not installed"
        assert Version(installed[name][1]) in spec, (
            f"{name} {installed[name][1]} does not satisfy {spec}"
        )


@pytest.fixture(scope="module")
def installed_collection(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("collection")
    built = subprocess.run(
        [ROOT / "scripts/build-collection.sh", tmp / "dist"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    tarball = Path(built.stdout.strip())
    with tarfile.open(tarball) as tar:
        top = {Path(n).parts[0] for n in tar.getnames()}
    assert {"roles", "playbooks", "meta", "MANIFEST.json"} <= top
    assert not top & {"proxy", "image", "lab", "molecule", "ansible", "build", "docs", ".venv"}, top
    installed = tmp / "installed"
    r = subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", str(tarball), "-p", str(installed)],
        env=ENV,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (installed / "ansible_collections/medtls/appliance/roles/proxy/tasks/main.yml").is_file()
    return installed


def _play(collections: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """ansible-playbook outside the checkout, with only the installed collection on the path."""
    (tmp_path / "ansible.cfg").write_text(f"[defaults]\ncollections_path = {collections}\n")
    (tmp_path / "hosts.yml").write_text(
        "all:\n  children:\n    medtls:\n      hosts:\n        box:\n"
        "          ansible_connection: local\n"
        f"          ansible_python_interpreter: {sys.executable}\n"
    )
    env = dict(ENV, ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg"))
    return subprocess.run(
        [BIN / "ansible-playbook", "-i", "hosts.yml", *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_installed_collection_runs_its_playbook(installed_collection, tmp_path):
    """medtls.appliance.site from the installed copy, image variables (the ones the image build
    uses): only the `always` tasks run (--tags none), i.e. each role's argument validation
    against its installed meta/argument_specs.yml, on the controller; nothing touches the host."""
    image_vars = ROOT / "ansible/inventories/image/group_vars/medtls.yml"
    args = ["medtls.appliance.site", "-e", f"@{image_vars}", "--tags", "none"]
    r = _play(installed_collection, tmp_path, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    for role in ("hardening", "certificates", "proxy", "interception"):
        assert re.search(rf"TASK \[medtls\.appliance\.{role} : Validating arguments", r.stdout), (
            r.stdout
        )
    assert re.search(r"box\s+: ok=4 .*failed=0", r.stdout), r.stdout

    # A configuration that is not a mapping: the installed proxy role's argument spec refuses it.
    bad = _play(
        installed_collection,
        tmp_path,
        "medtls.appliance.site",
        "--tags",
        "none",
        "-e",
        f"@{image_vars}",
        "-e",
        '{"medtls_proxy_config": ["not", "a", "mapping"]}',
    )
    assert bad.returncode != 0
    assert "argument 'medtls_proxy_config' is of type list" in bad.stdout, bad.stdout


def test_the_playbook_path_is_the_installed_one(installed_collection, tmp_path):
    r = _play(installed_collection, tmp_path, "medtls.appliance.site", "--syntax-check")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (
        f"playbook: {installed_collection}/ansible_collections/medtls/appliance/playbooks/site.yml"
        in r.stdout
    )
