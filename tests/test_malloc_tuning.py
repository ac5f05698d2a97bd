"""The C heap keeps freed memory for the next large answer (commhub_lib/runtime/malloc_tuning.py): measured as page
faults in a fresh interpreter, since the setting is process-wide and cannot be undone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parents[1]
# Several large buffers alive at once, then freed, as a 500-row page's text, its bytes and the socket buffer are:
# glibc's default (dynamic) limits hand the freed top of the heap back to the OS, and each round faults it in again.
CHURN = """
import json, resource, sys
from commhub_lib.runtime.malloc_tuning import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def one_round():
    held = [b"x" * 1_500_000 for _ in range(6)]
    del held
one_round()
before = faults()
for _ in range(20):
    one_round()
print(json.dumps({"applied": applied, "faults_per_round": (faults() - before) / 20}))
"""


def churn(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHURN, mode], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True)
    return json.loads(out.stdout)


def test_large_answers_reuse_freed_heap_memory() -> None:
    default = churn("default")
    if default["faults_per_round"] < 200:
        pytest.skip(f"this C library keeps freed memory by itself ({default['faults_per_round']} faults a round)")
    tuned = churn("tuned")
    if tuned["applied"] is False:
        pytest.skip("this C library has no mallopt")
    # 9 MB a round is ~2,200 pages: by default nearly all are faulted in again; tuned, they are reused.
    assert tuned["faults_per_round"] < default["faults_per_round"] / 10, (default, tuned)
