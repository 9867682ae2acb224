# Tutorial section 4.2 "客户端代码(monitor_client.py)" of the real-time
# monitoring system: connects with X-Monitor-Token, reports CPU/MEM every
# 5 s as text and as binary, sends "ping" every 8 s, prints every broadcast,
# and reconnects 3 s after any failure. The URL is changed (the tutorial's
# ws://localhost:8772 is the /monitor route, examples/tutorial/monitor.lua).
# examples/tutorial/monitor_client is the same client in Go.
#
# One fix was needed to run it at all: websockets has no
# websockets.exceptions.ConnectionRefusedError (the tutorial's import raises
# ImportError), so only ConnectionClosed is imported and
# `except ConnectionRefusedError` catches the built-in one, raised when no
# server listens. A refused token (HTTP 401) raises InvalidStatusCode and
# lands in the generic "客户端异常" branch.
#
# Bound: `--seconds N` stops the client after N seconds (the tutorial runs
# forever, which is still the default); the connection is closed with 1000.
#
# Against moonwire it prints, besides its own reports, the reports of every
# other monitor client, relayed by the server as
#   收到监控广播: [127.0.0.1:41234] CPU: 42.17%, MEM: 63.05%...
#   收到监控广播: [127.0.0.1:41234] 42.17|63.05...
# (the tutorial's server showed ('127.0.0.1', 41234) and b'42.17|63.05').
# Unchanged tutorial behaviour: 8 s after connecting, client_heartbeat's
# recv() runs while recv_broadcast is already waiting in recv(), which
# websockets forbids, so it prints
#   心跳异常: cannot call recv while another coroutine is already waiting for the next message
# and stops; the "pong" is then printed as a broadcast ("收到监控广播: pong")
# and no further "ping" is sent. The reports keep the connection alive.
import argparse
import asyncio
import websockets
from websockets.exceptions import ConnectionClosed  # seed: import ConnectionRefusedError, ConnectionClosed
import random
from datetime import datetime
import time

# 配置
SERVER_URL = "ws://localhost:8765/monitor"
AUTH_TOKEN = "monitor_token_2025"  # 合法 Token
REPORT_INTERVAL = 5  # 监控数据上报间隔(秒)
HEARTBEAT_INTERVAL = 8  # 客户端心跳间隔(秒)
RECONNECT_INTERVAL = 3  # 断连重连间隔(秒)

# ---------------------- 心跳任务 ----------------------
async def client_heartbeat(websocket):
    """客户端心跳:定期发送 ping"""
    while True:
        await asyncio.sleep(HEARTBEAT_INTERVAL)
        if websocket.closed:
            break
        try:
            await websocket.send("ping")
            resp = await asyncio.wait_for(websocket.recv(), timeout=3)
            if resp == "pong":
                print(f"[{datetime.now()}] 心跳正常")
            else:
                raise Exception("非 pong 响应")
        except asyncio.TimeoutError:
            print(f"[{datetime.now()}] 心跳超时,准备重连")
            await websocket.close()
            break
        except Exception as e:
            print(f"[{datetime.now()}] 心跳异常: {e}")
            break

# ---------------------- 接收广播任务 ----------------------
async def recv_broadcast(websocket):
    """接收服务端广播的监控数据"""
    while True:
        try:
            msg = await websocket.recv()
            print(f"\n[{datetime.now()}] 收到监控广播: {msg}")
        except ConnectionClosed:
            break

# ---------------------- 上报监控数据 ----------------------
async def report_monitor_data(websocket):
    """模拟上报 CPU/内存使用率(文本+二进制)"""
    while True:
        await asyncio.sleep(REPORT_INTERVAL)
        if websocket.closed:
            break
        # 模拟监控数据
        cpu_usage = random.uniform(10.0, 80.0)
        mem_usage = random.uniform(20.0, 90.0)
        # 1. 发送文本监控数据
        text_data = f"CPU: {cpu_usage:.2f}%, MEM: {mem_usage:.2f}%"
        await websocket.send(text_data)
        print(f"[{datetime.now()}] 上报文本监控数据: {text_data}")
        # 2. 发送二进制监控数据(模拟序列化的指标)
        binary_data = f"{cpu_usage:.2f}|{mem_usage:.2f}".encode("utf-8")
        await websocket.send(binary_data)
        print(f"[{datetime.now()}] 上报二进制监控数据: {binary_data}")

# ---------------------- 客户端主逻辑(支持重连) ----------------------
async def monitor_client():
    while True:
        try:
            # 建立连接(携带认证 Token)
            async with websockets.connect(
                SERVER_URL,
                extra_headers={"X-Monitor-Token": AUTH_TOKEN}
            ) as websocket:
                print(f"[{datetime.now()}] 成功连接监控服务端")
                # 启动后台任务
                heartbeat_task = asyncio.create_task(client_heartbeat(websocket))
                broadcast_task = asyncio.create_task(recv_broadcast(websocket))
                report_task = asyncio.create_task(report_monitor_data(websocket))
                # 等待任务完成(或连接断开)
                await asyncio.gather(heartbeat_task, broadcast_task, report_task)
        except ConnectionRefusedError:
            print(f"[{datetime.now()}] 连接被拒绝(服务端未启动/Token 错误)")
        except ConnectionClosed:
            print(f"[{datetime.now()}] 连接断开")
        except Exception as e:
            print(f"[{datetime.now()}] 客户端异常: {e}")
        # 断连后重连
        print(f"[{datetime.now()}] {RECONNECT_INTERVAL}秒后尝试重连...")
        await asyncio.sleep(RECONNECT_INTERVAL)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="tutorial 4.2 monitor client")
    parser.add_argument("--seconds", type=float, default=None,
                        help="stop after this many seconds (default: run forever, as in the tutorial)")
    args = parser.parse_args()
    if args.seconds is None:
        asyncio.run(monitor_client())
    else:
        try:
            asyncio.run(asyncio.wait_for(monitor_client(), args.seconds))
        except asyncio.TimeoutError:
            pass
