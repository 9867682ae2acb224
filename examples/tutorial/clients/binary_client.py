# Tutorial section 3.2.2 "客户端(发送二进制消息)": one text and one binary
# message. Unchanged except for the URL (the tutorial's ws://localhost:8766
# is the /binary route, examples/tutorial/binary.lua) and the call at the
# bottom, which the tutorial left commented out.
#
# Against moonwire it prints:
#   文本响应: 文本响应: 这是文本消息
#   二进制响应: b'hello_binary_response'
import asyncio
import websockets

async def binary_client():
    async with websockets.connect("ws://localhost:8765/binary") as websocket:
        # 发送文本消息
        await websocket.send("这是文本消息")
        text_resp = await websocket.recv()
        print(f"文本响应: {text_resp}")

        # 发送二进制消息(比如图片字节、自定义二进制数据)
        binary_data = b"hello_binary"
        await websocket.send(binary_data)
        binary_resp = await websocket.recv()
        print(f"二进制响应: {binary_resp}")

if __name__ == "__main__":
    asyncio.run(binary_client())
