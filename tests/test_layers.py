"""The import layers of pyproject.toml hold, and they catch the edges they forbid.

CI runs `lint-imports` itself; these tests prove each contract can fail, on a copy of the
source tree with one forbidden import added.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False,
    )


def test_the_source_tree_keeps_every_import_contract() -> None:
    done = lint_imports(ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # the edge issue 12 found: `mumu up` reading the stage list from the CLI
        ("up/launch.py", "from mumu.cli.stage import register", "mumu.up is not allowed to import mumu.cli"),
        # a low layer reaching the whole Settings
        ("crypto/keyring.py", "from mumu.settings import Settings", "mumu.crypto is not allowed to import mumu.settings"),
        ("broker/connect.py", "from mumu.db import urls", "mumu.broker is not allowed to import mumu.db"),
        ("stages/reason/prompt.py", "from mumu.stages.transcribe import settings", "mumu.stages.reason is not allowed to import mumu.stages.transcribe"),
        ("gateway/hub.py", "from mumu.stages.ingest import decode", "mumu.gateway is not allowed to import mumu.stages.ingest"),
        ("contracts/ids.py", "from mumu import logs", "mumu.contracts is not allowed to import mumu.logs"),
        ("runtime/errors.py", "import faststream", "mumu.runtime is not allowed to import faststream"),
        ("stages/reason/settings.py", "from mumu.contracts import ids", "mumu.stages.reason.settings is not allowed to import mumu.contracts"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "mumu", src / "mumu", ignore=shutil.ignore_patterns("__pycache__"))
    path = src / "mumu" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    done = lint_imports(src)
    assert done.returncode == 1, done.stdout
    assert broken in done.stdout


def test_no_module_is_over_300_lines() -> None:
    """Small modules named for their role (STYLE.md): none grows past 300 lines."""
    long = {str(path.relative_to(ROOT)): n for path in (ROOT / "src").rglob("*.py")
            if (n := len(path.read_text().splitlines())) > 300}
    assert long == {}


def nats_msg_imports(package: Path) -> list[str]:
    """Modules under ``package`` that import nats-py's ``Msg`` (``nats.aio.msg``, or
    ``nats.Msg``). import-linter cannot forbid a module inside an external package, so
    this reads the imports itself."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.startswith("nats.aio.msg") or n in ("nats.Msg", "nats.aio.Msg")
                   for n in names):
                found.append(str(path.relative_to(package)))
    return found


def test_no_stage_handles_a_nats_msg(tmp_path: Path) -> None:
    """Stage code gets ``Inbound`` (stage messages) and ``(subject, data)`` (control
    notices, ``runtime.control``) from the runtime, never nats-py's message (issue 12)."""
    assert nats_msg_imports(ROOT / "src" / "mumu" / "stages") == []
    for line in ("from nats.aio.msg import Msg", "import nats.aio.msg", "from nats import Msg"):
        (tmp_path / "handler.py").write_text(f"{line}\n")
        assert nats_msg_imports(tmp_path) == ["handler.py"], line
