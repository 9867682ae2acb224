package config

import (
	"strings"
	"testing"
	"time"
)

func TestHistoryRules(t *testing.T) {
	c, _ := mustLoad(t, `
[history]
"chat:*" = { size = 50, ttl = "10m" }
"chat:vip" = { size = 500 }
"*" = { ttl = "1m" }

[[routes]]
path = "/x"
script = "echo.lua"
`)
	for room, want := range map[string]struct {
		size int
		ttl  time.Duration
	}{
		"chat:vip":   {500, DefaultHistoryTTL},
		"chat:lobby": {50, 10 * time.Minute},
		"news":       {DefaultHistorySize, time.Minute},
	} {
		if size, ttl := c.HistoryFor(room); size != want.size || ttl != want.ttl {
			t.Errorf("%s: size %d ttl %s, want %d %s", room, size, ttl, want.size, want.ttl)
		}
	}
	none, _ := mustLoad(t, "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\n")
	if size, _ := none.HistoryFor("chat:vip"); size != 0 {
		t.Fatal("history without [history]")
	}
}

func TestHistoryRuleErrors(t *testing.T) {
	route := "[[routes]]\npath = \"/x\"\nscript = \"echo.lua\"\n"
	for body, want := range map[string]string{
		"history = 3\n":                         "history: must be a table of room patterns",
		"[history]\n\"a\" = 3\n":                "history.a: must be a table like",
		"[history]\n\"a[\" = { size = 1 }\n":    `history."a[": is not a room name or pattern`,
		"[history]\n\"a\" = { size = 0 }\n":     "history.a.size: must be an integer from 1 to 10000, not 0",
		"[history]\n\"a\" = { size = 20000 }\n": "history.a.size: must be an integer from 1 to 10000",
		"[history]\n\"a\" = { ttl = \"0s\" }\n": "history.a.ttl: must be greater than 0",
		"[history]\n\"a\" = { sise = 3 }\n":     "history.a.sise: unknown key",
	} {
		errs, _ := loadErrors(t, body+route)
		if !strings.Contains(errs.Error(), want) {
			t.Errorf("%q: got %v, want %q", body, errs, want)
		}
	}
}
