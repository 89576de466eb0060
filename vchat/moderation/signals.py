"""Per-session behaviour signals for automatic moderation: counts and a user's own recent chat lines.

Pure Python, time passed in. A session's `Signals` live in memory only, while the session does, and hold
nothing of anyone else: no partner's id, no match id, no partner's text. Only when a rule acts are they
summarised into the store (a flag's figures, or a chat-abuse ban's own last messages).
"""

from __future__ import annotations

import re
from collections import deque
from typing import Literal

RECENT_MESSAGES = 20
"""How many of a session's own last chat messages are kept (the most a chat-abuse ban may carry)."""
MATCH_WINDOW = 50
"""How many of a session's last ended matches the match signals cover."""

Event = Literal["match_started", "match_ended", "chat", "reported", "none"]

LINK = re.compile(r"(?i)https?://|\bwww\.|[a-z0-9]\.(?:com|net|org|io|ru|xyz|me|ly|gg|co|info|biz)\b")
"""What counts as a link in a chat message (linear in its length: no part of it can backtrack far)."""


def _key(text: str) -> str:
    """Texts that differ only in case and surrounding spaces count as the same message."""
    return text.strip().casefold()


class Signals:
    """One session's rolling behaviour signals, updated by events; read by the moderation rules.

    `event` is the last event recorded, so that a rule can skip at once when the event cannot concern it.
    """

    __slots__ = (
        "_counts",
        "_window",
        "chats",
        "event",
        "last_text",
        "links",
        "match_seconds",
        "matches",
        "matches_started",
        "partner_left",
        "recent",
        "repeats",
        "reports",
    )

    def __init__(self) -> None:
        self.event: Event = "none"
        self.matches_started = 0
        self.matches = 0  # matches ended, over the session
        # The last MATCH_WINDOW ended matches: (seconds it lasted, whether the partner was the one who left).
        self._window: deque[tuple[float, bool]] = deque(maxlen=MATCH_WINDOW)
        self.match_seconds = 0.0  # total length of the matches in the window
        self.partner_left = 0  # matches in the window that the partner ended
        self.reports = 0  # reports others filed against this user, over the session
        self.chats = 0  # chat messages sent, over the session
        self.links = 0  # of them, those holding a link
        self.last_text = ""  # the message just sent (after a "chat" event)
        self.repeats = 0  # how many of the recent messages are the same as the last one
        self.recent: deque[str] = deque(maxlen=RECENT_MESSAGES)  # this user's own last messages
        # The recent messages, by `_key`: a plain dict, since Counter's __missing__ and __delitem__ are Python
        # calls on every chat message.
        self._counts: dict[str, int] = {}

    # --- events ----------------------------------------------------------------------------------------

    def match_started(self) -> None:
        """The session was matched."""
        self.event = "match_started"
        self.matches_started += 1

    def match_ended(self, seconds: float, partner_left: bool) -> None:
        """A match of `seconds` ended; `partner_left`: the partner ended it (next, stop or leaving)."""
        self.event = "match_ended"
        self.matches += 1
        if len(self._window) == self._window.maxlen:
            old_seconds, old_left = self._window[0]
            self.match_seconds -= old_seconds
            self.partner_left -= old_left
        seconds = max(0.0, seconds)
        self._window.append((seconds, partner_left))
        self.match_seconds += seconds
        self.partner_left += partner_left

    def reported(self) -> None:
        """Another user reported this one."""
        self.event = "reported"
        self.reports += 1

    def chat(self, text: str) -> None:
        """This user sent a chat message."""
        self.event = "chat"
        self.chats += 1
        if LINK.search(text):
            self.links += 1
        counts = self._counts
        if len(self.recent) == self.recent.maxlen:
            evicted = _key(self.recent[0])
            left = counts[evicted] - 1
            if left:
                counts[evicted] = left
            else:
                del counts[evicted]
        self.recent.append(text)
        key = _key(text)
        self.repeats = counts[key] = counts.get(key, 0) + 1
        self.last_text = text

    # --- derived figures ----------------------------------------------------------------------------------

    @property
    def window(self) -> int:
        """How many ended matches the match figures cover (at most MATCH_WINDOW)."""
        return len(self._window)

    def left_within(self, seconds: float) -> int:
        """Matches in the window that the partner ended within `seconds` of their start."""
        return sum(1 for length, left in self._window if left and length <= seconds)

    def average_match_seconds(self) -> float:
        """The average length of the matches in the window (0 with none)."""
        return self.match_seconds / len(self._window) if self._window else 0.0
