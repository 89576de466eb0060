"""Coverage-guided fuzzing of the login cookie a browser sends, with atheris.

Run from the repository root (see docs/fuzzing.md):
    .venv/bin/python fuzz/fuzz_login_cookie.py fuzz/work/login_cookie fuzz/corpus/login_cookie -max_total_time=600
The check itself is `targets.check_login_cookie`, which tests/test_fuzz.py also runs under Hypothesis.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["vchat", "targets"]):
    import targets  # this script's directory is sys.path[0]


def main() -> None:
    """Hand libFuzzer's arguments and the check to atheris, and fuzz until it stops."""
    atheris.Setup(sys.argv, targets.check_login_cookie)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
