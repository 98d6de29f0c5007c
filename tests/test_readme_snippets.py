"""The README's shell snippets run as a reader pastes them.

A snippet is tested when the line before its ```sh fence is an HTML comment starting
with ``<!-- readme-test``; a ```text block right after it is what it must print (stdout
and stderr, as a terminal shows them), where ``…`` stands for anything within a line.
All marked snippets run in README order in one bash session (later ones use the
variables of earlier ones), from a directory laid out like a checkout (``model_store``,
``.venv/bin/maas``, ``.maas``) against a real ``maas serve`` on a free port. The only
substitution is that port for the README's 8000.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.server import Server

MARK = "<!-- readme-test"
SEPARATOR = "@@readme-snippet@@"


@dataclass
class Snippet:
    line: int
    code: str
    expected: str | None


def marked_snippets(readme: str) -> list[Snippet]:
    lines = readme.splitlines()
    snippets = []
    for i, line in enumerate(lines):
        if not line.startswith(MARK):
            continue
        assert lines[i + 1] == "```sh", f"README line {i + 1}: a marked block must be ```sh"
        end = lines.index("```", i + 2)
        code = "\n".join(lines[i + 2:end])
        expected = None
        if end + 1 < len(lines) and lines[end + 1] == "```text":
            close = lines.index("```", end + 2)
            expected = "\n".join(lines[end + 2:close])
        snippets.append(Snippet(i + 3, code, expected))
    return snippets


def matches(expected: str, got: str) -> bool:
    """Line by line; ``…`` matches anything within a line; surrounding blanks ignored
    (`uniq -c` pads its counts, tables pad their last column)."""
    want, have = expected.strip("\n").splitlines(), got.strip("\n").splitlines()
    return len(want) == len(have) and all(
        re.fullmatch(".*".join(map(re.escape, w.strip().split("…"))), h.strip())
        for w, h in zip(want, have, strict=True))


def test_the_readme_marks_the_walkthrough_for_testing():
    code = "\n".join(s.code for s in marked_snippets((REPO / "README.md").read_text()))
    for command in ("maas tenants create", "maas keys create", "/v1/usage", "/v1/invoices/",
                    "maas invoices show", "maas tenants suspend", "maas tenants resume",
                    "maas keys revoke", "maas usage export", "/predict"):
        assert command in code, f"no marked README snippet runs {command!r}"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A directory where the README's relative paths mean what they mean in a checkout,
    with a fresh .maas, so the developer's own store is never touched."""
    maas = Path(sys.executable).with_name("maas")
    if not maas.exists():
        pytest.skip(f"no maas script beside {sys.executable}")
    for tool in ("bash", "curl", "python3"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    root = tmp_path / "checkout"
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "maas").symlink_to(maas)
    (root / "model_store").symlink_to(REPO / "model_store")
    return root


def test_readme_snippets_run_as_pasted(checkout: Path):
    snippets = marked_snippets((REPO / "README.md").read_text())
    home = checkout / ".maas"  # where a checkout's maas keeps its store by default
    server = Server(home).start()
    try:
        script = "set -euo pipefail\n" + "".join(
            f"echo {SEPARATOR}\n{s.code}\n" for s in snippets)
        script = re.sub(r"\b(localhost|127\.0\.0\.1):8000\b", rf"\1:{server.port}", script)
        env = {**os.environ, "MAAS_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        for var in ("MAAS_TENANTS_TABLE", "MAAS_USAGE_TABLE", "MAAS_ROLLUPS_TABLE"):
            env.pop(var, None)
        done = subprocess.run(["bash", "-c", script], cwd=checkout, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    finally:
        server.stop()
    outputs = done.stdout.split(SEPARATOR + "\n")[1:]
    assert done.returncode == 0, f"README snippet {len(outputs)} failed:\n{done.stdout}"
    assert len(outputs) == len(snippets)
    for snippet, output in zip(snippets, outputs, strict=True):
        if snippet.expected is not None:
            assert matches(snippet.expected, output), (
                f"README line {snippet.line}:\n{snippet.code}\n"
                f"--- README says:\n{snippet.expected}\n--- it printed:\n{output}")
