"""Riders' Supabase access tokens: verified with PyJWT against the project's JWKS or the
legacy HS256 secret.

Checked: the signature, `exp`, the issuer (`{SUPABASE_URL}/auth/v1`), the
`authenticated` audience and a UUID `sub`. The algorithm decides the key and never the
other way round: HS256 only ever meets SUPABASE_JWT_SECRET, RS256/ES256 only a key of
the JWKS (PyJWT binds each JWK to its own algorithm), so a token signed with a public
key as an HMAC secret, or with `alg: none`, is refused.

The JWKS is fetched with `requests` (not PyJWKClient's urllib) so that it shares the
service's HTTP stack and timeouts and so that tests can answer it at the HTTP boundary
with `responses`. It is cached for JWKS_TTL_S (Supabase's edge caches it 10 minutes) and
fetched again early only for an unknown key id, at most once per JWKS_MIN_REFETCH_S, so
forged key ids cannot make us hammer Supabase.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import jwt
import requests
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError

from config import Settings
from services.clock import monotonic as host_monotonic

log = logging.getLogger(__name__)

AUDIENCE = "authenticated"
HMAC_ALGORITHMS = ("HS256",)
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
JWKS_TTL_S = 600.0
JWKS_MIN_REFETCH_S = 30.0
JWKS_TIMEOUT_S = 3.0
JWKS_RETRY_S = 5.0  # with no keys at all, a failed fetch is not retried sooner
LEEWAY_S = 10  # clock skew between Supabase and this host


class RiderAuthError(Exception):
    """The rider's token is missing or not acceptable (401)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RiderAuthUnavailable(Exception):
    """Tokens cannot be checked at all: not configured, or the JWKS unreachable (503)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RiderIdentity:
    """Who a verified token speaks for."""

    auth_user_id: UUID
    email: str | None = None


def issuer_for(supabase_url: str) -> str:
    """The `iss` Supabase Auth puts in its tokens."""
    return f"{supabase_url.rstrip('/')}/auth/v1"


def jwks_url_for(supabase_url: str) -> str:
    """Where Supabase publishes the project's public signing keys."""
    return f"{issuer_for(supabase_url)}/.well-known/jwks.json"


class JwksCache:
    """The project's JWKS, fetched with requests and kept for a while."""

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = JWKS_TTL_S,
        min_refetch_s: float = JWKS_MIN_REFETCH_S,
        timeout_s: float = JWKS_TIMEOUT_S,
        monotonic: Callable[[], float] = host_monotonic,
    ) -> None:
        self.url = url
        self._ttl_s = ttl_s
        self._min_refetch_s = min_refetch_s
        self._timeout_s = timeout_s
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None
        self._failed_at: float | None = None
        self.fetches = 0

    def signing_key(self, kid: str | None) -> PyJWK | None:
        """The key for `kid` (or the only key, for a token without one), if the set has it."""
        with self._lock:
            now = self._monotonic()
            if self._fetched_at is None or now - self._fetched_at >= self._ttl_s:
                self._refresh(now)
            key = self._pick(kid)
            if key is None and now - (self._fetched_at or 0) >= self._min_refetch_s:
                # A key rotated in since our fetch: look once more, but not on every request.
                self._refresh(now)
                key = self._pick(kid)
            return key

    def _pick(self, kid: str | None) -> PyJWK | None:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _refresh(self, now: float) -> None:
        if self._fetched_at is None and self._failed_at is not None:
            if now - self._failed_at < JWKS_RETRY_S:  # Supabase is down: don't pile on
                raise _unavailable()
        self.fetches += 1
        try:
            response = requests.get(self.url, timeout=self._timeout_s)
            response.raise_for_status()
            keys = _usable_keys(response.json())
        except (requests.RequestException, ValueError) as exc:
            if self._fetched_at is not None:
                # Keep the keys we have rather than lock every rider out.
                log.warning(
                    "JWKS refresh failed; keeping the cached keys",
                    extra={"error": type(exc).__name__},
                )
                self._fetched_at = now
                return
            self._failed_at = now
            raise _unavailable() from None
        self._keys = keys
        self._fetched_at = now


def _unavailable() -> RiderAuthUnavailable:
    return RiderAuthUnavailable(
        "auth_unavailable", "the sign-in keys could not be fetched; try again shortly"
    )


def _usable_keys(document: Any) -> dict[str, PyJWK]:
    """Signing keys of a JWKS document by key id: asymmetric ones only."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    wanted = [
        key
        for key in document["keys"]
        if isinstance(key, dict)
        and key.get("kty") in ("RSA", "EC")  # never an "oct" (shared secret) key
        and key.get("use", "sig") == "sig"
        and key.get("alg", "RS256" if key.get("kty") == "RSA" else "ES256") in ASYMMETRIC_ALGORITHMS
    ]
    try:
        key_set = PyJWKSet.from_dict({"keys": wanted})
    except (PyJWKSetError, PyJWKError):
        return {}
    return {str(key.key_id or ""): key for key in key_set.keys}


class TokenVerifier:
    """Verifies riders' access tokens with what is configured (JWKS, HS256 secret, both)."""

    def __init__(
        self,
        *,
        supabase_url: str | None,
        jwt_secret: str | None,
        jwks: JwksCache | None = None,
    ) -> None:
        self._issuer = issuer_for(supabase_url) if supabase_url else None
        self._secret = jwt_secret
        self._jwks = jwks or (JwksCache(jwks_url_for(supabase_url)) if supabase_url else None)

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        return cls(supabase_url=settings.supabase_url, jwt_secret=settings.supabase_jwt_secret)

    @property
    def configured(self) -> bool:
        return self._jwks is not None or bool(self._secret)

    def verify(self, token: str | None) -> RiderIdentity:
        """The identity of a valid token; RiderAuthError (401) or RiderAuthUnavailable (503)."""
        if not self.configured:
            raise RiderAuthUnavailable(
                "not_configured",
                "rider sign-in is not configured (SUPABASE_URL or SUPABASE_JWT_SECRET)",
            )
        if not token:
            raise RiderAuthError(
                "missing_token", "sign in first: an Authorization: Bearer token is required"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise RiderAuthError("invalid_token", "the token is not a JWT") from None
        key, algorithm = self._key_for(header)
        claims = self._decode(token, key, algorithm)
        return _identity(claims)

    def _key_for(self, header: dict[str, Any]) -> tuple[Any, str]:
        algorithm = header.get("alg")
        if algorithm in HMAC_ALGORITHMS:
            if not self._secret:
                raise RiderAuthError("invalid_token", "HS256 tokens are not accepted here")
            return self._secret, algorithm
        if algorithm in ASYMMETRIC_ALGORITHMS:
            if self._jwks is None:
                raise RiderAuthError("invalid_token", f"{algorithm} tokens are not accepted here")
            kid = header.get("kid")
            key = self._jwks.signing_key(kid if isinstance(kid, str) else None)
            if key is None:
                raise RiderAuthError("invalid_token", "the token was signed with an unknown key")
            return key, algorithm
        raise RiderAuthError("invalid_token", "the token's algorithm is not accepted")

    def _decode(self, token: str, key: Any, algorithm: str) -> dict[str, Any]:
        options: dict[str, Any] = {"require": ["exp", "sub", "aud", "iss"]}
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=AUDIENCE,
                # Without SUPABASE_URL (HS256 only) the issuer is required but cannot be pinned.
                issuer=self._issuer,
                leeway=LEEWAY_S,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise RiderAuthError(
                "token_expired", "the sign-in has expired: sign in again"
            ) from None
        except jwt.InvalidAudienceError:
            raise RiderAuthError(
                "invalid_token", "the token is not a signed-in user's token"
            ) from None
        except jwt.InvalidIssuerError:
            raise RiderAuthError(
                "invalid_token", "the token was issued by another project"
            ) from None
        except jwt.PyJWTError:
            raise RiderAuthError("invalid_token", "the token could not be verified") from None


def _identity(claims: dict[str, Any]) -> RiderIdentity:
    try:
        user = UUID(str(claims["sub"]))
    except (KeyError, ValueError):
        raise RiderAuthError("invalid_token", "the token has no user id") from None
    email = claims.get("email")
    return RiderIdentity(auth_user_id=user, email=email if isinstance(email, str) else None)
