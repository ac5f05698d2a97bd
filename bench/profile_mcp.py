"""Where the server's CPU goes on MCP send_message: py-spy samples a fresh CommHub while the shared harness
drives it (32 clients), then prints the inclusive share of the functions that matter.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_mcp.py --out /tmp/commhub-profile.txt
    .venv/bin/python bench/profile_mcp.py --summary /tmp/commhub-profile.txt   # re-read a profile

The raw file is py-spy's collapsed-stack format (one `frame;frame;... count` line per stack), usable with
flamegraph.pl or speedscope. Loopback only; the server is started and stopped here.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as bl  # noqa: E402

HERE = Path(__file__).resolve().parent
# Functions of interest (substring of "function (file)"), in the order they are printed.
WATCH = ("post_mcp (protocol.py)", "authenticate (common.py)", "authenticate (accounts.py)",
         "check (ratelimit.py)", "single_network (networks.py)", "_session_for (protocol.py)",
         "_dispatch (protocol.py)", "_tools_call (protocol.py)", "model_validate (main.py)",
         "call_tool (tools.py)", "resolve_caller (sessions.py)", "send_message (messaging.py)",
         "require_known_alias (sessions.py)", "is_online (sessions.py)", "record_event (hub.py)",
         "publish (hub.py)", "insert_message (messages.py)", "write (db.py)", "query (db.py)",
         "dumps (__init__.py)", "_json (protocol.py)", "log_request (app.py)", "log_access (app.py)",
         "drain_request_body (app.py)", "process_response (app.py)", "preprocess_request (app.py)",
         "WriteLockWatch.run (common.py)", "cancellable (push.py)",
         "handle (callHandler)", "full_dispatch_request (app.py)", "handle_request (app.py)",
         "get_data (wrappers", "collect (gc", "run (_run.py)")


def summarize(path: str, top: int = 40) -> None:
    """Print the watched functions' inclusive share, then the top self-time functions."""
    incl: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in open(path):
        stack, _, n_text = line.rstrip().rpartition(" ")
        if not stack:
            continue
        n = int(n_text)
        frames = [_name(f) for f in stack.split(";")]
        if frames[-1].startswith("WorkerThread._work "):
            idle += n  # trio's cached worker thread waiting for work: py-spy samples it, it uses no CPU
            continue
        total += n
        for name in set(frames):
            incl[name] += n
        self_time[frames[-1]] += n
    print(f"{total} samples (not counted: {idle} of an idle worker thread); inclusive share of the request path:")
    for watch in WATCH:
        hits = [(name, n) for name, n in incl.items() if watch in name]
        if hits:
            name, n = max(hits, key=lambda h: h[1])
            print(f"  {100 * n / total:5.1f} %  {name}")
    print("top self time:")
    for name, n in self_time.most_common(top):
        print(f"  {100 * n / total:5.1f} %  {name}")


def _name(frame: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (file.py)'."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else func


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/tmp/commhub-profile.txt")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--summary", metavar="RAW", help="only summarize an existing profile")
    a = ap.parse_args()
    if a.summary:
        summarize(a.summary)
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    srv = bl.start_commhub(python=sys.executable)
    tmp = tempfile.mkdtemp(prefix="commhub-prof-")
    try:
        reg = bl.register(srv.base)
        tokens = bl.create_tokens(srv.base, reg["token"], reg["network_id"], a.clients)
        tok_file = os.path.join(tmp, "tokens.txt")
        Path(tok_file).write_text("\n".join(tokens) + "\n")
        spy = subprocess.Popen([py_spy, "record", "-r", str(a.rate), "-f", "raw", "-o", a.out, "--pid",
                                str(srv.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        harness = [sys.executable, str(HERE / "harness_tokens.py"), tok_file, "commhub", srv.base + "/mcp",
                   "--clients", str(a.clients), "--messages", str(min(480, int(a.seconds * 20)) * a.clients),
                   "--seconds", str(a.seconds)]
        print("$", " ".join(harness), flush=True)
        out = subprocess.run(harness, capture_output=True, text=True, timeout=a.seconds + 240)
        print(out.stdout[-800:])
        spy.send_signal(2)
        spy.wait(30)
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    summarize(a.out)


if __name__ == "__main__":
    main()
