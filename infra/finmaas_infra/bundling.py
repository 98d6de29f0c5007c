"""Docker-free Lambda bundling: ``pip install --platform ... --only-binary=:all:`` of the
project's runtime dependencies, as pinned with hashes in ``requirements-lambda.lock``, for
the function's architecture and CPython 3.12, plus the function code, with everything
Lambda never imports pruned away.

Wheels are installed once per (requirements, platform) into a cache under
``.maas/bundle-cache`` and copied from there, and the asset hash is computed from the
sources, so a repeated ``cdk synth`` neither downloads nor re-bundles.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aws_cdk as cdk
import jsii

REPO = Path(__file__).resolve().parents[2]
FUNCTIONS = REPO / "functions"
PYTHON_VERSION = "3.12"
PLATFORMS = {
    "arm64": ["manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64"],
    "x86_64": ["manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64"],
}
# Never imported on the request path (measured: the handler imports and predicts without).
PRUNE = [
    "bin",
    "onnxruntime/transformers",
    "onnxruntime/quantization",
    "onnxruntime/tools",
    "onnxruntime/datasets",
    "onnxruntime/capi/libonnxruntime.so.*",  # the C API library; Python uses pybind_state
    "numpy/f2py",
    "numpy/_pyinstaller",
    "numpy/doc",
    "numpy/typing/tests",
]
PRUNE_NAMES = {"tests", "__pycache__"}
PRUNE_SUFFIXES = (".pyi", ".pyc")  # pip's .pyc are for the building interpreter
CODE_EXCLUDES = {"__pycache__"}


LAMBDA_LOCK = REPO / "requirements-lambda.lock"


def runtime_lock() -> str:
    """pyproject's base dependencies (what runs in Lambda, nothing else) resolved, pinned
    and hashed by ``make lock``: the bundle installs exactly the versions the suite
    tested, whatever is newest on the day of a deploy."""
    return LAMBDA_LOCK.read_text()


def source_hash(architecture: str, python_version: str = PYTHON_VERSION) -> str:
    h = hashlib.sha256(f"{architecture}|{python_version}|".encode())
    h.update(runtime_lock().encode())
    for path in sorted(FUNCTIONS.rglob("*")):
        if path.is_file() and not CODE_EXCLUDES & set(path.parts):
            h.update(str(path.relative_to(FUNCTIONS)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _prune(root: Path) -> None:
    for pattern in PRUNE:
        for path in root.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and path.name in PRUNE_NAMES:
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and path.suffix in PRUNE_SUFFIXES:
            path.unlink()


def bytecode_compiler(python_version: str) -> str | None:
    """An interpreter of the target version, to ship bytecode Lambda can use.

    Lambda's code directory is read-only, so without .pyc files every cold start compiles
    every imported module again. Returns None (no bytecode) when no such interpreter is on
    PATH; the bundle still works, only its cold start is slower.
    """
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [os.environ.get("MAAS_BUNDLE_PYTHON"), shutil.which(f"python{python_version}"),
                  *map(str, sorted(pyenv.glob(f"versions/{python_version}*/bin/python"
                                              f"{python_version}"), reverse=True))]
    for exe in filter(None, candidates):
        probe = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == python_version:
            return exe
    return None


def compile_bytecode(root: Path, python_version: str) -> bool:
    exe = bytecode_compiler(python_version)
    if exe is None:
        print(f"finmaas bundling: no python{python_version} on PATH; the bundle ships without "
              "bytecode (Lambda will compile modules at each cold start)", file=sys.stderr)
        return False
    # unchecked-hash: the .pyc is used whatever the source files' timestamps become in the zip
    subprocess.run([exe, "-m", "compileall", "-q", "-j", "0",
                    "--invalidation-mode", "unchecked-hash", str(root)], check=True)
    return True


def install_dependencies(target: Path, platforms: list[str] | None, python_version: str,
                         cache_root: Path) -> Path:
    """Install (or reuse) the pruned dependency tree for one platform; returns its path."""
    compiled = bytecode_compiler(python_version) is not None
    key = hashlib.sha256(
        f"{platforms}|{python_version}|{compiled}|{runtime_lock()}".encode()
    ).hexdigest()[:16]
    cached = cache_root / key
    if not (cached / ".complete").exists():
        staging = cache_root / f"{key}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
               "--disable-pip-version-check", "--target", str(staging),
               "--only-binary=:all:", "--implementation", "cp",
               "--python-version", python_version]
        for platform in platforms or []:
            cmd += ["--platform", platform]
        cmd += ["--no-deps", "--require-hashes", "-r", str(LAMBDA_LOCK)]
        subprocess.run(cmd, check=True)
        _prune(staging)
        compile_bytecode(staging, python_version)
        (staging / ".complete").write_text(key)
        shutil.rmtree(cached, ignore_errors=True)
        os.replace(staging, cached)
    shutil.copytree(cached, target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".complete"))
    return cached


def copy_function_code(target: Path, python_version: str) -> None:
    ignore = shutil.ignore_patterns(*CODE_EXCLUDES)
    for package in sorted(p for p in FUNCTIONS.iterdir() if p.is_dir()):
        if package.name in CODE_EXCLUDES:
            continue
        shutil.copytree(package, target / package.name, dirs_exist_ok=True, ignore=ignore)
        compile_bytecode(target / package.name, python_version)


def build_bundle(target: Path, *, architecture: str | None, python_version: str = PYTHON_VERSION,
                 cache_root: Path | None = None) -> None:
    """A complete Lambda bundle in ``target``. ``architecture=None`` builds for this
    machine's own interpreter (used by the test that imports the handler from a bundle)."""
    platforms = PLATFORMS[architecture] if architecture else None
    install_dependencies(target, platforms, python_version,
                         cache_root or REPO / ".maas" / "bundle-cache")
    copy_function_code(target, python_version)


@jsii.implements(cdk.ILocalBundling)
class PipLocalBundling:
    def __init__(self, architecture: str) -> None:
        self.architecture = architecture

    def try_bundle(self, output_dir: str, *_args: object, **_kwargs: object) -> bool:
        build_bundle(Path(output_dir), architecture=self.architecture)
        return True

