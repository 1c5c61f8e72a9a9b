"""`python -m benchmarks.single_node [--quick] [run options]`: Strata alone, with the detailed
disk probe; the same as `python -m benchmarks run --systems strata --disk-probe` (--quick is
--smoke). Kept so the old command still works; the harness does the measuring."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from benchmarks.harness import main as harness_main


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    args = ["--smoke" if a == "--quick" else a for a in args]
    return harness_main(["run", "--systems", "strata", "--disk-probe", *args])


if __name__ == "__main__":
    sys.exit(main())
