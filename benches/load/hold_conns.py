#!/usr/bin/env python3
"""Open many idle TLS keep-alive connections to the gateway and hold them.

    hold_conns.py PORT PATH JWT COUNT HOLD_MAX_S

Opens COUNT TLS connections to 127.0.0.1:PORT (at most 200 handshakes in
flight), sends one HTTP/1.1 keep-alive GET with the session JWT on each,
reads the whole response, and keeps the connection open. Then prints
"READY ok=<n> failed=<m>" and holds everything until a SIGTERM arrives or
HOLD_MAX_S pass (bounded). Certificates are not verified
(the client side of this measurement is not under test).
"""
import asyncio, signal, ssl, sys


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
    port, path, jwt, count, hold_max = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sem = asyncio.Semaphore(200)
    conns, failures = [], []
    req = (f"GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\n"
           f"Authorization: Bearer {jwt}\r\n\r\n").encode()

    async def open_one():
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 60)
                writer.write(req)
                await writer.drain()
                status = await asyncio.wait_for(read_response(reader), 60)
                if status != 200:
                    failures.append(f"status {status}")
                conns.append((reader, writer))
            except Exception as e:  # noqa: BLE001
                failures.append(repr(e))

    await asyncio.gather(*(open_one() for _ in range(count)))
    print(f"READY ok={len(conns)} failed={len(failures)} sample={failures[:3]}", flush=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), hold_max)
    except asyncio.TimeoutError:
        pass
    for _, w in conns:
        w.close()
    print("CLOSED", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
