package redact

import "testing"

func TestURLs(t *testing.T) {
	for _, c := range []struct {
		raw, scheme string
		tokens      bool
		want        string
	}{
		{"redis://:pw@h:6379/0", "", false, "redis://:xxxxx@h:6379/0"},
		{"redis://u:pw@h:6379", "", false, "redis://u:xxxxx@h:6379"},
		{"redis://u@h:6379", "", false, "redis://u@h:6379"},
		{"redis://h:6379", "", false, "redis://h:6379"},
		{"nats://tok@a:4222, b:4222", "nats", true, "nats://xxxxx@a:4222,nats://b:4222"},
		{"nats://u:p@a:4222", "nats", true, "nats://u:xxxxx@a:4222"},
		{"://%zz", "", false, "(unparsable URL)"},
	} {
		if got := URLs(c.raw, c.scheme, c.tokens); got != c.want {
			t.Errorf("URLs(%q) = %q, want %q", c.raw, got, c.want)
		}
	}
}
