#!/usr/bin/env python3
"""Waves of first-time users against the gateway (slow-mint isolation).

    cold_users.py PORT PATH CA_FILE TOKENS_FILE CONCURRENCY DURATION_S OUT_JSON

Each wave opens CONCURRENCY new TLS connections, each sending one GET with
a session JWT never seen before (so the gateway must mint an SMH token),
waits for all of them, and starts the next wave, until DURATION_S elapsed
or the tokens run out (bounded either way). Writes latency stats (ms) to
OUT_JSON.
"""
import asyncio, json, ssl, sys, time


async def one(port: int, path: str, ctx: ssl.SSLContext, jwt: str):
    t0 = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 30)
        req = (f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n"
               f"Authorization: Bearer {jwt}\r\nConnection: close\r\n\r\n")
        writer.write(req.encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    except Exception as e:  # noqa: BLE001
        return (time.perf_counter() - t0) * 1000.0, 0, repr(e)
    return (time.perf_counter() - t0) * 1000.0, status, ""


def pct(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


async def main() -> None:
    port, path, ca, tokens_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    conc, duration, out = int(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
    tokens = [l.strip() for l in open(tokens_file) if l.strip()]
    ctx = ssl.create_default_context(cafile=ca)
    lat, errors, samples = [], 0, []
    start = time.monotonic()
    i = 0
    waves = 0
    while time.monotonic() - start < duration and i + conc <= len(tokens):
        batch = tokens[i:i + conc]
        i += conc
        waves += 1
        for ms, status, err in await asyncio.gather(*(one(port, path, ctx, t) for t in batch)):
            if status == 200:
                lat.append(ms)
            else:
                errors += 1
                if len(samples) < 5:
                    samples.append(f"status={status} {err}")
    res = {
        "waves": waves, "requests": i, "ok": len(lat), "errors": errors, "error_samples": samples,
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
        "min_ms": min(lat) if lat else 0.0, "max_ms": max(lat) if lat else 0.0,
    }
    with open(out, "w") as f:
        json.dump(res, f)
    print(json.dumps(res))


if __name__ == "__main__":
    asyncio.run(main())
