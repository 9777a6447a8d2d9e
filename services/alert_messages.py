"""How an operator alert is worded for its receiver: Slack, Discord, ntfy or any JSON
receiver (decided by ALERT_WEBHOOK_FORMAT, else by the URL). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MESSAGE_MAX = 1900  # Discord refuses content over 2,000 characters

SLACK, DISCORD, NTFY, GENERIC = "slack", "discord", "ntfy", "generic"


def receiver_format(url: str, setting: str | None = None) -> str:
    """How the receiver wants its JSON: ALERT_WEBHOOK_FORMAT when set, else by the URL
    (Slack's and Discord's webhook hosts or paths, an ntfy server), else generic."""
    if setting:
        return setting
    parts = urlsplit(url)
    host, path = (parts.hostname or "").lower(), parts.path
    if host == "hooks.slack.com" or path.startswith("/services/"):
        return SLACK
    if host in ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com"):
        return DISCORD
    if path.startswith("/api/webhooks/"):  # Discord's path, on a compatible relay
        return DISCORD
    if host == "ntfy.sh" or host.startswith("ntfy."):
        return NTFY
    return GENERIC


@dataclass(frozen=True)
class Message:
    """One message to the receiver: about one kind of alert, one or several subjects."""

    kind: str  # an alert kind, `<kind>_cleared`, or `digest`
    subjects: tuple[str, ...]
    title: str
    lines: tuple[str, ...]
    alert_ids: tuple[int, ...] = ()
    cleared: bool = False

    @property
    def text(self) -> str:
        text = "\n".join((self.title, *self.lines))
        return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"


def request_for(fmt: str, url: str, message: Message) -> tuple[str, dict[str, Any]]:
    """The URL to POST to and the JSON body, as the receiver's format wants them: Slack
    `{"text"}`, Discord `{"content"}`, ntfy's JSON publishing `{"topic", "title",
    "message"}` (to the server's root, the topic being the URL's path), anything else
    `{"text", "kind", "subject"}`."""
    if fmt == SLACK:
        return url, {"text": message.text}
    if fmt == DISCORD:
        return url, {"content": message.text}
    if fmt == NTFY:
        parts = urlsplit(url)
        topic = parts.path.strip("/")
        root = urlunsplit((parts.scheme, parts.netloc, "/", "", ""))
        body = "\n".join(message.lines) or message.title
        return root, {"topic": topic, "title": message.title, "message": body[:MESSAGE_MAX]}
    return url, {"text": message.text, "kind": message.kind, "subject": ",".join(message.subjects)}
