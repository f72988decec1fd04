"""WorkloadSpec <-> JSON text for the state database, with secret env values encrypted (Fernet:
AES-128-CBC + HMAC-SHA256) under a key kept in the controller's state directory. Called by the state store
when it journals the spec a replica was started from; never logs values.

The key file (``<state_dir>/secrets/workload-spec.key``, mode 0600, directory 0700) is created on first use.
Losing it only loses the stored secret values: the spec is captured again from the on-prem containers.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from controller.errors import IntegrityError, PermanentError
from controller.ports import WorkloadSpec
from controller.specs import spec_hash

__all__ = ["KEY_RELATIVE_PATH", "SpecCodec"]

KEY_RELATIVE_PATH = Path("secrets") / "workload-spec.key"
_FORMAT = 1


class SpecCodec:
    def __init__(self, key_path: str | os.PathLike[str]) -> None:
        self.key_path = Path(key_path)
        self._fernet: Fernet | None = None

    @classmethod
    def in_state_dir(cls, state_dir: str | os.PathLike[str]) -> SpecCodec:
        return cls(Path(state_dir) / KEY_RELATIVE_PATH)

    def _key(self) -> Fernet:
        if self._fernet is None:
            if not self.key_path.exists():
                self.key_path.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(self.key_path.parent, 0o700)
                try:  # O_EXCL: two processes starting at once must not each write their own key
                    fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(Fernet.generate_key())
                except FileExistsError:
                    pass
            mode = self.key_path.stat().st_mode & 0o777
            if mode & 0o077:
                raise PermanentError(f"{self.key_path} is readable by others (mode {mode:o}); chmod 600 it")
            try:
                self._fernet = Fernet(self.key_path.read_bytes().strip())
            except ValueError as exc:
                raise PermanentError(f"{self.key_path} is not a Fernet key: {exc}") from exc
        return self._fernet

    def dumps(self, spec: WorkloadSpec) -> str:
        """JSON text; each secret value becomes ``{"fernet": TOKEN}``."""
        data: dict[str, Any] = asdict(spec)
        data["secret_env"] = sorted(spec.secret_env)
        if spec.secret_env:
            fernet = self._key()
            data["env"] = {k: ({"fernet": fernet.encrypt(v.encode()).decode()} if k in spec.secret_env else v)
                           for k, v in spec.env.items()}
        return json.dumps({"format": _FORMAT, "spec": data}, sort_keys=True)

    def loads(self, text: str) -> WorkloadSpec:
        """The spec back, secrets decrypted; IntegrityError if the key changed or the text was altered."""
        try:
            doc = json.loads(text)
            data = dict(doc["spec"])
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"stored workload spec is not readable: {exc}") from exc
        if doc.get("format") != _FORMAT:
            raise IntegrityError(f"stored workload spec has format {doc.get('format')!r}, expected {_FORMAT}")
        env: dict[str, str] = {}
        for key, value in (data.get("env") or {}).items():
            if isinstance(value, dict):
                try:
                    env[key] = self._key().decrypt(str(value["fernet"]).encode()).decode()
                except (InvalidToken, KeyError) as exc:
                    raise IntegrityError(f"the secret value of env {key} cannot be decrypted with "
                                         f"{self.key_path} (key replaced?); capture the workload again") from exc
            else:
                env[key] = str(value)
        known = {f.name for f in fields(WorkloadSpec)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["env"] = env
        kwargs["secret_env"] = frozenset(data.get("secret_env") or ())
        for key in ("entrypoint", "command"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        kwargs["exposed_ports"] = tuple(kwargs.get("exposed_ports") or ())
        spec = WorkloadSpec(**kwargs)
        if spec.spec_hash and spec.spec_hash != spec_hash(spec):
            raise IntegrityError("stored workload spec does not match its spec_hash (altered?)")
        return spec
