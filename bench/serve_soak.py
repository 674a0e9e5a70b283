"""Soak client for `ferrogpt serve` (standard library only); run by bench/serve_soak.sh.

C concurrent clients, spread over several keys, send requests back to back for D seconds, each
one drawn from a mix: valid streaming and buffered chat completions, invalid requests
(malformed JSON, bad parameters, prompts longer than the context), streams the client closes
after the first token (cancelled), and, since the keys' RPM is set below what the clients ask
for, requests the rate limiter refuses. A client that gets a 429 waits a moment, as a polite
client would.

`run` writes one JSON line per request to --log; `report` reads that log, the server's SQLite
state file and the resident-memory figures, and prints per key the p50/p99 time to first token,
the 5xx count (must be 0), ledger rows vs requests answered 200 (must be equal), and admitted
requests vs what the token bucket allows in every interval (never above).
"""

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import time
import urllib.parse

KINDS = [("stream", 0.45), ("buffered", 0.15), ("invalid", 0.2), ("cancel", 0.2)]


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))]


def invalid_body(model, rng):
    choice = rng.randrange(6)
    if choice == 0:
        return b'{"model": "' + model.encode() + b'", "messages": ['
    bodies = [
        None,
        {"model": model, "messages": []},
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "temperature": 7},
        {"model": model, "messages": [{"role": "user", "content": "word " * 20000}]},
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"x": 1}},
        {"model": model, "messages": [{"role": "robot", "content": "hi"}], "n": 0},
    ]
    return json.dumps(bodies[choice]).encode()


async def one_request(host, port, key, model, kind, rng):
    """Returns a dict describing what happened."""
    if kind == "invalid":
        body = invalid_body(model, rng)
    else:
        request = {
            "model": model,
            "messages": [{"role": "user", "content": f"Tell me about the sea, please ({rng.randrange(10**6)})."}],
            "temperature": 1.0,
            "stream": kind != "buffered",
        }
        # A stream to cancel asks for the rest of the context (the default), so it is still
        # running when the client leaves.
        if kind != "cancel":
            request["max_tokens"] = rng.randrange(8, 40)
        body = json.dumps(request).encode()
    start = time.time()
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    out = {"kind": kind, "key": key, "sent": start, "ttft": None, "status": 0, "error_event": False}
    try:
        writer.write(head + body)
        await writer.drain()
        status_line = await reader.readline()
        out["status"] = int(status_line.split()[1])
        out["answered"] = time.time()
        headers = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()
        out["retry_after"] = float(headers.get("retry-after-ms", "0")) / 1000
        if out["status"] != 200 or kind == "buffered":
            await reader.read()
            return out
        buf = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            buf += chunk
            if out["ttft"] is None and b'"content":"' in buf.replace(b'"content":""', b""):
                out["ttft"] = time.time() - start
                if kind == "cancel":
                    return out  # closing the connection cancels the stream
        # An error event is a data line whose JSON object has a top-level "error" (generated
        # text may well contain the word).
        for line in buf.split(b"\n"):
            if line.startswith(b"data: {") and "error" in json.loads(line[len(b"data: "):]):
                out["error_event"] = True
        return out
    finally:
        writer.close()


async def client(args, key, deadline, rng, log):
    url = urllib.parse.urlparse(args.base_url)
    weights = [w for _, w in KINDS]
    while time.time() < deadline:
        kind = rng.choices([k for k, _ in KINDS], weights)[0]
        try:
            r = await one_request(url.hostname, url.port, key, args.model, kind, rng)
        except (ConnectionError, OSError, ValueError, IndexError) as e:
            r = {"kind": kind, "key": key, "sent": time.time(), "status": -1, "exception": repr(e)}
        log.write(json.dumps(r) + "\n")
        if r["status"] == 429:
            await asyncio.sleep(rng.uniform(0, min(0.5, max(0.05, r.get("retry_after", 0.1)))))


async def run(args):
    keys = args.keys.split(",")
    deadline = time.time() + args.duration
    with open(args.log, "w") as log:
        await asyncio.gather(*(
            client(args, keys[i % len(keys)], deadline, random.Random(i), log) for i in range(args.concurrency)
        ))


def report(args):
    rows = [json.loads(line) for line in open(args.log)]
    keys = args.keys.split(",")
    db = sqlite3.connect(args.state)
    key_ids = dict(db.execute("SELECT name, id FROM keys"))
    names = args.names.split(",")
    ledger = dict(db.execute("SELECT key_id, COUNT(*) FROM ledger GROUP BY key_id"))
    open_rows = db.execute("SELECT COUNT(*) FROM ledger WHERE outcome = 'open'").fetchone()[0]
    outcomes = dict(db.execute("SELECT outcome, COUNT(*) FROM ledger GROUP BY outcome"))
    rpm = args.rpm
    failures = []
    print(f"{len(rows)} requests from {args.concurrency} clients on {len(keys)} keys in {args.duration:.0f} s; "
          f"RPM limit {rpm} per key")
    by_kind = {}
    for r in rows:
        by_kind.setdefault(r["kind"], {}).setdefault(r["status"], 0)
        by_kind[r["kind"]][r["status"]] += 1
    for kind, counts in sorted(by_kind.items()):
        print(f"  {kind:<9} " + "  ".join(f"HTTP {s}: {n}" for s, n in sorted(counts.items())))
    fives = sum(1 for r in rows if r["status"] >= 500 or r["status"] < 0 or r.get("error_event"))
    print(f"5xx, connection errors or error events: {fives}  (must be 0)")
    if fives:
        failures.append("server errors")
    print(f"ledger outcomes: {outcomes}; rows still open after shutdown: {open_rows} (must be 0)")
    if open_rows:
        failures.append("open ledger rows")
    print(f"{'key':<8} {'TTFT p50':>10} {'TTFT p99':>10} {'answered 200':>13} {'ledger rows':>12} "
          f"{'most admitted in 60 s':>22} {'bucket allows':>14} {'worst excess':>13}")
    for key, name in zip(keys, names):
        mine = [r for r in rows if r["key"] == key]
        ttfts = [r["ttft"] for r in mine if r.get("ttft") is not None]
        admitted = sorted(r["answered"] for r in mine if r["status"] == 200)
        rows_in_ledger = ledger.get(key_ids[name], 0)
        # A token bucket of capacity C refilling C per 60 s admits at most C + C * dt / 60 requests
        # in any interval of length dt; +1 s of slack for when the client saw the answer. The
        # worst interval [i, k] maximises (k - i + 1) - C - C * (t_k - t_i + 1) / 60, found in one
        # pass by keeping the best i so far.
        worst_excess, most_in_minute = float("-inf"), 0
        best_start = float("-inf")
        j = 0
        for k, t in enumerate(admitted):
            best_start = max(best_start, -k + rpm * t / 60.0)
            worst_excess = max(worst_excess, k + 1 - rpm * t / 60.0 + best_start - rpm - rpm / 60.0)
            while admitted[j] < t - 60:
                j += 1
            most_in_minute = max(most_in_minute, k - j + 1)
        print(f"{name:<8} {percentile(ttfts, 50) * 1000:8.0f}ms {percentile(ttfts, 99) * 1000:8.0f}ms "
              f"{len(admitted):>13} {rows_in_ledger:>12} {most_in_minute:>22} {2 * rpm:>14} {worst_excess:>13.1f}")
        if rows_in_ledger != len(admitted):
            failures.append(f"{name}: {rows_in_ledger} ledger rows for {len(admitted)} admitted requests")
        if admitted and worst_excess > 0:
            failures.append(f"{name}: admitted above the limit")
    print(f"server resident memory: {args.rss_start} kB at start, {args.rss_end} kB at the end")
    if failures:
        print("FAILED: " + "; ".join(failures))
        sys.exit(1)
    print("ok")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--base-url", required=True)
    r.add_argument("--model", required=True)
    r.add_argument("--keys", required=True, help="comma-separated secrets")
    r.add_argument("--duration", type=float, required=True)
    r.add_argument("--concurrency", type=int, default=64)
    r.add_argument("--log", required=True)
    q = sub.add_parser("report")
    q.add_argument("--log", required=True)
    q.add_argument("--keys", required=True)
    q.add_argument("--names", required=True, help="the keys' names, in the same order")
    q.add_argument("--state", required=True)
    q.add_argument("--rpm", type=int, required=True)
    q.add_argument("--duration", type=float, required=True)
    q.add_argument("--concurrency", type=int, default=64)
    q.add_argument("--rss-start", required=True)
    q.add_argument("--rss-end", required=True)
    args = p.parse_args()
    if args.cmd == "run":
        asyncio.run(run(args))
    else:
        report(args)


if __name__ == "__main__":
    main()
