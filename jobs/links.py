"""Short-lived signed download links for checkpoints.

A browser saves a large tar straight to disk only by following a plain link, and a plain
link cannot carry the Bearer header; the API key itself must never go into a URL (access
logs, history). So a key holder asks for a link (`POST .../download_link`) and gets a
token naming that key, one checkpoint and an expiry, signed with HMAC-SHA256 under a
server secret (`LCO_LINK_SECRET`, or one generated once into `data_dir/link_secret`; see
`load_link_secret`). The secret is never in the database, so reading the database (key
hashes included) does not let anyone mint links. A link opens one checkpoint of the key's
team for `LINK_TTL_S` seconds; it does not depend on the key's hash, and still dies when
its key is revoked or deleted.

    secret = load_link_secret(settings)  # once per process
    token, expires_at = sign_download(secret, key, checkpoint_id, now=time.time())
    found = verify_download(secret, session, token, now=time.time())  # (key, ckpt) | None
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from sqlalchemy.orm import Session

from jobs.auth import AuthenticatedKey
from jobs.models import ApiKey
from jobs.settings import Settings

LINK_TTL_S = 300
SECRET_FILE = "link_secret"
_DOMAIN = b"lco-checkpoint-download:v2:"
_MIN_SECRET_CHARS = 32


def load_link_secret(settings: Settings) -> bytes:
    """The deployment's link-signing secret: `settings.link_secret` when set, else the one
    in `data_dir/link_secret`, created (random, 0600) by whichever process comes first."""
    if settings.link_secret is not None:
        return settings.link_secret.get_secret_value().encode()
    path = settings.data_dir / SECRET_FILE
    if not path.exists():
        _create_secret_file(path)
    # A file someone made group/world readable would let them mint links: tighten it.
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
    value = path.read_text().strip()
    if len(value) < _MIN_SECRET_CHARS:
        raise ValueError(f"{path} holds no usable link secret; delete it to generate one")
    return value.encode()


def _create_secret_file(path: Path) -> None:
    """Write a fresh secret to a private temp file, then hard-link it into place: the link
    fails if another process won the race, so all processes end up reading one secret, and
    none can read a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        # FileExistsError: another process created it first, and we use theirs.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _signature(
    secret: bytes, key_id: str, team_id: str, checkpoint_id: str, expires_at: int
) -> str:
    # Domain-separated so the secret could never sign anything else by accident.
    mac_key = hashlib.sha256(_DOMAIN + secret).digest()
    message = f"{key_id}|{team_id}|{checkpoint_id}|{expires_at}".encode()
    return hmac.new(mac_key, message, hashlib.sha256).hexdigest()


def sign_download(
    secret: bytes, key: ApiKey | AuthenticatedKey, checkpoint_id: str, *, now: float
) -> tuple[str, int]:
    """A token for `checkpoint_id` (which the caller looked up in the key's team)."""
    expires_at = int(now) + LINK_TTL_S
    signature = _signature(secret, key.id, key.team_id, checkpoint_id, expires_at)
    return f"{key.id}.{checkpoint_id}.{expires_at}.{signature}", expires_at


def verify_download(
    secret: bytes, session: Session, token: str, *, now: float
) -> tuple[ApiKey, str] | None:
    """The key that signed `token` and the checkpoint id it opens; None when the token is
    malformed, expired, forged, or its key is revoked or gone."""
    parts = token.split(".")
    if len(parts) != 4 or not parts[2].isdigit() or len(token) > 512:
        return None
    key_id, checkpoint_id, expires, signature = parts
    if int(expires) < now:
        return None
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return None
    expected = _signature(secret, key.id, key.team_id, checkpoint_id, int(expires))
    if not hmac.compare_digest(signature, expected):
        return None
    return key, checkpoint_id
