// echo_server.js: the echo server a Node developer writes with the ws
// library (Debian's node-ws), for moonbench's echo scenario as a reference
// point:
//
//   NODE_PATH=/usr/share/nodejs node cmd/moonbench/reference/echo_server.js 127.0.0.1 8767
//   moonbench -scenario echo -url ws://127.0.0.1:8767/echo -pid ...
'use strict';
const { WebSocketServer } = require('ws');

const [host, port] = process.argv.slice(2);
const wss = new WebSocketServer({ host, port: Number(port), perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
wss.on('listening', () => console.log(`listening ${host}:${port}`));
