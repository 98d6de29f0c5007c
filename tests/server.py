"""Run `maas serve` as a real process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = b""

    def start(self) -> Server:
        env = {**os.environ, "MAAS_HOME": str(self.home)}
        for var in ("MAAS_TENANTS_TABLE", "MAAS_USAGE_TABLE", "MAAS_ROLLUPS_TABLE"):
            env.pop(var, None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "finmaas.cli", "serve", "--port", str(self.port),
             "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode() if self.proc.stderr else "")
        raise RuntimeError("server did not start in 30 s")

    def kill(self, sig: int = 9) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.close()

    def close(self) -> None:
        """Keep what the server wrote to stderr (``log``) and release the pipe: left open,
        it warns when the garbage collector finds it during a later test."""
        if self.proc and self.proc.stderr and not self.proc.stderr.closed:
            self.log = self.proc.stderr.read()
            self.proc.stderr.close()
