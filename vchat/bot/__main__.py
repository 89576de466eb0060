"""`python -m vchat.bot`: the same as the `vchat-bot` command."""

from __future__ import annotations

from vchat.bot.cli import main

if __name__ == "__main__":
    main()
