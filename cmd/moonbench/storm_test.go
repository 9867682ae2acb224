//go:build linux

package main

import (
	"strings"
	"testing"
	"time"
)

func TestParseChat(t *testing.T) {
	f, ok := parseChat([]byte(`{"at":1764160000.1,"epoch":"e1","from":"c-1","offset":42,"room":"storm","text":"storm-1-7","type":"message"}`))
	if !ok || !f.hasOff || f.offset != 42 || string(f.epoch) != "e1" || string(f.typ) != "message" || string(f.text) != "storm-1-7" {
		t.Fatalf("message: %+v ok=%v", f, ok)
	}
	f, ok = parseChat([]byte(`{"epoch":"e2","offset":9,"reason":"trimmed","room":"storm","type":"reload"}`))
	if !ok || f.offset != 9 || string(f.reason) != "trimmed" || string(f.typ) != "reload" {
		t.Fatalf("reload: %+v ok=%v", f, ok)
	}
	f, ok = parseChat([]byte(`{"id":"x","members":3,"room":"storm","type":"join"}`))
	if !ok || f.hasOff {
		t.Fatalf("unstamped join: %+v ok=%v", f, ok)
	}
	f, ok = parseChat([]byte(`{"text":"a \"quoted\" one","offset":1e+3}`))
	if !ok || f.offset != 1000 || string(f.text) != `a \"quoted\" one` {
		t.Fatalf("escapes, float offset: %+v ok=%v", f, ok)
	}
	for _, bad := range []string{``, `[]`, `{"offset":`, `{"a":{"b":1}}`, `{"offset":-1}`, `{"type":"x"`} {
		if _, ok := parseChat([]byte(bad)); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

func msg(off uint64, epoch string) chatFields {
	return chatFields{typ: []byte("message"), epoch: []byte(epoch), offset: off, hasOff: true}
}

func TestFollowState(t *testing.T) {
	var s followState
	steps := []struct {
		f    chatFields
		want verdict
		last uint64
	}{
		{msg(10, "e"), vAccept, 10}, // the first: any offset
		{msg(11, "e"), vAccept, 11},
		{msg(11, "e"), vDup, 11},
		{msg(5, "e"), vDup, 11},
		{msg(14, "e"), vGap, 11}, // 12, 13 missing: reconnect with since=11
		{msg(12, "e"), vAccept, 12},
		{chatFields{typ: []byte("join")}, vUnstamped, 12},
		{chatFields{typ: []byte("reload"), epoch: []byte("e"), reason: []byte("trimmed"), offset: 40, hasOff: true}, vReload, 40},
		{msg(41, "e"), vAccept, 41},
		{msg(3, "f"), vEpoch, 3},
		{msg(4, "f"), vAccept, 4},
	}
	for i, st := range steps {
		if v := s.observe(st.f); v != st.want || s.last != st.last {
			t.Fatalf("step %d: verdict %d last %d, want %d last %d", i, v, s.last, st.want, st.last)
		}
	}
	if s.first != 10 || s.dups != 2 || s.gaps != 1 || s.reloads != 1 || s.skipped != 28 || s.epochs != 1 || s.reasons["trimmed"] != 1 {
		t.Fatalf("counters: %+v", s)
	}
	if s.count != 6 {
		t.Fatalf("count %d, want 6", s.count)
	}
	if !strings.Contains(s.firstDup, "offset 11") {
		t.Fatalf("firstDup %q", s.firstDup)
	}
}

func TestPct(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if pct(d, 0.5) != 5 || pct(d, 0.99) != 10 || pct(d, 0) != 1 || pct(nil, 0.5) != 0 {
		t.Fatal(pct(d, 0.5), pct(d, 0.99))
	}
}

func TestParseStormFlags(t *testing.T) {
	var b strings.Builder
	o, err := parseStormFlags([]string{"-brokers", "nats", "-clients", "30", "-rate", "5"}, &b)
	if err != nil || len(o.brokers) != 1 || o.brokers[0] != "nats" || o.clients != 30 || o.rate != 5 {
		t.Fatalf("%+v %v", o, err)
	}
	for _, bad := range [][]string{{"-brokers", "kafka"}, {"-clients", "2"}, {"-rate", "0"}, {"-room", "a/b"}, {"x"}} {
		if _, err := parseStormFlags(bad, &b); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	cfg := stormConfig("/s", 1, 2, "redis", "redis://x", "p", 1000, 2*time.Second)
	for _, want := range []string{`"*" = { size = 1000`, `presence_ttl = "2s"`, `prefix = "p"`, `script = "chat.lua"`, `[store]`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
}
