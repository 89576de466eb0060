"""Matching of waiting users into one-to-one pairs: a pure, in-memory engine driven by the caller's clock."""

from __future__ import annotations

from vchat.matching.engine import MatchingEngine, Pair, Seeker

__all__ = ["MatchingEngine", "Pair", "Seeker"]
