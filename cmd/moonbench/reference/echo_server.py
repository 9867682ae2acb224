# echo_server.py: the echo server a Python developer writes with the
# websockets library (Debian's python3-websockets), for moonbench's echo
# scenario as a reference point:
#
#   /usr/bin/python3 cmd/moonbench/reference/echo_server.py 127.0.0.1 8766
#   moonbench -scenario echo -url ws://127.0.0.1:8766/echo -pid ...
import asyncio
import sys

import websockets


async def echo(ws, path=None):
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass  # the client left mid-reply: nothing to answer


async def main(host, port):
    async with websockets.serve(echo, host, port, max_size=None, compression=None):
        print(f"listening {host}:{port}", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
