# Tutorial section 3.1.2 "客户端代码" (Echo 服务): the echo client, unchanged
# except for the URL (the tutorial's ws://localhost:8765 is now the /echo
# route of moonwire, examples/tutorial/echo.lua).
#
# Against moonwire it prints three lines and exits:
#   客户端收到: Echo: Hello WebSocket!
#   客户端收到: Echo: 测试消息1
#   客户端收到: Echo: 测试消息2
import asyncio
import websockets

async def echo_client():
    # 核心 API:websockets.connect() 连接服务端
    async with websockets.connect("ws://localhost:8765/echo") as websocket:
        # 发送文本消息(核心 API:send())
        await websocket.send("Hello WebSocket!")
        # 接收消息(核心 API:recv())
        response = await websocket.recv()
        print(f"客户端收到: {response}")

        # 主动发送多条消息
        for i in range(2):
            msg = f"测试消息{i+1}"
            await websocket.send(msg)
            res = await websocket.recv()
            print(f"客户端收到: {res}")

# 运行客户端(需先启动服务端)
if __name__ == "__main__":
    asyncio.run(echo_client())
