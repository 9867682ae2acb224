# Tutorial section 3.7 "简易聊天室(广播+多客户端)", the client: sends
# "<username> <msg>" for each line typed until "exit", while a background
# task prints every broadcast from the other clients. The URL is changed (the
# tutorial's ws://localhost:8771 is the /chat route,
# examples/tutorial/chat.lua).
#
# Bound / scripting (the tutorial reads input() forever):
#   python3 chat_client.py 用户1                       interactive, as in the tutorial
#   python3 chat_client.py 用户1 --say hi --say bye    send these instead of reading input(),
#                                                      then exit as if "exit" were typed
#   ... --seconds N                                    before exiting, keep receiving
#                                                      broadcasts for N s (default 0)
# Giving --seconds without --say just listens for N seconds. In interactive
# mode end of input counts as "exit". As in the tutorial, input() blocks the
# event loop, so interactively broadcasts show up only after you press Enter.
#
# Against moonwire a listening client prints what the others send, e.g.
#   收到广播: [127.0.0.1:41234] 用户1 hi
# (the tutorial's server showed the address as ('127.0.0.1', 41234)).
import argparse
import asyncio
import websockets

# ---------------------- 聊天室客户端 ----------------------
async def chat_client(username: str, say=None, seconds: float = 0):
    async with websockets.connect("ws://localhost:8765/chat") as websocket:
        # 启动接收消息的任务(后台运行,实时接收广播)
        recv_task = asyncio.create_task(recv_chat_msg(websocket))

        # 控制台输入消息并发送
        lines = iter(say) if say is not None else None
        while True:
            if lines is None:
                try:
                    msg = input(f"{username}> ")
                except EOFError:  # end of input: same as "exit"
                    msg = "exit"
            else:
                msg = next(lines, "exit")  # --say: the scripted lines, then "exit"
            if msg.lower() == "exit":
                break
            await websocket.send(f"{username} {msg}")

        await asyncio.sleep(seconds)  # --seconds: keep receiving before leaving
        # 取消接收任务
        recv_task.cancel()
        await websocket.close()

async def recv_chat_msg(websocket):
    """后台接收广播消息"""
    while True:
        try:
            msg = await websocket.recv()
            print(f"\n收到广播: {msg}")
            print("> ", end="", flush=True)  # 恢复输入提示符
        except websockets.exceptions.ConnectionClosed:
            break

# 运行:
# 2. 启动多个客户端(不同终端运行):
# asyncio.run(chat_client("用户1"))
# asyncio.run(chat_client("用户2"))
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="tutorial 3.7 chat client")
    parser.add_argument("username", nargs="?", default="用户1")
    parser.add_argument("--say", action="append", metavar="MSG",
                        help="send MSG instead of reading input() (repeatable)")
    parser.add_argument("--seconds", type=float, default=0,
                        help="keep receiving broadcasts this long before exiting (default 0)")
    args = parser.parse_args()
    say = args.say
    if say is None and args.seconds > 0:
        say = []  # listen only
    asyncio.run(chat_client(args.username, say, args.seconds))
