"""API keys: a random bearer token, shown once; the database keeps only its sha256 and a prefix.

A token has 256 random bits, so a plain sha256 (no salt, no slow hash) is enough: there is no
dictionary to try, and an indexed lookup by hash finds the key in one query.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from services.api.db import ApiKey, Database, utcnow

TOKEN_PREFIX = "slk_"

bearer_scheme = HTTPBearer(auto_error=False, scheme_name="apiKey",
                           description="An API key from `sleeper keys create --name NAME`.")


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key's id and name."""

    key_id: str
    name: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(db: Database, name: str) -> str:
    """Store a new key and return its token: the only time the token exists in clear."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.write() as session:
        session.add(ApiKey(id="key_" + secrets.token_hex(8), name=name, prefix=token[:12],
                           token_hash=hash_token(token)))
    return token


MIN_TOKEN_LENGTH = 24


def install_keys(db: Database, spec: str) -> list[str]:
    """Accept the keys of `SLEEPER_API_KEYS` ('name=token,…'): each is stored hashed unless a key
    with that token already is. Returns the names added. A malformed entry fails the start-up."""
    pairs = []
    for number, entry in enumerate((e.strip() for e in spec.split(",")), 1):
        name, sep, token = entry.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"SLEEPER_API_KEYS entry {number}: expected name=token")
        if len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"SLEEPER_API_KEYS entry {number} ({name.strip()}): the token is shorter than "
                             f"{MIN_TOKEN_LENGTH} characters")
        pairs.append((name.strip(), token))
    added = []
    with db.write() as session:
        for name, token in pairs:
            if session.scalar(select(ApiKey).where(ApiKey.token_hash == hash_token(token))) is None:
                session.add(ApiKey(id="key_" + secrets.token_hex(8), name=name, prefix=token[:12],
                                   token_hash=hash_token(token)))
                added.append(name)
    return added


def authenticate(db: Database, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if credentials is None:
        raise _unauthorized("missing bearer token: send 'Authorization: Bearer <API key>'")
    with db.read() as session:
        key = session.scalar(select(ApiKey).where(ApiKey.token_hash == hash_token(credentials.credentials)))
    if key is None or key.revoked_at is not None:
        raise _unauthorized("invalid API key")
    return Principal(key_id=key.id, name=key.name)


def require_key(request: Request,
                credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]) -> Principal:
    """The dependency every endpoint but the health checks has: a valid key, within its rate limit.
    The key is looked up on every request, so a revoked key is refused from its next request on."""
    principal = authenticate(request.app.state.db, credentials)
    request.app.state.rate_limiter.take(principal.key_id)
    return principal


def list_keys(db: Database) -> list[ApiKey]:
    with db.read() as session:
        return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(db: Database, key_id: str) -> ApiKey:
    """Mark a key revoked (kept, so its jobs keep their owner); KeyError if there is no such key."""
    with db.write() as session:
        key = session.get(ApiKey, key_id)
        if key is None:
            raise KeyError(key_id)
        key.revoked_at = key.revoked_at or utcnow()
        return key


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})
