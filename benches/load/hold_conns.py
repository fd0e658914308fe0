#!/usr/bin/env python3
"""Open many TLS keep-alive connections to the gateway and keep them open.

    hold_conns.py PORT PATH JWT COUNT HOLD_MAX_S REFRESH_S

Opens COUNT TLS connections to 127.0.0.1:PORT (at most 200 handshakes in
flight) and sends one HTTP/1.1 keep-alive GET with the session JWT on each.
The gateway closes a keep-alive connection on which no request starts within
its header-read timeout (15 s), so each connection then sends one more GET
every REFRESH_S seconds (randomly phased; 0 = never): a crowd of connected,
almost idle clients. When all connections have answered their first request
the script prints "READY ok=<n> failed=<m>", and it holds everything until
SIGTERM or HOLD_MAX_S (bounded). Refresh failures are counted and reported
on exit ("CLOSED ... refresh_failed=<k>"). Certificates are not verified (the
client side of this measurement is not under test).
"""
import asyncio, random, signal, ssl, sys


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def main() -> None:
    port, path, jwt, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    hold_max, refresh = float(sys.argv[5]), float(sys.argv[6])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sem = asyncio.Semaphore(200)
    stop = asyncio.Event()
    opened, failures, refresh_failed = [], [], [0]
    all_opened = asyncio.Event()
    pending = [count]
    req = (f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n"
           f"Authorization: Bearer {jwt}\r\n\r\n").encode()

    def one_done():
        pending[0] -= 1
        if pending[0] == 0:
            all_opened.set()

    async def client():
        writer = None
        try:
            async with sem:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 60)
                writer.write(req)
                await writer.drain()
                status = await asyncio.wait_for(read_response(reader), 60)
            if status != 200:
                failures.append(f"status {status}")
            else:
                opened.append(writer)
        except Exception as e:  # noqa: BLE001
            failures.append(repr(e))
            one_done()
            return
        one_done()
        if refresh <= 0:
            await stop.wait()
            writer.close()
            return
        # First refresh at a random point of the period, then every period.
        delay = random.uniform(0, refresh)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), delay)
                break
            except asyncio.TimeoutError:
                pass
            delay = refresh
            try:
                writer.write(req)
                await writer.drain()
                if await asyncio.wait_for(read_response(reader), 30) != 200:
                    refresh_failed[0] += 1
            except Exception:  # noqa: BLE001
                refresh_failed[0] += 1
                break
        writer.close()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(client()) for _ in range(count)]
    await all_opened.wait()
    print(f"READY ok={len(opened)} failed={len(failures)} sample={failures[:3]}", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), hold_max)
    except asyncio.TimeoutError:
        stop.set()
    await asyncio.wait(tasks, timeout=30)
    print(f"CLOSED refresh_failed={refresh_failed[0]}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
