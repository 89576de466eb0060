"""Process resources a busy server or load generator needs."""

from __future__ import annotations

import resource


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each connection is a file); returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft
