"""The moderation webhook's options (`--moderation-webhook` and its kin) and the service they describe."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.python import usage

from vchat.moderation.webhook import IVerdictTarget, ModerationWebhook, TreqClient, apply_verdict
from vchat.moderation.webhook_message import webhook_url
from vchat.options import Setting, integer, number, text

WEBHOOK_SETTINGS = (
    Setting(
        "moderation-webhook",
        None,
        webhook_url,
        "http(s) URL each new report and flag is POSTed to, signed, for a verdict [default: off]",
    ),
    Setting(
        "moderation-secret",
        None,
        text,
        "secret the webhook's requests are signed with (keep it in --config) [default: none]",
    ),
    Setting(
        "moderation-webhook-timeout",
        10.0,
        number,
        "seconds one webhook attempt may take, from connecting to the end of the reply",
        0.1,
    ),
    Setting(
        "moderation-webhook-queue",
        1000,
        integer,
        "items waiting for the webhook; when full the oldest is dropped",
        1,
    ),
)


def check_webhook_options(options: Mapping[str, Any]) -> None:
    """`UsageError` unless the webhook options go together."""
    if options["moderation-webhook"] and not options["moderation-secret"]:
        raise usage.UsageError("--moderation-webhook needs --moderation-secret to sign its requests")


def webhook_service(
    options: Mapping[str, Any], reactor: Any, moderation: IVerdictTarget
) -> ModerationWebhook | None:
    """The webhook service the options describe, applying verdicts with `moderation`; None when it is off.

    `reactor` provides TCP (and TLS, for https) and time.
    """
    if not options["moderation-webhook"]:
        return None
    return ModerationWebhook(
        options["moderation-webhook"],
        options["moderation-secret"],
        reactor,
        TreqClient(reactor),
        lambda subject, verdict: apply_verdict(moderation, subject, verdict),
        timeout_s=options["moderation-webhook-timeout"],
        queue_size=options["moderation-webhook-queue"],
    )
