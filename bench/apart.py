"""The fake Strava served from a process of its own, forked with the fake's state as it
stands (its athletes, activities and tokens), so that the service measured does not share
its CPU and its GIL with Strava's side of the exchange: Strava is another machine.

Uses only what every version of fake_strava has, so that a baseline checkout's run can
load this file by its path (bench/sync.py's --baseline) and be measured the same way.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any


@contextmanager
def serve_apart(fake: Any) -> Iterator[SimpleNamespace]:
    """Serve `fake` on loopback from a forked process; yields its api_url and oauth_url.
    What the process's fake records (its request log, usage) stays in that process."""
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    process = context.Process(target=_serve, args=(fake, theirs), daemon=True)
    process.start()
    try:
        api_url, oauth_url = ours.recv()
        yield SimpleNamespace(api_url=api_url, oauth_url=oauth_url)
    finally:
        process.terminate()
        process.join()


def _serve(fake: Any, pipe: Connection) -> None:
    from fake_strava import serve

    with serve(fake) as server:
        pipe.send((server.api_url, server.oauth_url))
        try:
            pipe.recv()  # nothing comes: serve until terminated or the parent is gone
        except EOFError:
            pass
