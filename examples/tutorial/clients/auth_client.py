# Tutorial section 3.6 "基于 Token 的认证", the client: connects with the
# X-Auth-Token header, a valid token ("token_123") by default or an invalid
# one ("invalid_token") with --invalid, i.e. the tutorial's
# auth_client(valid_token=True) and auth_client(valid_token=False). The URL
# is changed (the tutorial's ws://localhost:8770 is the /auth route,
# examples/tutorial/auth.lua).
#
# One fix was needed: websockets has no
# websockets.exceptions.ConnectionRefusedError, so the tutorial's except
# clause itself raised AttributeError when the server refused the token.
# A refused handshake raises websockets.exceptions.InvalidStatusCode, which
# is caught instead.
#
# Against moonwire it prints:
#   python3 auth_client.py             客户端收到: 认证通过的响应: 认证后的业务消息
#   python3 auth_client.py --invalid   连接被拒绝: server rejected WebSocket connection: HTTP 401
import argparse
import asyncio
import websockets

# ---------------------- 认证客户端 ----------------------
async def auth_client(valid_token: bool = True):
    # 构造请求头(携带 Token)
    headers = {}
    if valid_token:
        headers["X-Auth-Token"] = "token_123"  # 合法 Token
    else:
        headers["X-Auth-Token"] = "invalid_token"  # 非法 Token

    try:
        async with websockets.connect(
            "ws://localhost:8765/auth",
            extra_headers=headers  # 自定义请求头
        ) as websocket:
            await websocket.send("认证后的业务消息")
            resp = await websocket.recv()
            print(f"客户端收到: {resp}")
    # seed: except websockets.exceptions.ConnectionRefusedError as e:
    except websockets.exceptions.InvalidStatusCode as e:
        print(f"连接被拒绝: {e}")

# 运行:
# 2. 合法 Token 客户端:asyncio.run(auth_client(valid_token=True))
# 3. 非法 Token 客户端:asyncio.run(auth_client(valid_token=False))
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="tutorial 3.6 auth client")
    parser.add_argument("--invalid", action="store_true",
                        help='send "invalid_token" (auth_client(valid_token=False))')
    args = parser.parse_args()
    asyncio.run(auth_client(valid_token=not args.invalid))
