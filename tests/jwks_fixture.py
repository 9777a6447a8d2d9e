"""Supabase-like rider tokens for tests: keys, a JWKS answered at the HTTP boundary
(`responses`, on the project's real JWKS URL), and helpers to sign good and bad tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fake_strava import FakeStrava
from tests.conftest import API_URL, OAUTH_URL

SUPABASE_URL = "https://club-test.supabase.co"
ISSUER = f"{SUPABASE_URL}/auth/v1"
JWKS_URL = f"{ISSUER}/.well-known/jwks.json"
JWT_SECRET = "test-supabase-legacy-jwt-secret-8c1f2e0a9b7d"


@dataclass(frozen=True)
class Keys:
    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    other_ec: ec.EllipticCurvePrivateKey  # signs "wrong signature" tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """Signs access tokens as Supabase Auth would and answers its JWKS."""

    supabase_url = SUPABASE_URL
    jwt_secret = JWT_SECRET

    @staticmethod
    def headers(token: str) -> dict[str, str]:
        """The rider page's Authorization header for a token."""
        return {"Authorization": f"Bearer {token}"}

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.fetches = 0
        self.jwks_status = 200
        self.extra_keys: list[dict[str, Any]] = []

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = RSAAlgorithm.to_jwk(self.keys.rsa.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(self.keys.ec.public_key(), as_dict=True)
        return {
            "keys": [
                {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
                {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
                *self.extra_keys,
            ]
        }

    def install(self, rsps: responses.RequestsMock) -> None:
        def answer(request: Any) -> tuple[int, dict[str, str], str]:
            self.fetches += 1
            return self.jwks_status, {"Content-Type": "application/json"}, json.dumps(self.jwks())

        rsps.add_callback(responses.GET, JWKS_URL, callback=answer)

    @staticmethod
    def claims(user: uuid.UUID | str, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": str(user),
            "aud": "authenticated",
            "role": "authenticated",
            "iat": now,
            "exp": now + 3600,
            "email": "rider@example.org",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def es256(
        self, user: uuid.UUID | str, *, kid: str = "ec-1", key: Any = None, **claims: Any
    ) -> str:
        return jwt.encode(
            self.claims(user, **claims),
            key or self.keys.ec,
            algorithm="ES256",
            headers={"kid": kid},
        )

    def rs256(self, user: uuid.UUID | str, *, kid: str = "rsa-1", **claims: Any) -> str:
        return jwt.encode(
            self.claims(user, **claims), self.keys.rsa, algorithm="RS256", headers={"kid": kid}
        )

    def hs256(self, user: uuid.UUID | str, *, secret: str = JWT_SECRET, **claims: Any) -> str:
        return jwt.encode(self.claims(user, **claims), secret, algorithm="HS256")

    def unsigned(self, user: uuid.UUID | str, **claims: Any) -> str:
        """An `alg: none` token."""
        return jwt.encode(self.claims(user, **claims), None, algorithm="none")

    def hs256_with_public_key(self, user: uuid.UUID | str, *, kid: str = "rsa-1") -> str:
        """The classic confusion attack: HS256 keyed with the RSA public key's PEM.

        Signed by hand, since PyJWT rightly refuses to use a PEM key as an HMAC secret.
        """
        from cryptography.hazmat.primitives import serialization

        pem = self.keys.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
        payload = _b64(json.dumps(self.claims(user)).encode())
        signing_input = f"{header}.{payload}".encode()
        signature = _b64(hmac.new(pem, signing_input, hashlib.sha256).digest())
        return f"{header}.{payload}.{signature}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec=ec.generate_private_key(ec.SECP256R1()),
        other_ec=ec.generate_private_key(ec.SECP256R1()),
    )


@pytest.fixture
def issuer(keys: Keys) -> Issuer:
    return Issuer(keys)


@pytest.fixture
def web(fake: FakeStrava, issuer: Issuer) -> Iterator[FakeStrava]:
    """The fake Strava and Supabase's JWKS, both answering on their real URLs."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake.install(rsps, api_url=API_URL, oauth_url=OAUTH_URL)
        issuer.install(rsps)
        yield fake


@pytest.fixture
def auth_settings() -> dict[str, str]:
    """Settings for both sources of rider tokens (JWKS and the HS256 secret)."""
    return {"supabase_url": SUPABASE_URL, "supabase_jwt_secret": JWT_SECRET}


@pytest.fixture
def rider_app(make_app, auth_settings):  # type: ignore[no-untyped-def]
    """The app with both sources of rider tokens configured."""
    return make_app(**auth_settings)


@pytest.fixture
def rider_client(rider_app):  # type: ignore[no-untyped-def]
    return rider_app.test_client()
