"""A live ``phiguard serve`` process for tests that talk HTTP like a real client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from .components import free_port


@dataclass(frozen=True)
class LiveServer:
    base: str  # http://127.0.0.1:PORT
    token: str
    home: Path
    process: subprocess.Popen[bytes]

    @property
    def fhir(self) -> str:
        return f"{self.base}/fhir"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@contextmanager
def live_server(home: Path, token: str, env: dict[str, str]) -> Iterator[LiveServer]:
    port = free_port()
    log = open(home / "serve.out", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "phiguard.cli", "serve", "--home", str(home), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {(home / 'serve.out').read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start in 30 s")
            time.sleep(0.1)
        yield LiveServer(base, token, home, proc)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
