"""`python -m benchmarks run [--smoke] [--out DIR] [--systems strata,kafka]`: see harness.py;
`python -m benchmarks readme`: see readme.py."""

import sys

from benchmarks.harness import main

if __name__ == "__main__":
    sys.exit(main())
