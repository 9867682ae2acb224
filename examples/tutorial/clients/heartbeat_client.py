# Tutorial section 3.5 "带心跳检测的客户端+服务端", the client half: an
# application-level heartbeat ("ping" every 5 s, "pong" expected within 3 s)
# next to one business message, for a 20-second session. The URL is changed
# (the tutorial's ws://localhost:8769 is the /heartbeat route,
# examples/tutorial/heartbeat.lua) and the call at the bottom, which the
# tutorial left commented out, is made.
#
# Bound: `--seconds N` replaces the tutorial's fixed asyncio.sleep(20)
# (default 20, the tutorial's value), so a test can run it shorter.
#
# Against moonwire it prints (timestamps differ):
#   [...] 客户端收到: 响应: 业务消息1
#   [...] 客户端收到 pong,连接正常        (at about 5, 10 and 15 s)
# The server's protocol pings (every 10 s) are answered by the websockets
# library and print nothing.
import argparse
import asyncio
import websockets
from datetime import datetime

SESSION_SECONDS = 20  # the tutorial's asyncio.sleep(20); see --seconds

# ---------------------- 客户端 ----------------------
async def client_heartbeat(websocket):
    """客户端心跳任务:每5秒发送一次 ping"""
    while True:
        await asyncio.sleep(5)
        if websocket.closed:
            break
        await websocket.send("ping")
        # 等待 pong 响应(超时则断开)
        try:
            resp = await asyncio.wait_for(websocket.recv(), timeout=3)
            if resp == "pong":
                print(f"[{datetime.now()}] 客户端收到 pong,连接正常")
            else:
                raise Exception("非心跳响应")
        except asyncio.TimeoutError:
            print(f"[{datetime.now()}] 心跳超时,关闭连接")
            await websocket.close()
            break

async def heartbeat_client():
    try:
        async with websockets.connect("ws://localhost:8765/heartbeat") as websocket:
            # 启动客户端心跳任务
            heartbeat_task = asyncio.create_task(client_heartbeat(websocket))
            # 发送业务消息
            await websocket.send("业务消息1")
            resp1 = await websocket.recv()
            print(f"[{datetime.now()}] 客户端收到: {resp1}")
            # 等待心跳运行(模拟长连接)
            await asyncio.sleep(SESSION_SECONDS)
            # 取消心跳任务
            heartbeat_task.cancel()
    except Exception as e:
        print(f"客户端异常: {e}")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="tutorial 3.5 heartbeat client")
    parser.add_argument("--seconds", type=float, default=SESSION_SECONDS,
                        help="length of the session (default 20, as in the tutorial)")
    SESSION_SECONDS = parser.parse_args().seconds
    asyncio.run(heartbeat_client())
