"""Write the seed corpus and the dictionaries: fuzz/corpus/<target>/ and fuzz/dict/<target>.dict.

The seeds are docs/protocol.md's examples (in both codecs) and RFC 5769's vectors (see
`targets.seed_inputs`); the dictionaries hold the tokens libFuzzer should splice in. Run from anywhere:
`.venv/bin/python fuzz/make_corpus.py`. It rewrites each target's folder, so what is there is exactly the
seeds; the fuzzers add what they find to fuzz/work/<target>/, never here.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import targets  # this script's directory is sys.path[0]

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
DICTIONARIES = HERE / "dict"


def main() -> None:
    """Write every target's seeds, one file each."""
    for target, seeds in targets.seed_inputs().items():
        folder = CORPUS / target
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
        sys.stdout.write(f"{folder}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes\n")
    DICTIONARIES.mkdir(exist_ok=True)
    for target, tokens in targets.dictionaries().items():
        path = DICTIONARIES / f"{target}.dict"
        path.write_text("".join(f'"{_escape(token)}"\n' for token in tokens), encoding="ascii")
        sys.stdout.write(f"{path}: {len(tokens)} tokens\n")


def _escape(token: bytes) -> str:
    """A libFuzzer dictionary entry's body: printable ASCII as is, the rest as \\xNN."""
    return "".join(
        chr(byte) if 0x20 <= byte < 0x7F and byte not in b'"\\' else f"\\x{byte:02x}" for byte in token
    )


if __name__ == "__main__":
    main()
