"""Every log line is one valid JSON object, with secrets masked in its values."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from uuid import uuid4

import pytest

from logging_setup import RedactingJsonFormatter, configure_logging

SECRET = "cfg-Secret-7f3a91"  # a configured secret (the cron secret, say)
QUOTED_SECRET = 'q"uo\\te-s3cret'  # one whose repr() and JSON forms differ from it
CODE = "xyz123"
ACCESS = "tok-abc987"
REFRESH = "ref-def654"
CLIENT = "cs-ghi321"
BEARER = "eyJhbGciOi.payload-part.sig_nature"
DB_PASSWORD = "pg-pass-77"
LEAKS = [SECRET, QUOTED_SECRET, CODE, ACCESS, REFRESH, CLIENT, BEARER, DB_PASSWORD]


class Opaque:
    """Not JSON: logged as its str()."""

    def __str__(self) -> str:
        return f'Opaque(refresh_token="{REFRESH}", note="keep \\ me")'


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingJsonFormatter([SECRET, QUOTED_SECRET, None, "short"]))
    logger = logging.getLogger(f"test_logging.{uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    text = stream.getvalue()
    assert text.endswith("\n")
    entries = []
    for line in text.splitlines():
        entry = json.loads(line)  # every line parses on its own
        assert isinstance(entry, dict)
        entries.append(entry)
    for leak in LEAKS:
        assert leak not in text
        assert json.dumps(leak)[1:-1] not in text  # nor its JSON-escaped form
    return entries


def strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def test_a_message_with_quotes_backslashes_newlines_and_secrets(logged):
    logger, stream = logged
    logger.info(
        f'rider said "hi" from C:\\rides\\new, code="{CODE}" postcode=AB12 3CD zipcode: 90210\n'
        f"second line access_token={ACCESS}&next=1 and the secret {SECRET}\n"
        f"Authorization: Bearer {BEARER}; db postgresql://club:{DB_PASSWORD}@db.example:6543/x"
    )
    [entry] = lines(stream)
    assert entry["level"] == "info" and entry["logger"] == logger.name
    assert entry["message"] == (
        'rider said "hi" from C:\\rides\\new, code="***" postcode=AB12 3CD zipcode: 90210\n'
        "second line access_token=***&next=1 and the secret ***\n"
        "Authorization: Bearer ***; db postgresql://club:***@db.example:6543/x"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"code={CODE}", "code=***"),
        (f"code: {CODE}", "code: ***"),
        (f'"code": "{CODE}"', '"code": "***"'),
        (f'code="{CODE}"', 'code="***"'),
        (f"{{'code': '{CODE}'}}", "{'code': '***'}"),
        (f'{{\\"code\\": \\"{CODE}\\"}}', '{\\"code\\": \\"***\\"}'),
        (f"?client_id=1&code={CODE}&scope=read", "?client_id=1&code=***&scope=read"),
        (f'{{"refresh_token":"{REFRESH}","client_secret" : "{CLIENT}"}}', None),
        (
            f"REFRESH_TOKEN={REFRESH}, Client_Secret={CLIENT}",
            "REFRESH_TOKEN=***, Client_Secret=***",
        ),
        ("postcode=AB12 zipcode: 90210 status_code=500 barcode: 42", None),
        (f"{QUOTED_SECRET} and {SECRET}", "*** and ***"),
    ],
)
def test_every_form_of_a_token_field_is_masked(logged, text, expected):
    logger, stream = logged
    logger.warning(text)
    [entry] = lines(stream)
    if expected is None:
        expected = text.replace(REFRESH, "***").replace(CLIENT, "***")
    assert entry["message"] == expected


def test_extras_nested_values_and_objects(logged):
    logger, stream = logged
    logger.info(
        "synced %s riders for %r",
        3,
        f'club "{SECRET}"',
        extra={
            "rider_id": 42,
            "ratio": 0.5,
            "infinite": float("inf"),
            "missing": None,
            "note": f'said "ok"\n\\ code="{CODE}" at postcode AB1',
            "strava": {
                "athlete": {"id": 7, "city": "Ghent", "postcode": "9000"},
                "tokens": [f"access_token={ACCESS}", {"refresh_token": REFRESH}],
                "code": CODE,
                (1, 2): SECRET,
            },
            "code": CODE,
            "object": Opaque(),
            "quoted": {"secret": QUOTED_SECRET},
        },
    )
    [entry] = lines(stream)
    assert entry["message"] == "synced 3 riders for 'club \"***\"'"
    assert entry["rider_id"] == 42 and entry["ratio"] == 0.5 and entry["missing"] is None
    assert entry["infinite"] == "inf"  # NaN and Infinity are not JSON
    assert entry["note"] == 'said "ok"\n\\ code="***" at postcode AB1'
    assert entry["strava"] == {
        "athlete": {"id": 7, "city": "Ghent", "postcode": "9000"},
        "tokens": ["access_token=***", {"refresh_token": "***"}],
        "code": "***",
        "(1, 2)": "***",
    }
    assert entry["code"] == "***"
    assert entry["object"] == 'Opaque(refresh_token="***", note="keep \\ me")'
    assert entry["quoted"] == {"secret": "***"}
    assert not any(leak in s for s in strings(entry) for leak in LEAKS)


def test_an_exception_whose_text_holds_quotes_and_secrets(logged):
    logger, stream = logged
    try:
        raise ValueError(
            f'Strava said {{"message": "Bad \\"grant\\"", "code": "{CODE}"}}\n'
            f"while posting client_secret={CLIENT} with {SECRET} at postcode 9000"
        )
    except ValueError:
        logger.exception("token exchange failed for rider %s", 9, extra={"rider_id": 9})
    logger.error("after", stack_info=True)
    first, second = lines(stream)
    assert first["message"] == "token exchange failed for rider 9"
    assert first["level"] == "error" and first["rider_id"] == 9
    exception = first["exception"]
    assert exception.startswith("Traceback (most recent call last):\n")
    assert exception.endswith(
        'ValueError: Strava said {"message": "Bad \\"grant\\"", "code": "***"}\n'
        "while posting client_secret=*** with *** at postcode 9000"
    )
    assert "test_an_exception_whose_text_holds_quotes_and_secrets" in exception
    assert second["message"] == "after" and second["stack"].startswith("Stack (most recent")


def test_a_record_with_bad_arguments_is_still_one_line():
    # Formatted directly: through a logger, pytest's own capture handler would fail first.
    formatter = RedactingJsonFormatter([SECRET])
    record = logging.makeLogRecord(
        {"msg": "two %s %s but one", "args": (f"code={CODE} {SECRET}",), "levelname": "INFO"}
    )
    line = formatter.format(record)
    assert "\n" not in line and CODE not in line and SECRET not in line
    message = json.loads(line)["message"]
    assert message == "two %s %s but one (bad log arguments: ('code=*** ***',))"


def test_configure_logging_writes_json_lines_to_stdout(capsys):
    configure_logging(secrets=[SECRET])
    logging.getLogger("test_logging.stdout").warning('a "%s" line\nwith a break', SECRET)
    out = [line for line in capsys.readouterr().out.splitlines() if "test_logging.stdout" in line]
    assert [json.loads(line)["message"] for line in out] == ['a "***" line\nwith a break']
