#!/usr/bin/env python3
"""Helper for bench/run (standard library only).

    report.py free-port
        a free TCP port on 127.0.0.1
    report.py count DB
        outstanding (unused) invites in an invite-server database
    report.py wrk RESULTS PHASE CONNECTIONS SERVER_PID OUT -- WRK_ARGS...
        runs wrk (whose Lua script prints a "BENCH {json}" line, see lua/report.lua),
        keeps its output in OUT, and appends one record to RESULTS with what the
        server process, wrk and everything else on the machine spent in CPU meanwhile,
        and what the server wrote to disk
    report.py argon2 RESULTS WHEN BINARY SECONDS
        runs examples/argon2_rate and appends its rate, with the other load meanwhile
    report.py fsync RESULTS DIR
        appends the latency of a durable 4 KiB write on DIR's filesystem: appending
        with fsync (a growing file), and overwriting with fdatasync (what a reused
        WAL costs, the least any acknowledged commit can cost); 500 rounds each
    report.py pgbench RESULTS CLIENTS PGBENCH SECONDS URL SCRIPT
        runs pgbench with SCRIPT (-M prepared, -j up to 2) and appends its tx/s
    report.py rss RESULTS WHEN PID
        appends the process's peak resident set (VmHWM) so far
    report.py report RESULTS META [--record DOC]
        prints the Markdown tables with every target marked PASS or MISS; with
        --record also appends them, with the machine description, to DOC.
        Exits 1 when a target is missed.

RESULTS is a JSON-lines file, one record per measurement; META a JSON object
describing the run (written by bench/run).
"""

import json
import os
import re
import resource
import socket
import sqlite3
import statistics
import subprocess
import sys
import time

MIB = 1024 * 1024
TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ sampling


def machine_cpu():
    """(busy, total) CPU seconds of the whole machine, all cores."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    busy = user + nice + system + irq + softirq + steal
    return busy / TCK, (busy + idle + iowait) / TCK


def process_cpu(pid):
    """CPU seconds (user + system, all threads) of a live process, 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def process_io(pid):
    """(bytes the process caused to be written to storage, write syscalls)."""
    out = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, v = line.split(":")
                out[k] = int(v)
    except OSError:
        pass
    return out.get("write_bytes", 0), out.get("syscw", 0)


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def sampled(pid, run):
    """Runs `run()` and returns its result with the CPU and I/O spent meanwhile."""
    b0, t0 = machine_cpu()
    s0, c0, (w0, sc0) = process_cpu(pid), children_cpu(), process_io(pid)
    result = run()
    b1, t1 = machine_cpu()
    s1, c1, (w1, sc1) = process_cpu(pid), children_cpu(), process_io(pid)
    total = (t1 - t0) or 1e-9
    server, child = s1 - s0, c1 - c0
    other = max(0.0, (b1 - b0) - server - child)
    return result, {
        "server_cpu_s": round(server, 3),
        "client_cpu_s": round(child, 3),
        "other_cpu_s": round(other, 3),
        "machine_cpu_s": round(total, 3),
        "other_pct": round(100 * other / total, 1),
        "server_write_bytes": w1 - w0,
        "server_write_calls": sc1 - sc0,
    }


def append(results, record):
    with open(results, "a") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------- commands


def cmd_free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def cmd_count(db):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    (n,) = con.execute("SELECT count(*) FROM invites WHERE used_at IS NULL").fetchone()
    print(n)


def cmd_wrk(results, phase, connections, pid, out, wrk_args):
    def run():
        with open(out, "w") as f:
            return subprocess.run(["wrk", *wrk_args], stdout=f, stderr=subprocess.STDOUT).returncode

    rc, usage = sampled(int(pid), run)
    with open(out) as f:
        text = f.read()
    line = next((l for l in text.splitlines() if l.startswith("BENCH {")), None)
    if rc != 0 or line is None:
        sys.stderr.write(f"wrk failed for {phase} at {connections} connections:\n{text}")
        return 1
    record = {"phase": phase, **json.loads(line[len("BENCH ") :]), **usage}
    record["connections"] = int(connections)
    record["pid"] = int(pid)
    append(results, record)
    print(describe(record))
    return 0


def cmd_pgbench(results, connections, binary, seconds, url, script):
    """pgbench's own rate on the cluster: `script` (one one-row INSERT per
    transaction) from `connections` clients for `seconds`."""
    c = int(connections)
    out = subprocess.run(
        [binary, "-n", "-M", "prepared", "-c", str(c), "-j", str(min(c, 2)), "-T", str(seconds), "-f", script, url],
        capture_output=True, text=True,
    )
    tps = re.search(r"^tps = ([0-9.]+)", out.stdout, re.M)
    lat = re.search(r"^latency average = ([0-9.]+) ms", out.stdout, re.M)
    if out.returncode != 0 or not tps:
        sys.stderr.write(f"pgbench failed at {c} clients:\n{out.stdout}{out.stderr}")
        return 1
    record = {"kind": "pgbench", "connections": c, "tps": float(tps.group(1)),
              "latency_ms": float(lat.group(1)) if lat else None}
    append(results, record)
    print(f"  pgbench  {c:>3} clients  {record['tps']:>10,.0f} tx/s  latency avg {record['latency_ms']} ms")
    return 0


def cmd_argon2(results, when, binary, seconds):
    def run():
        return subprocess.run([binary, seconds], capture_output=True, text=True, check=True).stdout

    out, usage = sampled(os.getpid(), run)
    line = next(l for l in out.splitlines() if l.startswith("argon2_rate "))
    v = dict(kv.split("=") for kv in line.split()[1:])
    record = {
        "kind": "argon2",
        "when": when,
        "hashes": int(v["hashes"]),
        "seconds": float(v["seconds"]),
        "threads": int(v["threads"]),
        "rate": float(v["rate"]),
        "cpu_ms_per_hash": float(v["cpu_ms_per_hash"]),
        "other_pct": usage["other_pct"],
    }
    append(results, record)
    print(f"  {line}  (other load {usage['other_pct']}% of the machine)")


def durable_writes(path, rounds, overwrite):
    """Sorted latencies (s) of writing 4 KiB and syncing it, `rounds` times."""
    block = b"x" * 4096
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    times = []
    try:
        if overwrite:
            # Blocks already allocated and on disk, as in a WAL that SQLite
            # rewrites from its start after each checkpoint.
            os.write(fd, block * rounds)
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        sync = os.fdatasync if overwrite else os.fsync
        for _ in range(rounds):
            t = time.perf_counter()
            os.write(fd, block)
            sync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    return sorted(times)


def cmd_fsync(results, directory):
    path = os.path.join(directory, "fsync-probe")
    grow = durable_writes(path, 500, overwrite=False)
    floor = durable_writes(path, 500, overwrite=True)

    def pct(times, q):
        return round(times[min(len(times) - 1, int(len(times) * q))] * 1e6)

    record = {
        "kind": "fsync",
        "p50_us": pct(grow, 0.5),
        "p99_us": pct(grow, 0.99),
        "floor_p50_us": pct(floor, 0.5),
        "floor_p99_us": pct(floor, 0.99),
        "floor_mean_us": round(statistics.mean(floor) * 1e6),
    }
    append(results, record)
    print(
        f"  append 4 KiB + fsync: p50 {record['p50_us']} µs, p99 {record['p99_us']} µs; "
        f"overwrite 4 KiB + fdatasync (the floor of a durable commit): "
        f"p50 {record['floor_p50_us']} µs, p99 {record['floor_p99_us']} µs, mean {record['floor_mean_us']} µs"
    )


def cmd_rss(results, when, pid):
    with open(f"/proc/{pid}/status") as f:
        hwm = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    append(results, {"kind": "rss", "when": when, "vmhwm_kb": hwm})
    print(f"  server peak RSS (VmHWM) after {when}: {hwm / 1024:.1f} MiB")


# ------------------------------------------------------------------- report


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def rate(r):
    """Successful (2xx/3xx) responses per second."""
    return (r["requests"] - r["non_2xx_3xx"]) / (r["duration_us"] / 1e6)


def errors(r):
    return r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"]


def ms(us):
    return f"{us / 1000:.2f}"


def fmt_rate(x):
    if x is None:
        return "n/a"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def fmt_ratio(x):
    if x is None:
        return "n/a"
    return f"{x:,.0f}×" if x >= 100 else f"{x:.2f}×"


def cpu_per_request_us(r):
    n = r["requests"]
    return f"{r['server_cpu_s'] / n * 1e6:,.0f}" if n else "n/a"


def kib_written_per_request(r):
    n = r["requests"] - r["non_2xx_3xx"]
    return f"{r['server_write_bytes'] / n / 1024:.2f}" if n else "n/a"


def describe(r):
    line = (
        f"  {r['phase']:<11} c={r['connections']:<3} {fmt_rate(rate(r)):>8}/s  "
        f"p50 {ms(r['p50_us'])} ms  p99 {ms(r['p99_us'])} ms  "
        f"errors {errors(r)}  non-2xx/3xx {r['non_2xx_3xx']}  "
        f"server CPU {r['server_cpu_s'] / r['machine_cpu_s'] * 100:.0f}%  "
        f"wrk {r['client_cpu_s'] / r['machine_cpu_s'] * 100:.0f}%  "
        f"other {r['other_pct']:.0f}% of the machine"
    )
    if "status_204" in r:
        line += f"  204s: {r['status_204']} ({r['status_204'] / (r['duration_us'] / 1e6):.1f}/s)"
    return line


def err_cell(r):
    return f"{errors(r)} / {r['non_2xx_3xx']}"


def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "**MISS**")


SUMMED = (
    "requests", "duration_us", "err_connect", "err_read", "err_write", "err_timeout", "non_2xx_3xx",
    "status_204", "status_other", "server_cpu_s", "client_cpu_s", "other_cpu_s", "machine_cpu_s",
    "server_write_bytes", "server_write_calls",
)


def merge(runs):
    """One record from several wrk runs of the same phase and connection count:
    counts, times and CPU summed, the median and mean latency weighted by
    requests (an approximation), the p99 and max the worst of the runs."""
    if len(runs) == 1:
        return runs[0]
    out = dict(runs[0])
    for k in SUMMED:
        if all(k in r for r in runs):
            out[k] = sum(r[k] for r in runs)
    n = out["requests"] or 1
    for k in ("p50_us", "p90_us", "mean_us"):
        if all(k in r for r in runs):
            out[k] = sum(r[k] * r["requests"] for r in runs) / n
    for k in ("p99_us", "max_us"):
        if all(k in r for r in runs):
            out[k] = max(r[k] for r in runs)
    out["other_pct"] = round(100 * out["other_cpu_s"] / (out["machine_cpu_s"] or 1e-9), 1)
    out["slices"] = len(runs)
    return out


def other_load(wrk, *keys):
    """The largest share of other load during the runs named by `keys`."""
    vals = [wrk[k]["other_pct"] for k in keys if k in wrk]
    return f"{max(vals):.0f}%" if vals else "n/a"


def hot_section(wrk, meta):
    """The hot paths' table (Markdown lines) and their targets, as
    (name, measured, ok, other load): the auth check against /health measured
    in the same minute, and the invite page's server CPU per view."""
    def get(phase, c):
        r = wrk.get((phase, c))
        return (r, rate(r)) if r else (None, None)

    out = [
        "",
        "Hot paths on F: `GET /api/auth/check` with a signed-in session cookie (→ 200), against `/health` "
        "measured in the same minute (health, check, check, health, half the time each); and the invite page "
        "(`GET /invite?<token>`, → 200, QR code included) at 8 connections:",
        "",
        "| conn. | /health req/s | auth check/s | check ÷ health | check p50 ms | check p99 ms | errors / non-2xx "
        "| server CPU µs per request (health / check) | other load (health / check) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    targets = []
    for c in meta.get("hot_connections", []):
        (h, hr), (a, ar) = get("hot-health", c), get("auth-check", c)
        x = ar / hr if ar is not None and hr else None
        if h and a:
            out.append(
                f"| {c} | {fmt_rate(hr)} | {fmt_rate(ar)} | {fmt_ratio(x)} | {ms(a['p50_us'])} | {ms(a['p99_us'])} "
                f"| {err_cell(a)} | {cpu_per_request_us(h)} / {cpu_per_request_us(a)} "
                f"| {round(h['other_pct'])}% / {round(a['other_pct'])}% |"
            )
        targets.append((f"auth check ≥ 0.8 × /health, {c} conn.", fmt_ratio(x), None if x is None else x >= 0.8,
                        other_load(wrk, ("auth-check", c), ("hot-health", c))))
        if c == 8:
            targets.append(("auth check p99 < 2 ms at 8 conn.", f"{ms(a['p99_us'])} ms" if a else "n/a",
                            None if not a else a["p99_us"] < 2000, other_load(wrk, ("auth-check", 8))))
    p, pr = get("invite-page", 8)
    if p:
        per_view = p["server_cpu_s"] / p["requests"] * 1e6 if p["requests"] else None
        out += [
            "",
            "| invite page | views/s | p50 ms | p99 ms | errors / non-2xx | server CPU µs per view | other load |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| 8 conn. | {fmt_rate(pr)} | {ms(p['p50_us'])} | {ms(p['p99_us'])} | {err_cell(p)} "
            f"| {cpu_per_request_us(p)} | {round(p['other_pct'])}% |",
        ]
        targets.append(("invite page ≤ 100 µs of server CPU per view",
                        "n/a" if per_view is None else f"{per_view:,.0f} µs",
                        None if per_view is None or p["non_2xx_3xx"] else per_view <= 100, other_load(wrk, ("invite-page", 8))))
    return out, targets


def postgres_section(grouped, rows, conns):
    """The PostgreSQL rows (Markdown lines), their targets and how PostgreSQL
    was run. Two-node phases ran as two wrk processes at once, so their
    rates add up (merging them as one run would halve them)."""
    note = next((r["note"] for r in rows if r.get("kind") == "postgres"), None)
    # pgbench runs twice at each count (before and after the nodes): its
    # rate is their mean, the runs being of equal length.
    runs_at = {}
    for r in rows:
        if r.get("kind") == "pgbench":
            runs_at.setdefault(r["connections"], []).append(r["tps"])
    pgbench = {c: {"tps": sum(t) / len(t)} for c, t in runs_at.items()}
    if not pgbench:
        return [], [], note

    def one(phase, c):
        runs = grouped.get((phase, c))
        return merge(runs) if runs else None

    def summed(phase, c):
        """The nodes' rates added up, each node's runs merged first."""
        runs = grouped.get((phase, c))
        if not runs:
            return None
        if any("pid" not in r for r in runs):
            # Results written before runs carried their pid: one run per node.
            return sum(rate(r) for r in runs)
        by_node = {}
        for r in runs:
            by_node.setdefault(r["pid"], []).append(r)
        return sum(rate(merge(node)) for node in by_node.values())

    def worst_p99(phase, c):
        runs = grouped.get((phase, c))
        return max(r["p99_us"] for r in runs) if runs else None

    out = [
        "",
        "PostgreSQL: minting (`/invites_api`) and `GET /api/auth/check` on one node (P1) and on two nodes at once "
        "(P1 + P2, one database), beside pgbench's one-row INSERT per transaction on the same cluster and beside "
        "SQLite (F), all measured within the same minute at each connection count:",
        "",
        "| conn. | pgbench INSERT tx/s | mint/s, 1 node | ÷ pgbench | mint p99 ms, 1 node | mint/s, 2 nodes | ÷ pgbench "
        "| mint/s, SQLite | auth check/s, 1 node | auth check/s, 2 nodes | auth check/s, SQLite | errors / non-2xx (1 node mint / check) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    targets = []

    def share(x, b):
        return x / b if x is not None and b else None

    for c in conns:
        pb = pgbench.get(c)
        ceiling = pb["tps"] if pb else None
        m1, m2, mf = one("pg1-mint", c), summed("pg2-mint", c), one("pg-f-mint", c)
        a1, a2, af = one("pg1-check", c), summed("pg2-check", c), one("pg-f-check", c)
        r1 = rate(m1) if m1 else None
        p99 = worst_p99("pg1-mint", c)
        out.append(
            f"| {c} | {fmt_rate(ceiling)} | {fmt_rate(r1)} | {fmt_ratio(share(r1, ceiling))} "
            f"| {ms(p99) if p99 is not None else 'n/a'} | {fmt_rate(m2)} | {fmt_ratio(share(m2, ceiling))} "
            f"| {fmt_rate(rate(mf) if mf else None)} | {fmt_rate(rate(a1) if a1 else None)} | {fmt_rate(a2)} "
            f"| {fmt_rate(rate(af) if af else None)} | {err_cell(m1) if m1 else 'n/a'} / {err_cell(a1) if a1 else 'n/a'} |"
        )
        for label, x in (("1 node", share(r1, ceiling)), ("2 nodes", share(m2, ceiling))):
            targets.append((f"PostgreSQL mint ≥ 0.5 × pgbench INSERT, {label}, {c} conn.", fmt_ratio(x),
                            None if x is None else x >= 0.5, "—"))
    return out, targets, note


def synapse_section(wrk, rows, conns):
    """Synapse's registration tokens beside invite-server's minting on F at the
    same connection counts (Markdown lines), and how Synapse was run. No
    target: the ratio is recorded, as the issue asks, not judged."""
    note = next((r["note"] for r in rows if r.get("kind") == "synapse"), None)
    out = [
        "",
        "Matrix Synapse minting registration tokens (`POST /_synapse/admin/v1/registration_tokens/new`, body `{}`, "
        "as a server admin → 200), measured in the same round as invite-server's minting on F, at the same connection counts:",
        "",
        "| conn. | Synapse tokens/s | p50 ms | p99 ms | errors / non-2xx | server CPU µs per token "
        "| invite-server mint/s (F) | invite-server ÷ Synapse | other load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in conns:
        r, f = wrk.get(("synapse", c)), wrk.get(("mint-empty", c))
        s_rate, f_rate = (rate(r) if r else None), (rate(f) if f else None)
        x = f_rate / s_rate if f_rate is not None and s_rate else None
        out.append(
            f"| {c} | {fmt_rate(s_rate)} | {ms(r['p50_us']) if r else 'n/a'} | {ms(r['p99_us']) if r else 'n/a'} "
            f"| {err_cell(r) if r else 'n/a'} | {cpu_per_request_us(r) if r else 'n/a'} "
            f"| {fmt_rate(f_rate)} | {fmt_ratio(x)} | {str(round(r['other_pct'])) + '%' if r else 'n/a'} |"
        )
    return out, note


def build(rows, meta):
    """The report as Markdown lines, and whether any target was missed."""
    grouped = {}
    for r in rows:
        if "requests" in r:
            grouped.setdefault((r["phase"], r["connections"]), []).append(r)
    wrk = {k: merge(v) for k, v in grouped.items()}
    hot_lines, hot_targets = hot_section(wrk, meta)
    if meta.get("only") == "hot":
        return finish(hot_lines[1:], hot_targets, [])
    pg_lines, pg_targets, pg_note = postgres_section(grouped, rows, meta["connections"])
    pg_notes = [f"PostgreSQL: {pg_note}"] if pg_note else []
    if meta.get("only") == "postgres":
        return finish(pg_lines[1:], pg_targets, pg_notes)
    synapse_lines, synapse_note = synapse_section(wrk, rows, meta["connections"])
    if meta.get("only") == "synapse":
        return finish(synapse_lines[1:], [], [f"Synapse: {synapse_note}"] if synapse_note else [])
    rss = [r for r in rows if r.get("kind") == "rss"]
    argon = [r for r in rows if r.get("kind") == "argon2"]
    fill = next((r for r in rows if r.get("kind") == "fill"), None)
    prosody = next((r for r in rows if r.get("kind") == "prosody"), None)
    # Measured before and after the mint rounds; the faster one gives the more
    # generous ceiling, so a target called out of reach is out of reach.
    fsync = min((r for r in rows if r.get("kind") == "fsync"),
                key=lambda r: r.get("floor_p50_us", float("inf")), default=None)
    store = {(r["phase"], r["connections"]): r["invites"] for r in rows if r.get("kind") == "store"}
    conns, redeem_conns = meta["connections"], meta["redeem_connections"]

    def get_rate(phase, c):
        r = wrk.get((phase, c))
        return rate(r) if r else None

    def ratio(a, b):
        return a / b if a is not None and b else None

    def cell(phase, c, f):
        r = wrk.get((phase, c))
        return f(r) if r else "n/a"

    def invites(phase, c):
        n = store.get((phase, c))
        return "n/a" if n is None else f"{n:,}"

    out = [
        "Server F, minting (`GET /invites_api?key=…` → 201) on a store that started empty, "
        "beside `/health` measured just before it:",
        "",
    ]
    out.append(
        "| conn. | /health req/s | /health p99 ms | invites in F at start | mint/s | mint ÷ health | mint p50 ms | mint p99 ms "
        "| mint errors / non-2xx | server CPU µs per request (health / mint) | other load (health / mint) |"
    )
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in conns:
        out.append(
            f"| {c} | {fmt_rate(get_rate('health', c))} | {cell('health', c, lambda r: ms(r['p99_us']))} "
            f"| {invites('mint-empty', c)} "
            f"| {fmt_rate(get_rate('mint-empty', c))} "
            f"| {fmt_ratio(ratio(get_rate('mint-empty', c), get_rate('health', c)))} "
            f"| {cell('mint-empty', c, lambda r: ms(r['p50_us']))} | {cell('mint-empty', c, lambda r: ms(r['p99_us']))} "
            f"| {cell('mint-empty', c, err_cell)} "
            f"| {cell('health', c, cpu_per_request_us)} / {cell('mint-empty', c, cpu_per_request_us)} "
            f"| {cell('health', c, lambda r: str(round(r['other_pct'])) + '%')} / "
            f"{cell('mint-empty', c, lambda r: str(round(r['other_pct'])) + '%')} |"
        )
    out += [
        "",
        f"Server M, minting on a store filled to {meta['fill']:,} outstanding invites, measured right after F:",
        "",
    ]
    out.append(
        "| conn. | invites in M at start | mint/s | M ÷ F | p50 ms | p99 ms | errors / non-2xx "
        "| server KiB written to disk per mint (F / M) | server CPU µs per mint (F / M) | other load |"
    )
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in conns:
        out.append(
            f"| {c} | {invites('mint-1m', c)} | {fmt_rate(get_rate('mint-1m', c))} "
            f"| {fmt_ratio(ratio(get_rate('mint-1m', c), get_rate('mint-empty', c)))} "
            f"| {cell('mint-1m', c, lambda r: ms(r['p50_us']))} | {cell('mint-1m', c, lambda r: ms(r['p99_us']))} "
            f"| {cell('mint-1m', c, err_cell)} "
            f"| {cell('mint-empty', c, kib_written_per_request)} / {cell('mint-1m', c, kib_written_per_request)} "
            f"| {cell('mint-empty', c, cpu_per_request_us)} / {cell('mint-1m', c, cpu_per_request_us)} "
            f"| {cell('mint-1m', c, lambda r: str(round(r['other_pct'])) + '%')} |"
        )
    # What the disk allows. Every mint answer waits for a flush of the WAL
    # that began after the request arrived, and the rest of a mint's round
    # trip costs at least what a /health round trip costs. With one connection
    # that makes 1 / (1 / health + flush) a hard bound, however the server is
    # built, short of answering before the data is on disk. With c > 1,
    # c / (c / health + flush) is an estimate, not a bound: part of c / health
    # is waiting for a CPU, which requests parked on a flush leave free.
    # Throughput is set by the mean flush time; the lower of mean and median
    # is used, so the limit printed is never tighter than the data supports.
    floor_us = (
        min(fsync["floor_p50_us"], fsync.get("floor_mean_us", fsync["floor_p50_us"]))
        if fsync and "floor_p50_us" in fsync
        else None
    )
    floor_s = floor_us / 1e6 if floor_us else None

    def mint_ceiling(c):
        h = get_rate("health", c)
        return c / (c / h + floor_s) if h and floor_s else None

    if floor_s:
        out += [
            "",
            f"What one durable flush per answer allows on this disk: a mint's answer waits for an fdatasync of the "
            f"WAL that began after the request arrived ({floor_us} µs for 4 KiB here, the lower of median and mean), on top of "
            "a round trip that costs at least a /health round trip. With 1 connection that caps minting at "
            "1 ÷ (1 ÷ health + flush), whatever the server does. With c connections, c ÷ (c ÷ health + flush) is an "
            "estimate of the same limit rather than a bound, since part of a /health cycle at c connections is "
            "waiting for a CPU that requests parked on a flush would leave free:",
            "",
            "| conn. | /health req/s | flush floor µs | mint ceiling/s | ceiling ÷ health | mint/s | mint ÷ ceiling |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in conns:
            out.append(
                f"| {c} | {fmt_rate(get_rate('health', c))} | {floor_us} | {fmt_rate(mint_ceiling(c))} "
                f"| {fmt_ratio(ratio(mint_ceiling(c), get_rate('health', c)))} | {fmt_rate(get_rate('mint-empty', c))} "
                f"| {fmt_ratio(ratio(get_rate('mint-empty', c), mint_ceiling(c)))} |"
            )
    out += ["", "Prosody's `mod_invites_api`, measured the same way right after M (a fresh Prosody for each run):", ""]
    out.append("| conn. | Prosody mint/s | p50 ms | p99 ms | errors / non-2xx | invite-server (F) ÷ Prosody | other load |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|")
    for c in conns:
        out.append(
            f"| {c} | {fmt_rate(get_rate('prosody', c))} "
            f"| {cell('prosody', c, lambda r: ms(r['p50_us']))} | {cell('prosody', c, lambda r: ms(r['p99_us']))} "
            f"| {cell('prosody', c, err_cell)} "
            f"| {fmt_ratio(ratio(get_rate('mint-empty', c), get_rate('prosody', c)))} "
            f"| {cell('prosody', c, lambda r: str(round(r['other_pct'])) + '%')} |"
        )
    out += synapse_lines

    ceiling = statistics.mean(a["rate"] for a in argon) if argon else None
    out += [
        "",
        "Redemption on M (`POST /api/invite/<token>`, a fresh invite and name per request → 204) against "
        "the Argon2id hashing rate measured alone (mean of the measurements before and after):",
        "",
    ]
    hash_cpu = statistics.mean(a["cpu_ms_per_hash"] for a in argon) if argon else None
    out.append(
        "| conn. | 204/s | other statuses | errors | p50 ms | p99 ms | Argon2 hashes/s alone | redemption ÷ Argon2 "
        "| server CPU ms per redemption | Argon2 CPU ms per hash alone | CPU-normalised ratio | other load |"
    )
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    redeem, redeem_cpu = {}, {}
    for c in redeem_conns:
        r = wrk.get(("redeem", c))
        if not r:
            continue
        redeem[c] = r["status_204"] / (r["duration_us"] / 1e6)
        redeem_cpu[c] = r["server_cpu_s"] * 1000 / r["status_204"] if r["status_204"] else None
        out.append(
            f"| {c} | {redeem[c]:.1f} | {r['status_other']} | {errors(r)} | {ms(r['p50_us'])} | {ms(r['p99_us'])} "
            f"| {fmt_rate(ceiling)} | {fmt_ratio(ratio(redeem[c], ceiling))} "
            f"| {'n/a' if redeem_cpu[c] is None else f'{redeem_cpu[c]:.2f}'} "
            f"| {'n/a' if hash_cpu is None else f'{hash_cpu:.2f}'} | {fmt_ratio(ratio(hash_cpu, redeem_cpu[c]))} "
            f"| {round(r['other_pct'])}% |"
        )
    out += [
        "",
        "The CPU-normalised ratio is the Argon2 CPU cost of one hash alone divided by the server's CPU time per "
        "redemption: the share of the server's work that is the hash itself. Unlike the wall-clock ratio it does "
        "not depend on how much CPU other processes took during either measurement.",
    ]

    def other(*keys):
        return other_load(wrk, *keys)

    argon_other = max((a["other_pct"] for a in argon), default=None)
    def bounded(x, cap, c):
        """The measured ratio, with the disk's limit for it when known."""
        if cap is None:
            return fmt_ratio(x)
        if c == 1:
            return f"{fmt_ratio(x)} (disk allows ≤ {fmt_ratio(cap)})"
        return f"{fmt_ratio(x)} (disk allows ≈ {fmt_ratio(cap)})"

    targets = []
    for c in conns:
        x = ratio(get_rate("mint-empty", c), get_rate("health", c))
        cap = ratio(mint_ceiling(c), get_rate("health", c))
        targets.append((f"mint ≥ 0.5 × /health, {c} conn.", bounded(x, cap, c), None if x is None else x >= 0.5,
                        other(("mint-empty", c), ("health", c))))
    for c in conns:
        x = ratio(get_rate("mint-empty", c), get_rate("prosody", c))
        cap = ratio(mint_ceiling(c), get_rate("prosody", c))
        targets.append((f"mint ≥ 100 × Prosody, {c} conn.", bounded(x, cap, c), None if x is None else x >= 100,
                        other(("mint-empty", c), ("prosody", c))))
    for c in conns:
        x = ratio(get_rate("mint-1m", c), get_rate("mint-empty", c))
        targets.append((f"{meta['fill']:,}-invite store ≥ 0.9 × fresh store, {c} conn.", fmt_ratio(x),
                        None if x is None else x >= 0.9, other(("mint-1m", c), ("mint-empty", c))))
    for phase, what in (("mint-empty", "F, fresh store"), ("mint-1m", f"M, {meta['fill']:,}-invite store")):
        r = wrk.get((phase, 8))
        targets.append(
            (f"mint p99 < 10 ms at 8 conn. ({what})", f"{ms(r['p99_us'])} ms" if r else "n/a",
             None if not r else r["p99_us"] < 10_000, other((phase, 8)))
        )
    for r in rss:
        targets.append(
            (f"server peak RSS < 64 MiB: {r['when']}", f"{r['vmhwm_kb'] / 1024:.1f} MiB",
             r["vmhwm_kb"] * 1024 < 64 * MIB, "—")
        )
    for c in redeem_conns:
        x = ratio(redeem.get(c), ceiling)
        o = other(("redeem", c))
        if argon_other is not None and o != "n/a":
            o = f"{o} (Argon2 alone: up to {argon_other:.0f}%)"
        targets.append((f"redemption ≥ 0.8 × Argon2 alone, {c} conn.", fmt_ratio(x), None if x is None else x >= 0.8, o))
    for c in redeem_conns:
        x = ratio(hash_cpu, redeem_cpu.get(c))
        targets.append((f"(cross-check) the same, CPU-normalised, {c} conn.", fmt_ratio(x), None if x is None else x >= 0.8,
                        "independent of it"))
    out += hot_lines
    targets += hot_targets
    out += pg_lines
    targets += pg_targets

    notes = []
    if fsync:
        notes.append(
            f"Durable 4 KiB writes on the database's filesystem: appending with fsync p50 {fsync['p50_us']} µs, "
            f"p99 {fsync['p99_us']} µs"
            + (
                f"; overwriting with fdatasync p50 {fsync['floor_p50_us']} µs, p99 {fsync['floor_p99_us']} µs"
                + (f", mean {fsync['floor_mean_us']} µs." if "floor_mean_us" in fsync else ".")
                if "floor_p50_us" in fsync
                else "."
            )
        )
    if fill:
        notes.append(
            f"Store filled from {fill['before']:,} to {fill['after']:,} outstanding invites with "
            f"`invites create localhost --count {fill['count']}` in {fill['seconds']:.1f} s "
            f"({fill['count'] / fill['seconds']:,.0f} invites/s), {fill['how']}."
        )
    if prosody:
        notes.append(f"Prosody: {prosody['note']}")
    if synapse_note:
        notes.append(f"Synapse: {synapse_note}")
    notes += pg_notes
    for a in argon:
        notes.append(
            f"Argon2id alone ({a['when']}): {a['hashes']} hashes in {a['seconds']:.1f} s on {a['threads']} threads "
            f"= {a['rate']:.1f}/s, {a['cpu_ms_per_hash']:.2f} ms of CPU per hash "
            f"(`examples/argon2_rate.rs`, m=19 MiB t=2 p=1; other load {a['other_pct']:.0f}%)."
        )
    return finish(out, targets, notes)


def finish(out, targets, notes):
    """`out` with the targets table and the notes after it; and how many
    targets were missed."""
    out = list(out)
    if not targets:
        return out + ([""] + [f"- {n}" for n in notes] if notes else []), 0
    out += ["", "| target | measured | result | other load during the runs compared |", "|---|---:|---|---:|"]
    for name, measured, ok, load in targets:
        if ok is None:
            load = "n/a"
        out.append(f"| {name} | {measured} | {verdict(ok)} | {load} |")
    counted = [t for t in targets if not t[0].startswith("(cross-check)")]
    missed = sum(t[2] is False for t in counted)
    out += ["", f"{missed} of {len(counted)} targets missed (cross-checks not counted)."
            if missed else f"All {len(counted)} targets met (cross-checks not counted)."]
    if notes:
        out.append("")
        out += [f"- {n}" for n in notes]
    return out, missed


def cmd_report(results, meta_path, doc=None):
    with open(meta_path) as f:
        meta = json.load(f)
    lines, missed = build(load(results), meta)
    print("\n".join(lines))
    if doc:
        head = [
            "",
            f"### {meta['date']} · commit `{meta['commit']}`",
            "",
            f"- Machine: {meta['nproc']} cores ({meta['cpu']}), kernel {meta['kernel']}, "
            f"database on {meta['fs']}.",
            f"- Load generator: wrk {meta['wrk_version']} with {meta['wrk_threads']} thread(s), "
            f"{meta['seconds']} s per run, on the same machine as the server.",
            f"- Load average (1/5/15 min) before and after the run: {meta['load_before']} / {meta['load_after']}."
            " \"Other load\" below is the share of the whole machine's CPU time that went to processes"
            " other than the server and wrk during that run.",
        ]
        if meta.get("note"):
            head.append(f"- Note: {meta['note']}")
        head.append("")
        with open(doc, "a") as f:
            f.write("\n".join(head + lines) + "\n")
        print(f"\nrecorded in {doc}")
    return 1 if missed else 0


def main(argv):
    cmd, args = (argv[0], argv[1:]) if argv else ("", [])
    if cmd == "free-port" and not args:
        cmd_free_port()
    elif cmd == "count" and len(args) == 1:
        cmd_count(args[0])
    elif cmd == "wrk" and len(args) >= 6 and args[5] == "--":
        return cmd_wrk(*args[:5], args[6:])
    elif cmd == "pgbench" and len(args) == 6:
        return cmd_pgbench(*args)
    elif cmd == "argon2" and len(args) == 4:
        cmd_argon2(*args)
    elif cmd == "fsync" and len(args) == 2:
        cmd_fsync(*args)
    elif cmd == "rss" and len(args) == 3:
        cmd_rss(*args)
    elif cmd == "report" and len(args) in (2, 4):
        doc = args[3] if len(args) == 4 and args[2] == "--record" else None
        return cmd_report(args[0], args[1], doc)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
