"""The manager serves HTTPS when given a certificate and key (``[manager] ssl-cert``/``ssl-key``), so
signatures and bodies cannot be captured on the wire; a half or broken TLS configuration is refused."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ai.backend.common.auth import sign_request_headers
from ai.backend.manager.fixtures import USER
from ai.backend.testutils.cluster import prepare_database
from ai.backend.testutils.processes import stop_process


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_manager_serves_signed_requests_over_https(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = _port()
    cfg = tmp_path / "manager.toml"
    cfg.write_text(
        f'[manager]\nservice-addr-port = {port}\ncluster-secret = "tls-test-secret"\n'
        f'state-dir = "{tmp_path}"\nssl-cert = "{cert}"\nssl-key = "{key}"\n'
    )
    prepare_database(cfg)
    log = open(tmp_path / "manager.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ai.backend.manager.server", "-f", str(cfg)],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    endpoint = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                root = httpx.get(endpoint + "/", verify=trust, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((tmp_path / "manager.log").read_text()[-3000:]) from None
                time.sleep(0.2)
        assert root.status_code == 200 and root.json()["version"].startswith("v6.")
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        path = "/session/no-such-session"
        headers = sign_request_headers(
            method="GET",
            path_with_query=path,
            host=f"127.0.0.1:{port}",
            content_type="application/json",
            version="v6.20220615",
            access_key=USER["access_key"],
            secret_key=USER["secret_key"],
        )
        r = httpx.get(endpoint + path, headers=headers, verify=trust, timeout=10)
        assert r.status_code == 404 and r.json()["type"].endswith("/session-not-found"), r.text
    finally:
        stop_process(proc, 15)


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('ssl-cert = "/etc/hostname"\n', "both or neither"),
        ('ssl-cert = "/no/such/cert.pem"\nssl-key = "/no/such/key.pem"\n', "no such file"),
    ],
)
def test_half_or_missing_tls_config_is_refused(tmp_path: Path, extra: str, words: str) -> None:
    cfg = tmp_path / "manager.toml"
    cfg.write_text("[manager]\n" + extra)
    p = subprocess.run(
        [sys.executable, "-m", "ai.backend.manager.server", "-f", str(cfg)], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr, p.stderr
