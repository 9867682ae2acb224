// Package ui is the operator dashboard's web page: HTML, CSS and
// JavaScript embedded in the binary, served by package admin. It knows
// nothing of the server: the page reads the JSON feed admin serves.
package ui

import "embed"

// FS holds index.html, dashboard.js and dashboard.css.
//
//go:embed index.html dashboard.js dashboard.css
var FS embed.FS
