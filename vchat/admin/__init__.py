"""The admin API, the moderator page, and the figures they show."""
