"""The application's push subscription at Strava: create, show, delete (the
`flask --app api.index strava-webhook ...` commands). One per application; Strava
validates the callback (GET /api/strava/webhook) while creating, so the service must be
deployed, with STRAVA_WEBHOOK_VERIFY_TOKEN set, before `create`."""

from __future__ import annotations

from typing import Any

import models
from services.calls import Runtime
from services.events import strava_for_subscriptions
from services.planning import webhook_health
from services.strava import StravaError

CALLBACK_PATH = "/api/strava/webhook"


class SubscriptionError(Exception):
    """What stops a subscription command, in words for the operator."""


def callback_url(runtime: Runtime) -> str:
    base = runtime.settings.public_base_url
    if not base:
        raise SubscriptionError("PUBLIC_BASE_URL must be set (the deployed service's URL)")
    return base.rstrip("/") + CALLBACK_PATH


def _require(runtime: Runtime) -> None:
    settings = runtime.settings
    if not settings.strava_client_id or not settings.strava_client_secret:
        raise SubscriptionError("STRAVA_CLIENT_ID and STRAVA_CLIENT_SECRET must be set")


def create(runtime: Runtime) -> dict[str, Any]:
    """Subscribe (Strava calls the callback to validate) and store the id. A subscription
    Strava already has for this callback is adopted; one for another callback is not."""
    _require(runtime)
    if not runtime.settings.strava_webhook_verify_token:
        raise SubscriptionError("STRAVA_WEBHOOK_VERIFY_TOKEN must be set (here and deployed)")
    url = callback_url(runtime)
    with strava_for_subscriptions(runtime, timeout_s=30) as strava:
        try:
            listed = strava.list_push_subscriptions()
            existing = [s for s in listed if isinstance(s.get("id"), int)]
            if existing:
                ours = [s for s in existing if s.get("callback_url") == url]
                if not ours:
                    raise SubscriptionError(
                        f"Strava already has subscription {existing[0]['id']} for"
                        f" {existing[0].get('callback_url')}; delete it first"
                        " (strava-webhook delete)"
                    )
                subscription_id, adopted = int(ours[0]["id"]), True
            else:
                subscription_id = strava.create_push_subscription(
                    callback_url=url, verify_token=runtime.settings.strava_webhook_verify_token
                )
                adopted = False
        except StravaError as exc:
            raise SubscriptionError(f"Strava refused: {exc.message}") from None
    with runtime.db.connection() as conn:
        models.webhooks.save_push_subscription(
            conn, subscription_id=subscription_id, callback_url=url, now=runtime.clock()
        )
    return {"subscription_id": subscription_id, "callback_url": url, "adopted": adopted}


def show(runtime: Runtime) -> dict[str, Any]:
    """The stored subscription, Strava's list, and whether polling steps back."""
    _require(runtime)
    with strava_for_subscriptions(runtime) as strava:
        try:
            listed = strava.list_push_subscriptions()
        except StravaError as exc:
            raise SubscriptionError(f"Strava refused: {exc.message}") from None
    now = runtime.clock()
    with runtime.db.connection() as conn:
        stored = models.webhooks.read_push_subscription(conn)
        if stored is not None:
            ids = {s.get("id") for s in listed}
            models.webhooks.confirm_push_subscription(
                conn, listed=stored["subscription_id"] in ids, now=now
            )
            stored = models.webhooks.read_push_subscription(conn)
        health = webhook_health(conn, runtime.settings, now)
    return {
        "stored": _jsonable(stored),
        "at_strava": [{k: s.get(k) for k in ("id", "callback_url", "created_at")} for s in listed],
        "health": health.as_dict(),
    }


def delete(runtime: Runtime) -> dict[str, Any]:
    """Unsubscribe at Strava (the stored id, else the one Strava lists) and forget it."""
    _require(runtime)
    with runtime.db.connection() as conn:
        stored = models.webhooks.read_push_subscription(conn)
    with strava_for_subscriptions(runtime) as strava:
        try:
            if stored is not None:
                ids = [int(stored["subscription_id"])]
            else:
                ids = [int(s["id"]) for s in strava.list_push_subscriptions() if "id" in s]
            for subscription_id in ids:
                strava.delete_push_subscription(subscription_id)
        except StravaError as exc:
            raise SubscriptionError(f"Strava refused: {exc.message}") from None
    with runtime.db.connection() as conn:
        models.webhooks.delete_push_subscription(conn)
    return {"deleted": ids}


def _jsonable(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}
