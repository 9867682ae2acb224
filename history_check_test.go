package moonwire_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/router/config"
)

// TestHistoryNeedsItsRedisCommands: a Redis user whose ACL forbids a
// command history needs is a configuration error at start naming
// broker.url and Redis's refusal, not broadcasts failing later; the same
// config without [history] starts.
func TestHistoryNeedsItsRedisCommands(t *testing.T) {
	t.Parallel()
	admin := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:6379"})
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.Ping(ctx).Err(); err != nil {
		t.Skipf("no Redis at 127.0.0.1:6379: %v", err)
	}
	user := fmt.Sprintf("mwcheck%d", time.Now().UnixNano())
	if err := admin.Do(ctx, "ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-evalsha", "-eval").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Do(context.Background(), "ACL", "DELUSER", user).Err() })

	broker := fmt.Sprintf("[broker]\nkind = \"redis\"\nurl = \"redis://%s:pw@127.0.0.1:6379\"\nprefix = \"%s\"\n\n", user, user)
	routes := "[[routes]]\npath = \"/c\"\nscript = \"c.lua\"\n"
	load := func(body string) *config.Config {
		dir := t.TempDir()
		for name, b := range map[string]string{"moonwire.toml": body, "scripts/c.lua": "return {}\n"} {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(b), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cfg, err := config.Load(filepath.Join(dir, "moonwire.toml"))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}

	_, err := moonwire.New(moonwire.Options{Config: load(broker + "[history]\n\"*\" = { size = 10 }\n\n" + routes)})
	if err == nil {
		t.Fatal("started with [history] and a user that may not run EVALSHA")
	}
	for _, want := range []string{"broker.url", "[history] cannot be kept", "EVALSHA", "NOPERM", "xxxxx"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q: %v", want, err)
		}
	}
	if strings.Contains(err.Error(), ":pw@") {
		t.Errorf("the error shows the password: %v", err)
	}

	s, err := moonwire.New(moonwire.Options{Config: load(broker + routes)})
	if err != nil {
		t.Fatalf("without [history]: %v", err)
	}
	_ = s.Close()
}
