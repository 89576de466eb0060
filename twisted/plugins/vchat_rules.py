"""vchat's built-in automatic moderation rules, found by `twisted.plugin.getPlugins(IModerationRule)` as any
third-party rule is (docs/moderation.md)."""

from vchat.moderation.rules import Links, Patterns, QuickLeaves, RepeatedMessage, Reports

quick_leaves = QuickLeaves()
repeated_message = RepeatedMessage()
links = Links()
patterns = Patterns()
reports = Reports()
