#!/usr/bin/env python3
"""CommHub entry point: `python commhub.py serve` (see README)."""

import sys

from commhub_lib.cli import main

if __name__ == "__main__":
    sys.exit(main())
