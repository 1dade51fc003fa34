"""``phiguard serve``: TLS when configured, and plain HTTP refused off loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from phiguard.system import System
from tests.conftest import TEST_PASSPHRASE
from tests.support.components import free_port

CLI = [sys.executable, "-m", "phiguard.cli"]


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def env() -> dict[str, str]:
    return {**os.environ, "PHIGUARD_PASSPHRASE": TEST_PASSPHRASE}


def test_serves_tls_with_hsts(home: tuple[System, str]) -> None:
    system, token = home
    root = system.settings.home
    cert, _key = self_signed(root)
    config = (root / "phiguard.toml").read_text()
    config = config.replace('tls_cert = ""', 'tls_cert = "tls.crt"').replace(
        'tls_key = ""', 'tls_key = "tls.key"'
    )
    (root / "phiguard.toml").write_text(config)
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "--home", str(root), "--host", "127.0.0.1", "--port", str(port)],
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"https://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(
                    f"{base}/fhir/Patient",
                    verify=ssl.create_default_context(cafile=str(cert)),
                    headers={"Authorization": f"Bearer {token}"},
                )
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "TLS server did not start"
                time.sleep(0.2)
        assert r.status_code == 200
        assert "max-age" in r.headers["strict-transport-security"]
        # Plain HTTP to the TLS port gets nothing usable.
        try:
            plain = httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=3).status_code
        except httpx.HTTPError:
            plain = None
        assert plain != 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_plain_http_is_refused_off_loopback(home: tuple[System, str]) -> None:
    system, _ = home
    out = subprocess.run(
        [
            *CLI,
            "serve",
            "--home",
            str(system.settings.home),
            "--host",
            "0.0.0.0",  # noqa: S104 - the point: it must be refused
            "--port",
            str(free_port()),
        ],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "phiguard: error: plain HTTP is only served on loopback: configure tls_cert and tls_key"
    ]
