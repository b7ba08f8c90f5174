"""Signed download links (jobs.links): signed with a server secret, never with anything in
the database, so reading the database (key hashes) does not let anyone mint a link."""

from __future__ import annotations

import hashlib
import hmac
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from jobs.auth import create_api_key, create_team, revoke_api_key
from jobs.db import make_engine, make_session_factory, transaction
from jobs.links import SECRET_FILE, load_link_secret, sign_download, verify_download
from jobs.models import ApiKey
from jobs.settings import Settings

CKPT = "ftckpt-abc"


@pytest.fixture
def sessions(sqlite_settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(sqlite_settings)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def key_id(sessions: sessionmaker[Session]) -> str:
    with transaction(sessions) as session:
        row, _ = create_api_key(session, create_team(session, "team-a"))
        return row.id


def _verify(sessions: sessionmaker[Session], secret: bytes, token: str) -> str | None:
    with sessions() as session:
        found = verify_download(secret, session, token, now=time.time())
        return None if found is None else f"{found[0].id}/{found[1]}"


def _sign(sessions: sessionmaker[Session], secret: bytes, key_id: str) -> str:
    with sessions() as session:
        key = session.get(ApiKey, key_id)
        assert key is not None
        return sign_download(secret, key, CKPT, now=time.time())[0]


def test_a_link_verifies_and_a_tampered_one_does_not(
    sessions: sessionmaker[Session], key_id: str
) -> None:
    secret = b"s" * 32
    token = _sign(sessions, secret, key_id)
    assert _verify(sessions, secret, token) == f"{key_id}/{CKPT}"
    kid, ckpt, expires, signature = token.split(".")
    for bad in (
        f"{kid}.ftckpt-other.{expires}.{signature}",
        f"{kid}.{ckpt}.{int(expires) + 60}.{signature}",
        token[:-1] + ("0" if token[-1] != "0" else "1"),
        f"{kid}.{ckpt}.{expires}",
    ):
        assert _verify(sessions, secret, bad) is None, bad


def test_another_secret_and_the_old_key_hash_scheme_fail(
    sessions: sessionmaker[Session], key_id: str
) -> None:
    token = _sign(sessions, b"a" * 32, key_id)
    assert _verify(sessions, b"b" * 32, token) is None
    # The old scheme: HMAC keyed by the key's stored hash, which the database reveals.
    with sessions() as session:
        key = session.get(ApiKey, key_id)
        assert key is not None
        expires = int(time.time()) + 300
        old_secret = hashlib.sha256(b"lco-checkpoint-download:" + key.key_hash.encode())
        message = f"{key.id}|{CKPT}|{expires}".encode()
        signature = hmac.new(old_secret.digest(), message, hashlib.sha256).hexdigest()
    assert _verify(sessions, b"a" * 32, f"{key_id}.{CKPT}.{expires}.{signature}") is None


def test_a_link_outlives_a_rehash_of_its_key_but_not_its_revocation(
    sessions: sessionmaker[Session], key_id: str
) -> None:
    secret = b"s" * 32
    token = _sign(sessions, secret, key_id)
    with transaction(sessions) as session:
        key = session.get(ApiKey, key_id)
        assert key is not None
        key.key_hash = hashlib.sha256(b"rotated").hexdigest()
    assert _verify(sessions, secret, token) == f"{key_id}/{CKPT}"
    with transaction(sessions) as session:
        revoke_api_key(session, key_id)
    assert _verify(sessions, secret, token) is None  # revocation still kills its links


def test_the_secret_comes_from_settings_or_one_private_file(tmp_path: Path) -> None:
    configured = Settings(data_dir=tmp_path, link_secret="c" * 40)
    assert load_link_secret(configured) == b"c" * 40
    assert not (tmp_path / SECRET_FILE).exists()

    data_dir = tmp_path / "data"
    first = load_link_secret(Settings(data_dir=data_dir))
    path = data_dir / SECRET_FILE
    assert len(first) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    # Another process (or a restart) of the same deployment reads the same secret.
    assert load_link_secret(Settings(data_dir=data_dir)) == first
    path.chmod(0o644)
    assert load_link_secret(Settings(data_dir=data_dir)) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_link_secret(Settings(data_dir=tmp_path / "other")) != first
    assert not [p for p in data_dir.iterdir() if p.name != SECRET_FILE]  # no temp files


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, link_secret="short")
    (tmp_path / SECRET_FILE).write_text("\n")
    with pytest.raises(ValueError):
        load_link_secret(Settings(data_dir=tmp_path))
