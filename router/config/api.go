package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// API is the [api] table: the server HTTP API through which a backend
// publishes into rooms. Off unless Listen is set.
type API struct {
	Listen string // host:port; "": no API
	// Keys are the API keys a request may present (Authorization: apikey
	// KEY, or Bearer KEY): those of api.keys followed by those of
	// api.key_file. Each is at least MinAPIKeyLength bytes.
	Keys []string
	// KeyFile is the OS path of api.key_file (resolved like
	// server.tls_cert); "" when not set. Its keys are already in Keys.
	KeyFile string
	// MaxBody bounds a request's body; default 1 MiB (0 when there is no
	// [api] table: the API is off).
	MaxBody int64
}

// MinAPIKeyLength is the shortest API key accepted: 16 characters, so a
// key cannot be guessed online.
const MinAPIKeyLength = 16

// maxKeyFile bounds api.key_file: a file of keys, not a data dump.
const maxKeyFile = 1 << 20

// rawAPI is the schema of [api].
type rawAPI struct {
	Listen  value `toml:"listen"`
	Keys    value `toml:"keys"`
	KeyFile value `toml:"key_file"`
	MaxBody value `toml:"max_body"`
}

// api reads [api].
func (l *loader) api(tree map[string]any, c *Config, p toml.Primitive) {
	var r rawAPI
	if !l.table(tree, "api", p, &r) {
		return // off: the zero API
	}
	c.API = API{MaxBody: 1 << 20}
	a := &c.API
	if l.str("api.listen", r.Listen, &a.Listen) && a.Listen != "" {
		switch err := checkAddr(a.Listen); {
		case err != nil:
			l.fail("api.listen", err)
		case strings.HasSuffix(a.Listen, ":0"):
			// port 0 picks a free port: never the same as another's
		case a.Listen == c.Server.Listen:
			l.errorf("api.listen", "%q is also server.listen; the API needs its own port", a.Listen)
		case a.Listen == c.Admin.Listen:
			l.errorf("api.listen", "%q is also admin.listen; the API needs its own port", a.Listen)
		}
	}
	if a.Listen != "" && !loopback(a.Listen) {
		c.Warnings = append(c.Warnings, fmt.Sprintf("api.listen: %q is not a loopback address: the API speaks plain HTTP, so its keys "+
			"cross the network in the clear; keep it on a private network or behind a TLS-terminating proxy", a.Listen))
	}
	l.positiveSize("api.max_body", r.MaxBody, &a.MaxBody)

	if r.Keys.set {
		list, ok := r.Keys.v.([]any)
		if !ok {
			l.errorf("api.keys", "must be an array of strings, not %s", typeName(r.Keys.v))
		}
		for i, e := range list {
			key := "api.keys[" + strconv.Itoa(i) + "]"
			k, ok := e.(string)
			if !ok {
				l.errorf(key, "must be a string, not %s", typeName(e))
				continue
			}
			if err := checkAPIKey(k); err != nil {
				l.fail(key, err)
				continue
			}
			a.Keys = append(a.Keys, k)
		}
	}
	var file string
	if l.str("api.key_file", r.KeyFile, &file) && file != "" {
		n := len(l.errs)
		a.KeyFile = l.osFile("api.key_file", file)
		if len(l.errs) == n {
			l.keyFile(a)
		}
	}
	if a.Listen != "" && len(a.Keys) == 0 && !l.reported("api.keys", "api.key_file") {
		l.errorf("api.keys", "required when api.listen is set: give at least one key (or api.key_file); the API publishes into every room")
	}
}

// keyFile reads api.key_file: one key per line; blank lines and lines
// starting with # are skipped, spaces around a key are dropped.
func (l *loader) keyFile(a *API) {
	data, err := readBounded(a.KeyFile, maxKeyFile)
	if err != nil {
		l.errs = append(l.errs, &Error{Key: "api.key_file", Msg: fmt.Sprintf("file %s: %v", a.KeyFile, unwrapPath(err)), err: err})
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxKeyFile)
	for line := 1; sc.Scan(); line++ {
		k := strings.TrimSpace(sc.Text())
		if k == "" || strings.HasPrefix(k, "#") {
			continue
		}
		if err := checkAPIKey(k); err != nil {
			// The key itself is never shown: the message names its line.
			l.errorf("api.key_file", "%s line %d: %v", a.KeyFile, line, err)
			continue
		}
		a.Keys = append(a.Keys, k)
	}
	if err := sc.Err(); err != nil {
		l.errorf("api.key_file", "%s: %v", a.KeyFile, err)
	}
}

// readBounded reads a regular file of at most limit bytes.
func readBounded(name string, limit int64) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return data, nil
}

// checkAPIKey refuses a key that is short or that could not travel in an
// Authorization header as one token. The key is never part of the
// message: errors are printed and logged.
func checkAPIKey(k string) error {
	if len(k) < MinAPIKeyLength {
		return fmt.Errorf("a key must be at least %d characters long, got %d", MinAPIKeyLength, len(k))
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("a key must be printable ASCII without spaces (character %d is not)", i+1)
		}
	}
	return nil
}

// reported reports whether an error was recorded for one of keys, or
// below it.
func (l *loader) reported(keys ...string) bool {
	for _, e := range l.errs {
		for _, k := range keys {
			if e.Key == k || strings.HasPrefix(e.Key, k+"[") {
				return true
			}
		}
	}
	return false
}
