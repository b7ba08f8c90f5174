"""Short-lived signed download links for checkpoints.

A browser saves a large tar straight to disk only by following a plain link, and a plain
link cannot carry the Bearer header; the API key itself must never go into a URL (access
logs, history). So a key holder asks for a link (`POST .../download_link`) and gets a
token naming that key, one checkpoint and an expiry, signed with HMAC-SHA256 keyed by the
key's stored hash (domain-separated). A link therefore opens one checkpoint of the key's
team, for `LINK_TTL_S` seconds, dies with the key when it is revoked, and needs no server
secret to configure.

    token, expires_at = sign_download(key, checkpoint_id, now=time.time())
    found = verify_download(session, token, now=time.time())  # (key, checkpoint_id) | None
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy.orm import Session

from jobs.auth import AuthenticatedKey
from jobs.models import ApiKey

LINK_TTL_S = 300
_DOMAIN = b"lco-checkpoint-download:"


def _signature(key: ApiKey | AuthenticatedKey, checkpoint_id: str, expires_at: int) -> str:
    secret = hashlib.sha256(_DOMAIN + key.key_hash.encode()).digest()
    message = f"{key.id}|{checkpoint_id}|{expires_at}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def sign_download(
    key: ApiKey | AuthenticatedKey, checkpoint_id: str, *, now: float
) -> tuple[str, int]:
    """A token for `checkpoint_id` (which the caller looked up in the key's team)."""
    expires_at = int(now) + LINK_TTL_S
    token = f"{key.id}.{checkpoint_id}.{expires_at}.{_signature(key, checkpoint_id, expires_at)}"
    return token, expires_at


def verify_download(session: Session, token: str, *, now: float) -> tuple[ApiKey, str] | None:
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
    if not hmac.compare_digest(signature, _signature(key, checkpoint_id, int(expires))):
        return None
    return key, checkpoint_id
