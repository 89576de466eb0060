"""Coverage-guided fuzzing of the birth dates login providers send, with atheris.

Run from the repository root (see docs/fuzzing.md):
    .venv/bin/python fuzz/fuzz_birth_date.py fuzz/work/birth_date fuzz/corpus/birth_date -max_total_time=600
The check itself is `targets.check_birth_date`, which tests/test_fuzz.py also runs under Hypothesis.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["vchat", "targets"]):
    import targets  # this script's directory is sys.path[0]


def main() -> None:
    """Hand libFuzzer's arguments and the check to atheris, and fuzz until it stops."""
    atheris.Setup(sys.argv, targets.check_birth_date)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
