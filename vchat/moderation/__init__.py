"""Moderation: the index of active bans (pure) and the service that issues, lifts and enforces bans."""
