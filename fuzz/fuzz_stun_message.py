"""Coverage-guided fuzzing of the STUN message parser and encoder, with atheris.

Run from the repository root (see docs/fuzzing.md):
    .venv/bin/python fuzz/fuzz_stun_message.py fuzz/work/stun_message fuzz/corpus/stun_message -max_total_time=600
The check itself is `targets.check_stun_message`, which tests/test_fuzz.py also runs under Hypothesis.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["vchat", "targets"]):
    import targets  # this script's directory is sys.path[0]


def main() -> None:
    """Hand libFuzzer's arguments and the check to atheris, and fuzz until it stops."""
    atheris.Setup(sys.argv, targets.check_stun_message)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
