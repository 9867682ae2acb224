# Tutorial section 3.3 "主动关闭连接与状态检测": close_client sends "close",
# the server closes the connection with 1000 "客户端请求关闭". Unchanged except
# for the URL (the tutorial's ws://localhost:8767 is the /close route,
# examples/tutorial/close.lua) and the call at the bottom, which the
# tutorial left commented out.
#
# Against moonwire it prints:
#   初始连接状态: 开启
#   发送关闭指令后状态: 关闭
import asyncio
import websockets

async def close_client():
    async with websockets.connect("ws://localhost:8765/close") as websocket:
        # 检测初始状态
        print(f"初始连接状态: {'关闭' if websocket.closed else '开启'}")
        # 发送关闭指令
        await websocket.send("close")
        # 等待连接关闭(可选)
        await asyncio.sleep(0.1)
        print(f"发送关闭指令后状态: {'关闭' if websocket.closed else '开启'}")

if __name__ == "__main__":
    asyncio.run(close_client())
