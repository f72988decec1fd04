"""Docker SDK clients for on-prem hosts (unix socket or tcp) and cloud nodes (always mutual TLS).

One place builds them so the quirks are handled once: requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE
from the environment override the session's CA (psf/requests#3829), which would make a node's
certificate fail to verify against our own CA; and HTTP(S)_PROXY must never apply to a node endpoint.
So every client here has ``trust_env`` off, and a pinned API version (1.41, Docker Engine 20.10, which
every supported engine still speaks): with "auto" the SDK would fetch the version in the constructor,
before ``trust_env`` can be turned off.
"""

from __future__ import annotations

import docker
from docker.tls import TLSConfig

from adapters.pki import TlsFiles

__all__ = ["API_VERSION", "docker_client"]

API_VERSION = "1.41"


def docker_client(base_url: str, tls: TlsFiles | None = None, timeout: float = 60.0) -> docker.DockerClient:
    """A client for ``base_url``; with ``tls``, verify the server by our CA and present our certificate."""
    tls_config = None
    if tls is not None:
        tls_config = TLSConfig(client_cert=(str(tls.cert), str(tls.key)), ca_cert=str(tls.ca), verify=True)
    client = docker.DockerClient(base_url=base_url, tls=tls_config, timeout=int(timeout), version=API_VERSION)
    client.api.trust_env = False
    return client
