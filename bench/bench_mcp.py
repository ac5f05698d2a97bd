"""MCP throughput of CommHub against the stack's ceiling, measured in the same run, interleaved.

One run (repetition):
  1. starts a fresh CommHub (`commhub.py serve --port 0 --db <temp>`, rate limits off), registers a user and
     creates one network token per agent (32); starts the ceiling server (/work/shared/bench/ceiling_server.py on
     the hypercorn beside benchlib.VENV_PY, trio worker, as that README says: hypercorn + quart-trio, no MCP,
     no storage);
  2. runs --segments load segments per target, alternating CommHub and ceiling (A B, B A, A B ...) so that noise
     from other jobs on this shared 2-core box hits both about equally. Each segment is one run of the shared
     harness /work/shared/bench/mcp_bench.py with --clients 32 --seconds S --server-pid PID:
       CommHub: its `commhub` adapter (initialize + report_status per agent, send_message i -> i+1 closed loop,
                then get_inbox of every agent to count what arrived), through bench/harness_tokens.py, which only
                hands it one token per agent;
       ceiling: its `raw` adapter (tools/call-shaped POSTs, no handshake);
  3. sums each target's segments (calls/s = ok calls / load seconds; CPU ms per call = server CPU / ok calls),
     prints them, the ratio CommHub / ceiling, and the exact commands; stops both servers.

    /work/venv/bin/python bench/bench_mcp.py                  # one repetition (~80 s)
    /work/venv/bin/python bench/bench_mcp.py \\
        --table bench/results/2026-12-06-final-main-evening/results_mcp_15l.jsonl   # medians of recorded runs
    # a worktree without /work/venv: its own .venv runs the servers and the harness (benchlib falls back to it)
    BENCH_SERVER_PY=$PWD/.venv/bin/python .venv/bin/python bench/bench_mcp.py
    # A/B in one run: the CommHub of another checkout as a third target, segments interleaved (A B C, C B A, ...)
    git archive main | tar -x -C /tmp/main-tree && .venv/bin/python bench/bench_mcp.py --compare-repo /tmp/main-tree

Bounded: --messages per segment, --seconds cap per segment, the harness's own call/hard timeouts and a
subprocess timeout. Loopback only. Both servers are started and stopped here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchlib as bl  # noqa: E402

HARNESS = os.path.join(bl.SHARED_BENCH, "mcp_bench.py")
SHIM = os.path.join(HERE, "harness_tokens.py")


def run_harness(cmd: list[str], seconds: float, server_pid: int) -> tuple[dict | None, int, str, dict]:
    """Run one harness command; returns (its JSON result or None, rc, stdout, CPU use during the whole run)."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl", delete=False) as jf:
        out_path = jf.name
    try:
        win = bl.CpuWindow(server_pid).start()
        p = subprocess.run([*cmd, "--json-out", out_path], capture_output=True, text=True, timeout=seconds + 240)
        cpu = win.stop()
        text = p.stdout + (("\n" + p.stderr[-2000:]) if p.returncode not in (0, 1) and p.stderr else "")
        text += (f"\n  CPU over the whole harness run ({cpu['wall_s']} s): machine {cpu['machine_busy_cores']} cores"
                 f" busy = server {cpu['server_cores']} + harness {cpu['client_cores']} + others {cpu['other_cores']}")
        rows = bl.read_jsonl(out_path)
        return (rows[-1] if rows else None), p.returncode, text, cpu
    finally:
        os.unlink(out_path)


def segment_numbers(res: dict | None, cpu: dict) -> dict:
    r = res or {}
    d = r.get("delivery") or {}
    return {"ok": r.get("ok") or 0, "attempted": r.get("attempted") or 0, "errors": r.get("errors") or 0,
            "load_s": r.get("load_s") or 0.0, "calls_per_s": r.get("calls_per_s"),
            "p50": bl.dig(r, "lat_ms.p50"), "p95": bl.dig(r, "lat_ms.p95"), "p99": bl.dig(r, "lat_ms.p99"),
            "max": bl.dig(r, "lat_ms.max"), "srv_cpu_s": bl.dig(r, "server.cpu_s_load") or 0.0,
            "harness_cpu_s": r.get("client_cpu_s") or 0.0, "rss_peak_kb": bl.dig(r, "server.rss_peak_kb") or 0,
            "lost": d.get("lost"), "delivered": d.get("delivered"), "other_cores": cpu.get("other_cores"),
            "aborted": r.get("aborted")}


def aggregate(segs: list[dict]) -> dict:
    ok = sum(s["ok"] for s in segs)
    load_s = sum(s["load_s"] for s in segs)
    srv = sum(s["srv_cpu_s"] for s in segs)
    har = sum(s["harness_cpu_s"] for s in segs)
    lost = [s["lost"] for s in segs]
    return {"ok": ok, "attempted": sum(s["attempted"] for s in segs), "errors": sum(s["errors"] for s in segs),
            "load_s": round(load_s, 2), "calls_per_s": round(ok / load_s, 1) if load_s else None,
            "p50": bl.median([s["p50"] for s in segs]), "p95": bl.median([s["p95"] for s in segs]),
            "p99": bl.median([s["p99"] for s in segs]), "max": max((s["max"] or 0) for s in segs),
            "srv_cpu_ms_per_call": round(srv * 1000 / ok, 3) if ok else None,
            "harness_cpu_ms_per_call": round(har * 1000 / ok, 3) if ok else None,
            "rss_peak_mib": round(max(s["rss_peak_kb"] for s in segs) / 1024, 1),
            "lost": None if any(x is None for x in lost) else sum(lost),
            "other_cores": bl.median([s["other_cores"] for s in segs]),
            "segments_calls_per_s": [s["calls_per_s"] for s in segs]}


def commhub_cmd(a: argparse.Namespace, srv: bl.Server) -> list[str]:
    """The harness command that drives one CommHub (a user registered, one network token per agent)."""
    reg = bl.register(srv.base)
    tokens = bl.create_tokens(srv.base, reg["token"], reg["network_id"], a.clients)
    tok_file = os.path.join(srv.tmpdir.name, "tokens.txt")
    with open(tok_file, "w") as f:
        f.write("\n".join(tokens) + "\n")
    return [bl.VENV_PY, SHIM, tok_file, "commhub", srv.base + "/mcp", "--clients", str(a.clients),
            "--messages", str(a.messages), "--seconds", str(a.seconds), "--server-pid", str(srv.pid)]


def ratios(c: dict, e: dict) -> tuple[float | None, float | None]:
    """(calls/s ratio, server CPU per call ratio) of a CommHub's aggregate against the ceiling's."""
    ratio = round(c["calls_per_s"] / e["calls_per_s"], 3) if c["calls_per_s"] and e["calls_per_s"] else None
    cpu_ratio = (round(c["srv_cpu_ms_per_call"] / e["srv_cpu_ms_per_call"], 2)
                 if c["srv_cpu_ms_per_call"] and e["srv_cpu_ms_per_call"] else None)
    return ratio, cpu_ratio


def one_rep(a: argparse.Namespace, rep: int) -> dict:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load_start = os.getloadavg()
    ch = bl.start_commhub(a.server_arg)
    ce = base = None
    try:
        ce = bl.start_ceiling()
        cmds = {
            "commhub": commhub_cmd(a, ch),
            "ceiling": [bl.VENV_PY, HARNESS, "raw", ce.base + "/mcp", "--clients", str(a.clients),
                        "--messages", str(a.ceiling_messages), "--seconds", str(a.seconds),
                        "--server-pid", str(ce.pid)],
        }
        pids = {"commhub": ch.pid, "ceiling": ce.pid}
        print(f"$ {ch.command()}\n$ {ce.command()}", flush=True)
        if a.compare_repo:
            base = bl.start_commhub(a.server_arg, repo=Path(a.compare_repo))
            cmds["base"] = commhub_cmd(a, base)
            pids["base"] = base.pid
            print(f"$ {base.command()}", flush=True)
        time.sleep(1.0)
        segs: dict[str, list[dict]] = {name: [] for name in cmds}
        raw: list[dict] = []
        for seg in range(a.segments):
            order = list(cmds) if seg % 2 == 0 else list(reversed(cmds))
            for name in order:
                print(f"--- rep {rep} segment {seg + 1}/{a.segments}: {name}\n$ {' '.join(cmds[name])}", flush=True)
                res, rc, text, cpu = run_harness(cmds[name], a.seconds, pids[name])
                print(text.rstrip(), flush=True)
                segs[name].append(segment_numbers(res, cpu))
                raw.append({"target": name, "segment": seg, "rc": rc, "result": res, "cpu": cpu})
        rss_end = bl.proc_status_kb(ch.pid)
    finally:
        stops = {"commhub": ch.stop(), "ceiling": ce.stop() if ce else None, "base": base.stop() if base else None}
    agg = {k: aggregate(v) for k, v in segs.items()}
    c, e = agg["commhub"], agg["ceiling"]
    ratio, cpu_ratio = ratios(c, e)
    rec = {"bench": "mcp", "date_utc": started, "rep": rep, "clients": a.clients, "segments": a.segments,
           "messages_per_segment": a.messages, "ceiling_messages_per_segment": a.ceiling_messages,
           "seconds_per_segment": a.seconds, "command": bl.this_command(), "commhub_server_cmd": ch.command(),
           "ceiling_server_cmd": ce.command() if ce else None,
           "harness_cmds": {k: " ".join(v) for k, v in cmds.items()},
           "commhub": c, "ceiling": e, "ratio_calls_per_s": ratio, "ratio_server_cpu_per_call": cpu_ratio,
           "commhub_rss_end_kb": rss_end, "stops": stops,
           "loadavg_start": [round(x, 2) for x in load_start],
           "loadavg_end": [round(x, 2) for x in os.getloadavg()], "raw": raw}
    if "base" in agg:
        rec["base"] = agg["base"]
        rec["base_repo"] = a.compare_repo
        rec["base_ratio_calls_per_s"], rec["base_ratio_server_cpu_per_call"] = ratios(agg["base"], e)
        print(f"=== rep {rep}: base ({a.compare_repo}) {agg['base']['calls_per_s']} calls/s, "
              f"{agg['base']['srv_cpu_ms_per_call']} ms CPU/call, lost {agg['base']['lost']} | ratio "
              f"{rec['base_ratio_calls_per_s']} | server CPU/call ratio {rec['base_ratio_server_cpu_per_call']}",
              flush=True)
    print(f"=== rep {rep}: commhub {c['calls_per_s']} calls/s (segments {c['segments_calls_per_s']}; p50 {c['p50']} ms,"
          f" p99 {c['p99']} ms; server {c['srv_cpu_ms_per_call']} ms CPU/call; lost {c['lost']}) | ceiling "
          f"{e['calls_per_s']} calls/s (segments {e['segments_calls_per_s']}; p50 {e['p50']} ms; "
          f"{e['srv_cpu_ms_per_call']} ms CPU/call) | ratio {ratio} | server CPU/call ratio {cpu_ratio}", flush=True)
    return rec


COLS = [("calls/s", "calls_per_s"), ("p50 ms", "p50"), ("p95 ms", "p95"), ("p99 ms", "p99"),
        ("server CPU ms/call", "srv_cpu_ms_per_call"), ("harness CPU ms/call", "harness_cpu_ms_per_call"),
        ("peak RSS MiB", "rss_peak_mib"), ("other jobs, cores busy", "other_cores")]


def table(recs: list[dict]) -> str:
    recs = [r for r in recs if r.get("bench") == "mcp"]
    if not recs:
        return "(no runs)"
    lines = [f"runs: {len(recs)}; clients {sorted({r['clients'] for r in recs})}; segments per target per run "
             f"{sorted({r['segments'] for r in recs})} x {sorted({r['seconds_per_segment'] for r in recs})} s",
             "| target | " + " | ".join(c for c, _ in COLS) + " | ok calls (per run) | errors | lost |",
             "|---" * (len(COLS) + 4) + "|"]
    for target in ("commhub", "base", "ceiling"):
        if not all(target in r for r in recs):
            continue
        vals = [bl.median([r[target][k] for r in recs]) for _, k in COLS]
        oks = "/".join(str(r[target]["ok"]) for r in recs)
        errs = "/".join(str(r[target]["errors"]) for r in recs)
        lost = "/".join(str(r[target]["lost"]) if r[target]["lost"] is not None else "n/a" for r in recs)
        lines.append(f"| {target} | " + " | ".join(str(v) for v in vals) + f" | {oks} | {errs} | {lost} |")
    ratios = [r["ratio_calls_per_s"] for r in recs]
    cpu = [r["ratio_server_cpu_per_call"] for r in recs]
    lines += ["",
              f"CommHub / ceiling calls/s, per run: {ratios} -> median {bl.median(ratios)}",
              f"CommHub / ceiling server CPU per call, per run: {cpu} -> median {bl.median(cpu)}",
              *([f"base / ceiling calls/s, per run: {[r['base_ratio_calls_per_s'] for r in recs]} -> median "
                 f"{bl.median([r['base_ratio_calls_per_s'] for r in recs])}",
                 f"base / ceiling server CPU per call, per run: {[r['base_ratio_server_cpu_per_call'] for r in recs]}"
                 f" -> median {bl.median([r['base_ratio_server_cpu_per_call'] for r in recs])}",
                 "CommHub / base server CPU per call, per run: "
                 + str([round(r['commhub']['srv_cpu_ms_per_call'] / r['base']['srv_cpu_ms_per_call'], 3)
                        for r in recs])]
                if all("base" in r for r in recs) else []),
              "load average (1 min) at start/end, per run: "
              + str([(r.get("loadavg_start") or [None])[0] for r in recs]) + " / "
              + str([(r.get("loadavg_end") or [None])[0] for r in recs]),
              "calls/s per run, commhub: " + str([r["commhub"]["calls_per_s"] for r in recs])
              + "; ceiling: " + str([r["ceiling"]["calls_per_s"] for r in recs])]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--clients", type=int, default=32, help="agents = clients (one token each)")
    p.add_argument("--segments", type=int, default=3, help="load segments per target, interleaved")
    p.add_argument("--seconds", type=float, default=10.0, help="time cap of each segment")
    p.add_argument("--messages", type=int, default=6000,
                   help="CommHub sends per segment (<= clients*480: get_inbox returns at most 500 items)")
    p.add_argument("--ceiling-messages", type=int, default=10000, help="ceiling calls per segment")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--compare-repo", metavar="CHECKOUT",
                   help="also run the CommHub of another checkout (e.g. `git archive` of main) as a third target, "
                        "its segments interleaved with the other two: an A/B in one run")
    p.add_argument("--server-arg", action="append", default=[], help="extra argument for `commhub.py serve`")
    p.add_argument("--json-out", default=bl.results_path("mcp-throughput", "results_mcp.jsonl"))
    p.add_argument("--table", metavar="JSONL", help="only print the medians table of recorded runs")
    a = p.parse_args()
    if a.table:
        print(table(bl.read_jsonl(a.table)))
        return 0
    if a.messages > a.clients * 480:
        p.error("--messages too large: each agent's inbox must fit one get_inbox page (500)")
    print(f"# {bl.this_command()}", flush=True)
    recs = []
    for rep in range(1, a.reps + 1):
        rec = one_rep(a, rep)
        recs.append(rec)
        if a.json_out:
            bl.append_jsonl(a.json_out, rec)
    print(table(recs))
    bad = [r for r in recs if not r["commhub"]["ok"] or r["commhub"]["lost"] or not r["ceiling"]["ok"]
           or r["commhub"]["errors"] or ("base" in r and (r["base"]["lost"] or r["base"]["errors"]))]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
