"""A loopback token server for docker-registry's ``auth: token`` mode (the Docker Hub / ACR flow): checks
Basic credentials, grants the requested repository scopes as an RS256 JWT whose x5c header carries a
self-signed test certificate the registry trusts. Counts issued tokens so tests can see the cache work."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    def __init__(self, root: Path, users: dict[str, str], service: str = "burst-test-registry",
                 issuer: str = "burst-test-issuer", expires_in: int = 300) -> None:
        self.users = users
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.issued: list[str] = []  # the scopes of each token issued, space-separated
        self.refused = 0
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "burst test token signer")])
        now = dt.datetime.now(dt.UTC)
        self._cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                      .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
                      .sign(self._key, hashes.SHA256()))
        self.cert_path = Path(root) / "token-signer.pem"
        self.cert_path.parent.mkdir(parents=True, exist_ok=True)
        self.cert_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._httpd: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def realm(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/token"

    def start(self) -> TokenServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                status, body = server._answer(self.headers.get("Authorization"), self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _answer(self, authorization: str | None, path: str) -> tuple[int, dict[str, Any]]:
        query = parse_qs(urlsplit(path).query)
        account = ""
        if authorization:
            scheme, _, value = authorization.partition(" ")
            user, _, password = base64.b64decode(value).decode().partition(":") if scheme == "Basic" else ("", "", "")
            if self.users.get(user) != password:
                with self._lock:
                    self.refused += 1
                return 401, {"details": "bad credentials"}
            account = user
        if not account:  # anonymous: nothing granted (the registry will refuse)
            return 401, {"details": "authentication required"}
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        with self._lock:
            self.issued.append(" ".join(query.get("scope", [])))
        return 200, {"token": self._jwt(account, access), "expires_in": self.expires_in,
                     "issued_at": dt.datetime.now(dt.UTC).isoformat()}

    def _jwt(self, subject: str, access: list[dict[str, Any]]) -> str:
        der = self._cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + self.expires_in,
                  "nbf": now - 10, "iat": now, "jti": str(uuid.uuid4()), "access": access}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"
