"""Coverage-guided fuzzing of the messages nodes read from one another through Redis, with atheris.

Run from the repository root (see docs/fuzzing.md):
    .venv/bin/python fuzz/fuzz_cluster_message.py fuzz/work/cluster_message fuzz/corpus/cluster_message -max_total_time=600
The check itself is `targets.check_cluster_message`, which tests/test_fuzz.py also runs under Hypothesis.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["vchat", "targets"]):
    import targets  # this script's directory is sys.path[0]


def main() -> None:
    """Hand libFuzzer's arguments and the check to atheris, and fuzz until it stops."""
    atheris.Setup(sys.argv, targets.check_cluster_message)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
