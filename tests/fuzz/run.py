"""Coverage-guided fuzzing with atheris, bounded in time: ``python -m tests.fuzz.run TARGET --seconds N``.

Seeds come from ``tests/fuzz/corpus/TARGET/`` (read only); what libFuzzer finds goes to a temporary
directory (``--keep DIR`` to keep it; copy an input worth keeping into the corpus by hand). A crash
(any exception other than a teegate error) stops the run with a non-zero status and leaves
``crash-*`` in that directory (its path is printed); known ones are kept in ``tests/fuzz/crashes/``. Prints executions and crashes found.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["teegate"]):
    from tests.fuzz.harnesses import TARGETS, run_one

CORPUS = Path(__file__).resolve().parent / "corpus"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(TARGETS))
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--keep", type=Path, help="directory for new corpus entries (default: temporary)")
    args, rest = parser.parse_known_args()
    seeds = CORPUS / args.target
    scratch = args.keep or Path(tempfile.mkdtemp(prefix=f"teegate-fuzz-{args.target}-"))
    scratch.mkdir(parents=True, exist_ok=True)
    name = args.target

    def one(data: bytes) -> None:
        run_one(name, data)

    argv = [
        sys.argv[0],
        str(scratch),
        str(seeds),
        f"-max_total_time={args.seconds}",
        "-max_len=65536",
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
        f"-artifact_prefix={scratch}/",
        *rest,
    ]
    print(f"fuzz {name}: seeds {seeds}, new inputs and crashes in {scratch}", file=sys.stderr, flush=True)
    atheris.Setup(argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
