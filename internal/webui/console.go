package webui

import "embed"

// Console holds the development console's page and its assets:
// console.html, console.js and console.css. The page loads the other two
// from /_console/ and the route list from /_console/routes.json, which the
// server provides.
//
//go:embed console.html console.js console.css
var Console embed.FS
