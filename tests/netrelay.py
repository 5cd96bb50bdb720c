"""A TCP relay that adds latency: what `tc netem delay` would do, where the kernel has no netem.

    python tests/netrelay.py --delay 0.1 LISTEN_HOST:PORT=TARGET_HOST:PORT [...]

Every chunk read from one side is written to the other `--delay` seconds later, in order, in
both directions: a connection through it sees 2 x delay more on every round trip. Used by
tests/test_netfaults.py inside a network namespace of the test's own; packet loss and
partitions there are nftables rules on the namespace's link.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time


async def _carry(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 delay: float) -> None:
    """Copies reader to writer, each chunk `delay` seconds after it arrived."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def write() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not data:
                break
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    writing = asyncio.ensure_future(write())
    try:
        while True:
            data = await reader.read(65536)
            await queue.put((time.monotonic() + delay, data))
            if not data:
                break
        await writing
    except OSError:
        writing.cancel()
    finally:
        writer.close()


async def _relay(listen: tuple[str, int], target: tuple[str, int], delay: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_carry(reader, up_writer, delay), _carry(up_reader, writer, delay),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, *listen)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--delay", type=float, required=True, help="seconds added each way")
    ap.add_argument("routes", nargs="+", help="LISTEN_HOST:PORT=TARGET_HOST:PORT")
    a = ap.parse_args()

    async def run() -> None:
        await asyncio.gather(*(_relay(_address(listen), _address(target), a.delay)
                               for listen, _, target in (r.partition("=") for r in a.routes)))
    asyncio.run(run())


if __name__ == "__main__":
    main()
