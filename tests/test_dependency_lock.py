"""The pinned dependency sets (``requirements-*.lock``) agree with ``pyproject.toml``: a
dependency added to pyproject without `make lock` would install on CI from the lock as
something else, or not at all."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>[^\s;\\]+)"
                 r"\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?$")
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def pins(lock: str) -> dict[str, str]:
    """Package -> version pinned for this interpreter (markers evaluated here)."""
    out: dict[str, str] = {}
    for line in (REPO / lock).read_text().splitlines():
        m = PIN.match(line)
        if m and (m["marker"] is None or Marker(m["marker"]).evaluate()):
            out[canonicalize_name(m["name"])] = m["version"]
    return out


def requirements(extra: str | None) -> list[Requirement]:
    """The base dependencies plus an extra, following ``finmaas[...]`` self-references."""
    todo, seen, out = [extra] if extra else [], set(), []
    out += [Requirement(r) for r in PROJECT["dependencies"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for raw in PROJECT["optional-dependencies"][name]:
            req = Requirement(raw)
            if canonicalize_name(req.name) == PROJECT["name"]:
                todo += sorted(req.extras)
            else:
                out.append(req)
    return out


@pytest.mark.parametrize(("lock", "extra"), [("requirements-dev.lock", "dev"),
                                             ("requirements-serve.lock", "local"),
                                             ("requirements-lambda.lock", None)])
def test_lock_pins_every_declared_dependency_within_its_range(lock, extra):
    pinned = pins(lock)
    for req in requirements(extra):
        if req.marker is not None and not req.marker.evaluate():
            continue
        version = pinned.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is not in {lock}: run `make lock`"
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock} pins {req.name}=={version}, outside {req.specifier}: run `make lock`")


LOCKS = ["requirements-dev.lock", "requirements-serve.lock", "requirements-lambda.lock"]


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_carries_hashes(lock):
    text = (REPO / lock).read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    for block in blocks:
        if PIN.match(block.splitlines()[0]):
            assert "--hash=sha256:" in block, block.splitlines()[0]


@pytest.mark.parametrize("lock", LOCKS[1:])
def test_what_runs_is_what_the_suite_tested(lock):
    # The local server and the Lambda bundle get the dev set's versions, no others
    dev, pinned = pins("requirements-dev.lock"), pins(lock)
    assert {n: v for n, v in pinned.items() if dev.get(n) != v} == {}


def test_one_version_for_every_python_we_run():
    # 3.11 here, 3.12 on Lambda: a pin forked by Python version would ship untested code
    runtime = (REPO / "requirements-lambda.lock").read_text()
    assert "python_full_version" not in runtime and "python_version" not in runtime
