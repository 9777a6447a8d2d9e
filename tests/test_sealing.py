"""Sealing tokens (services/sealing.py): pure, no database."""

from __future__ import annotations

import base64
import os
import random
import stat

import pytest

from services.sealing import Sealer, TokenUnreadable, key_id_of
from token_keys import KEY_BYTES, TokenKey, local_key, new_key, parse_key, parse_keys

TOKEN = "3f2a9c0d1e4b5a6978877665544332211aabbccd"  # Strava's tokens: 40 hex digits
K1, K2 = new_key("k1"), new_key("2026-12")


def test_a_sealed_token_opens_and_names_its_key():
    sealer = Sealer(K1)
    stored = sealer.seal(TOKEN, rider_id=7, column="access_token")
    assert stored.startswith("enc1:k1:") and TOKEN not in stored
    assert key_id_of(stored) == "k1" and sealer.is_current(stored)
    assert sealer.open(stored, rider_id=7, column="access_token") == TOKEN
    # a fresh nonce each time: the same token never seals to the same text
    assert sealer.seal(TOKEN, rider_id=7, column="access_token") != stored


def test_a_sealed_token_is_bound_to_its_row_and_column():
    sealer = Sealer(K1)
    stored = sealer.seal(TOKEN, rider_id=7, column="access_token")
    for rider_id, column in [(8, "access_token"), (7, "refresh_token")]:
        with pytest.raises(TokenUnreadable, match="does not open under key id 'k1'"):
            sealer.open(stored, rider_id=rider_id, column=column)  # type: ignore[arg-type]


def test_an_altered_or_relabelled_value_does_not_open():
    sealer = Sealer(K2, [K1])
    stored = sealer.seal(TOKEN, rider_id=1, column="refresh_token")
    prefix, payload = stored.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[-1] ^= 1
    flipped = prefix + ":" + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    relabelled = stored.replace("enc1:2026-12:", "enc1:k1:")  # the key id is authenticated
    for bad in [flipped, relabelled]:
        with pytest.raises(TokenUnreadable, match="does not open"):
            sealer.open(bad, rider_id=1, column="refresh_token")
    for malformed in ["enc1:k1:abc", "enc1:k1", "enc1::", "enc1:k1:not*base64"]:
        with pytest.raises(TokenUnreadable):  # sealed-looking is never read as plain text
            sealer.open(malformed, rider_id=1, column="refresh_token")


def test_plain_text_from_before_sealing_reads_as_it_is():
    sealer = Sealer(K1)
    assert key_id_of(TOKEN) is None and not sealer.is_current(TOKEN)
    assert sealer.open(TOKEN, rider_id=3, column="access_token") == TOKEN


def test_old_keys_open_what_they_sealed_and_unknown_keys_are_named():
    old = Sealer(K1).seal(TOKEN, rider_id=5, column="access_token")
    rotated = Sealer(K2, [K1])
    assert rotated.open(old, rider_id=5, column="access_token") == TOKEN
    assert not rotated.is_current(old)
    assert rotated.is_current(rotated.seal(TOKEN, rider_id=5, column="access_token"))
    with pytest.raises(TokenUnreadable) as refused:
        Sealer(K2).open(old, rider_id=5, column="access_token")
    message = str(refused.value)
    assert "'k1'" in message and "TOKEN_ENCRYPTION_OLD_KEYS" in message and "rider 5" in message
    assert TOKEN not in message and not any(t in message for t in K1.secret_texts())


def test_a_sealer_refuses_two_keys_with_one_id():
    with pytest.raises(ValueError, match="given twice"):
        Sealer(K1, [TokenKey("k1", os.urandom(KEY_BYTES))])


def test_key_text_round_trips_in_either_base64_alphabet():
    secret = bytes(range(250, 256)) + os.urandom(KEY_BYTES - 6)  # '-'/'_' vs '+'/'/'
    key = TokenKey("k9", secret)
    assert parse_key(key.text()) == key
    standard = base64.b64encode(secret).decode()
    assert parse_key(f"k9:{standard}") == key
    assert parse_key(f" k9:{standard.rstrip('=')} ") == key
    assert key.text() not in repr(key) and standard not in repr(key)


def some_bytes(count: int, seed: int) -> bytes:
    """Random-looking bytes, the same in every run (parameters are fixed at collection,
    and pytest-xdist's workers must collect the same ones)."""
    return random.Random(seed).randbytes(count)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("no-colon-here", "no ':' found"),
        (":" + base64.b64encode(some_bytes(32, 1)).decode(), "not a key id"),
        ("bad id:" + base64.b64encode(some_bytes(32, 2)).decode(), "not a key id"),
        ("x" * 33 + ":" + base64.b64encode(some_bytes(32, 3)).decode(), "not a key id"),
        ("k1:" + base64.b64encode(some_bytes(31, 4)).decode(), "31 bytes, not 32"),
        ("k1:" + base64.b64encode(some_bytes(33, 5)).decode(), "33 bytes, not 32"),
        ("k1:not base64 at all!", "not base64"),
        ("k1:", "0 bytes"),
    ],
    ids=[
        "no-colon",
        "no-id",
        "id-with-space",
        "id-too-long",
        "31-bytes",
        "33-bytes",
        "not-base64",
        "no-key",
    ],
)
def test_malformed_keys_are_refused_without_repeating_them(text, says):
    with pytest.raises(ValueError, match=says) as refused:
        parse_key(text)
    secret_part = text.partition(":")[2]
    assert len(secret_part) < 8 or secret_part not in str(refused.value)
    assert "<key id>:<32 random bytes in base64>" in str(refused.value)


def test_old_keys_are_a_comma_list_with_distinct_ids():
    assert parse_keys(f"{K1.text()}, ,{K2.text()},") == (K1, K2)
    with pytest.raises(ValueError, match="key id 'k1' is given twice"):
        parse_keys(f"{K1.text()},{new_key('k1').text()}")


def test_the_local_key_is_made_once_private_and_reused(tmp_path):
    data_dir = tmp_path / "data"
    key, made = local_key(data_dir)
    assert made and key.id == "local"
    path = data_dir / "token-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, made_again = local_key(data_dir)
    assert again == key and not made_again
    assert [p.name for p in data_dir.iterdir()] == ["token-key"]  # no temporary left
    path.write_text("k1:short\n")
    with pytest.raises(ValueError, match="token-key"):
        local_key(data_dir)
