"""The secret files the controller's configuration names (status token, registry password, cloud
credentials): read once, refused when other users can read them, registered for redaction in every log
line. Under systemd a file passed with ``LoadCredential=`` is read from $CREDENTIALS_DIRECTORY.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from controller.config import (
    ENV_KEY_ID,
    ENV_KEY_SECRET,
    SERVICE_GROUP,
    BasicAuth,
    ControllerConfig,
    EnvCredentials,
    FileCredentials,
    current_user,
)
from controller.errors import ConfigError
from controller.service import register_secret

__all__ = ["cloud_credentials", "read_secret_file", "registry_password", "status_token"]


def _problem(line: str) -> ConfigError:
    return ConfigError(line, [line])


# --------------------------------------------------------------------------- secret files


def read_secret_file(path: str, what: str) -> str:
    """The stripped content of a secret file, registered for redaction.

    Under systemd, a file passed with ``LoadCredential=NAME:PATH`` is read from $CREDENTIALS_DIRECTORY/NAME
    (NAME = the file's base name), for a unit that passes secrets that way. The installed unit reads the files
    themselves: they belong to its user, mode 0600. A file that others can read or write is refused: the
    secret may already be known to them."""
    creds_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    candidate = Path(creds_dir, Path(path).name) if creds_dir else None
    real = candidate if candidate is not None and candidate.is_file() else Path(path)
    try:
        st = real.stat()
    except FileNotFoundError:
        raise _problem(f"{path}: {what} file not found") from None
    except PermissionError:
        raise _problem(f"{path}: cannot read the {what} file: permission denied for user {current_user()} "
                       f"(its directory must let the user in)") from None
    except OSError as exc:
        raise _problem(f"{path}: cannot read the {what} file: {exc.strerror}") from None
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise _problem(f"{real}: the {what} file is accessible by other users (mode {mode:04o}); "
             f"run: chmod 600 {real}")
    try:
        value = real.read_text(encoding="utf-8").strip()
    except PermissionError:
        raise _problem(f"{real}: cannot read the {what} file: permission denied for user {current_user()}; the "
                       f"service's secret files belong to its user: chown {SERVICE_GROUP}:{SERVICE_GROUP} {real} "
                       f"&& chmod 600 {real}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _problem(f"{path}: cannot read the {what} file: {exc}") from None
    if not value:
        raise _problem(f"{path}: the {what} file is empty")
    register_secret(value)
    return value


def status_token(cfg: ControllerConfig) -> str | None:
    """The bearer token for the status endpoint's mutations (None: mutations disabled)."""
    if cfg.status.token:
        return cfg.status.token
    if cfg.status.token_file:
        return read_secret_file(cfg.status.token_file, "status token")
    return None


def registry_password(cfg: ControllerConfig) -> str | None:
    auth = cfg.cloud_registry.auth
    return read_secret_file(auth.password_file, "registry password") if isinstance(auth, BasicAuth) else None


def cloud_credentials(cfg: ControllerConfig, environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(access key id, secret) for credentials.source env or file; None for ram_role (the ECS adapter
    fetches short-lived STS credentials from the instance metadata)."""
    creds = cfg.cloud.credentials
    env = os.environ if environ is None else environ
    if isinstance(creds, EnvCredentials):
        key_id, secret = env.get(ENV_KEY_ID, ""), env.get(ENV_KEY_SECRET, "")
        if not key_id or not secret:
            raise _problem(f"cloud.credentials.source is env but {ENV_KEY_ID} and {ENV_KEY_SECRET} are not both set")
        register_secret(secret)
        return key_id, secret
    if isinstance(creds, FileCredentials):
        text = read_secret_file(creds.path, "cloud credentials")
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=") if "=" in line else line.partition(":")
            if sep and key.strip() and not key.strip().startswith("#"):
                values[key.strip().lower()] = value.strip().strip("'\"")
        key_id = values.get("access_key_id") or values.get(ENV_KEY_ID.lower(), "")
        secret = values.get("access_key_secret") or values.get(ENV_KEY_SECRET.lower(), "")
        if not key_id or not secret:
            raise _problem(f"{creds.path}: write two lines, access_key_id = ... and access_key_secret = ...")
        register_secret(secret)
        return key_id, secret
    return None
