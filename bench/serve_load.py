"""Streaming load generator for `ferrogpt serve` (standard library only).

Each of C clients sends chat requests back to back over its own keep-alive connection until
R requests are done in total, and reads the SSE stream. Prints JSON with aggregate generated
tokens/s (completion tokens from the usage chunk / wall time), requests/s, and p50/p99 time to
first token (first content chunk).

Usage: python3 bench/serve_load.py --base-url URL --key sk-... --model ALIAS -c 32 -n 64
"""

import argparse
import asyncio
import json
import time
import urllib.parse


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


async def read_response(reader):
    """Yields (status, headers) then body chunks of a chunked or sized HTTP/1.1 response."""
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    yield status, headers
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readline()
            yield data
    else:
        yield await reader.readexactly(int(headers.get("content-length", "0")))


async def one_request(reader, writer, host, args, i):
    body = json.dumps({
        "model": args.model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"Tell me a story about the sea, number {i}."},
        ],
        "max_tokens": args.max_tokens,
        "temperature": 1.0,
        "seed": i,
        "stream": True,
        "stream_options": {"include_usage": True},
    }).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {args.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    start = time.perf_counter()
    writer.write(head + body)
    await writer.drain()
    ttft, tokens, buf = None, 0, b""
    parts = read_response(reader)
    status, _ = await parts.__anext__()
    async for chunk in parts:
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            for line in event.split(b"\n"):
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                msg = json.loads(line[6:])
                if status != 200 or "error" in msg:
                    raise RuntimeError(f"request {i} failed: {msg}")
                if msg.get("usage"):
                    tokens = msg["usage"]["completion_tokens"]
                for c in msg.get("choices", []):
                    if ttft is None and c.get("delta", {}).get("content"):
                        ttft = time.perf_counter() - start
    if status != 200:
        raise RuntimeError(f"request {i}: HTTP {status}: {buf[:300]!r}")
    return ttft, tokens, time.perf_counter() - start


async def client(args, queue, results):
    url = urllib.parse.urlparse(args.base_url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    host = f"{url.hostname}:{url.port}"
    try:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            results.append(await one_request(reader, writer, host, args, i))
    finally:
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("-c", "--concurrency", type=int, default=1)
    p.add_argument("-n", "--requests", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=64)
    args = p.parse_args()
    queue = asyncio.Queue()
    for i in range(args.requests):
        queue.put_nowait(i)
    results = []
    start = time.perf_counter()
    await asyncio.wait_for(
        asyncio.gather(*(client(args, queue, results) for _ in range(args.concurrency))), timeout=600
    )
    wall = time.perf_counter() - start
    tokens = sum(r[1] for r in results)
    ttfts = [r[0] for r in results if r[0] is not None]
    print(json.dumps({
        "concurrency": args.concurrency,
        "requests": len(results),
        "completion_tokens": tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(tokens / wall, 2),
        "requests_per_s": round(len(results) / wall, 3),
        "ttft_p50_s": round(percentile(ttfts, 50), 4),
        "ttft_p99_s": round(percentile(ttfts, 99), 4),
    }))


if __name__ == "__main__":
    asyncio.run(main())
