"""The wiring builds the real adapters from the controller config: node bootstrap user data from
``cloud.node_networks`` and the cloud registry's auth (none, basic, ACR temporary tokens)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import SimpleNamespace

from cryptography import x509

from adapters.pki import CertificateAuthority
from controller import wiring
from controller.config import load_config_text


def _node_certs(text: str) -> list[x509.Certificate]:
    certs = [x509.load_pem_x509_certificate(("-----BEGIN CERTIFICATE-----" + block.split("-----END CERTIFICATE-----")[0]
                                             + "-----END CERTIFICATE-----").replace("\n      ", "\n").encode())
             for block in text.split("-----BEGIN CERTIFICATE-----")[1:]]
    return [c for c in certs if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca]


def test_node_networks_give_bootstrap_user_data_naming_their_addresses(tmp_path: Path) -> None:
    CertificateAuthority(tmp_path / "pki").ensure()
    cfg = load_config_text(f"controller_id: dc1\nstate_dir: {tmp_path}\ncloud:\n"
                           "  node_networks: [10.20.0.0/29, 10.20.1.0/30]\n", "c.yaml")
    text = wiring._user_data(cfg)(SimpleNamespace(name="web"), "r1")
    [cert] = _node_certs(text)
    ips = {str(ip) for ip in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
           .value.get_values_for_type(x509.IPAddress)}
    assert {f"10.20.0.{i}" for i in range(1, 7)} | {"10.20.1.1", "10.20.1.2"} <= ips
    assert "10.20.0.7" not in ips and "10.20.2.1" not in ips  # broadcast, other networks: not named
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(days=7, minutes=1)
    # none named: no user data (the emulator, or an image with the Docker TLS endpoint baked in)
    bare = load_config_text(f"controller_id: dc1\nstate_dir: {tmp_path}\n", "c.yaml")
    assert wiring._user_data(bare)(SimpleNamespace(name="web"), "r1") == ""
