"""Run the shared harness (/work/shared/bench/mcp_bench.py) with one CommHub token per agent.

CommHub token secrets are random (ntok_...), so the harness's `--token-template 'tok-{i}'` cannot name
them. This wrapper loads the harness by path, points the `commhub` adapter's `token(o, i)` at line i of
TOKENS_FILE (one token per line), and then runs the harness's own main() with the remaining arguments:

    python bench/harness_tokens.py TOKENS_FILE commhub http://127.0.0.1:PORT/mcp --clients 32 ...

Nothing else in the harness is changed.
"""

from __future__ import annotations

import importlib.util
import os
import sys

HARNESS = os.path.join(os.environ.get("BENCH_HARNESS_DIR", "/work/shared/bench"), "mcp_bench.py")


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        tokens = [line.strip() for line in f if line.strip()]
    spec = importlib.util.spec_from_file_location("mcp_bench", HARNESS)
    assert spec and spec.loader
    harness = importlib.util.module_from_spec(spec)
    sys.modules["mcp_bench"] = harness
    spec.loader.exec_module(harness)

    def token(o, i: int) -> str:
        return tokens[i]

    harness.ADAPTERS["commhub"]["token"] = token
    return harness.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
