package webui

import _ "embed"

// ClientJS is moonwire.js, the browser client, as served at
// /_moonwire.js.
//
//go:embed moonwire.js
var ClientJS []byte
