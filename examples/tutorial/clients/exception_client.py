# Tutorial section 3.4 "完整异常处理": exception_client sends a message, waits
# one second and sends another, catching the websockets exceptions. The URL
# is changed (the tutorial's ws://localhost:8768 is the /exceptions route,
# examples/tutorial/exceptions.lua) and the call at the bottom, which the
# tutorial left commented out, is made.
#
# One fix was needed to run it at all: websockets has no
# websockets.exceptions.TimeoutError (the tutorial's import raises
# ImportError), so TimeoutError is left out of the import and the
# `except TimeoutError` below catches the built-in TimeoutError, which is
# what an open timeout raises (asyncio.TimeoutError is the same class since
# Python 3.11).
#
# Against moonwire the server answers both messages and never drops the
# connection, so the client prints NOTHING and exits 0. To see the
# ConnectionClosed branch, stop the server (Ctrl-C) during the one-second
# sleep: moonwire closes every connection with 1001 "going away" and the
# client prints
#   错误:连接已关闭 - 1001 | going away
import asyncio
import websockets
from websockets.exceptions import (
    ConnectionClosed,
    InvalidURI,
    # TimeoutError,  # seed: not in websockets.exceptions (ImportError)
)

async def exception_client():
    try:
        # 测试1:无效 URI(故意写错)
        # async with websockets.connect("ws://localhost:8765/invalid") as websocket:
        # 测试2:正常连接后强制断开
        async with websockets.connect("ws://localhost:8765/exceptions", timeout=5) as websocket:
            await websocket.send("测试消息")
            # 模拟服务端断开后继续发送
            await asyncio.sleep(1)
            await websocket.send("断开后发送的消息")  # 触发 ConnectionClosed
    except InvalidURI as e:
        print(f"错误:无效的 URI - {e}")
    except TimeoutError as e:
        print(f"错误:连接超时 - {e}")
    except ConnectionClosed as e:
        print(f"错误:连接已关闭 - {e.code} | {e.reason}")
    except Exception as e:
        print(f"通用错误: {e}")

if __name__ == "__main__":
    asyncio.run(exception_client())
