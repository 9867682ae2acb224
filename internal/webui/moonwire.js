// moonwire.js: the browser client (being written).
