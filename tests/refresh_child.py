"""A process of its own for tests/test_token_refresh.py to kill during a token refresh.

Configured by its environment alone, as the deployed app is, it makes one Strava request
for a rider through the service's token keeper, which first refreshes the rider's
expiring token. With `answered` it kills itself (SIGKILL) at the write of the new tokens,
which is reached only with Strava's answer in hand: between the answer and the write.
Otherwise the test kills it from the fake Strava's side.

    python -m tests.refresh_child <rider id> [answered]
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import models
from app_factory import create_app
from services.calls import Call


def die(*_: Any, **__: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    rider_id = int(argv[0])
    if argv[1:] == ["answered"]:
        models.tokens.store_tokens = die
    runtime = create_app().extensions["strava_sync"]
    call = Call(runtime, kind="sync-strava")
    try:
        call.tokens.call(rider_id, call.strava.get_athlete)
    finally:
        call.close()
    print("the refresh ended and nothing killed this process")


if __name__ == "__main__":
    main(sys.argv[1:])
