"""The seam between signaling and moderation for reports: what a report holds, and who stores it.

The switchboard files a `Filing` with an `IReportSink`; the moderation service (a layer above) implements it,
so signaling needs nothing of moderation or the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from zope.interface import Interface

from vchat.protocol.messages import ReportReason
from vchat.protocol.session import Identity
from vchat.protocol.snapshot import Image


@dataclass(frozen=True, slots=True)
class Filing:
    """One user's report of another, as the switchboard hands it on."""

    reporter: Identity
    reported: Identity
    reason: ReportReason
    comment: str | None
    snapshot: Image | None = field(repr=False)
    created_at: float


class IReportSink(Interface):
    """Stores reports."""

    def file_report(filing: Filing) -> Deferred[str]:
        """Store `filing`; fires with the new report's id."""
