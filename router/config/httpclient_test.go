package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestHTTPClientConfig(t *testing.T) {
	t.Parallel()
	c, _ := mustLoad(t, minimal)
	if !reflect.DeepEqual(c.HTTP, DefaultHTTPClient) {
		t.Errorf("defaults: %+v, want %+v", c.HTTP, DefaultHTTPClient)
	}
	c, _ = mustLoad(t, `
[http]
allow = ["API.example.com", "*.internal.example", "127.0.0.1:8080", "[::1]:*"]
timeout = "2s"
max_response = "64KiB"
max_request_body = "1KiB"
concurrency = 10
per_host = 4
`+apiRoutes)
	want := HTTPClient{Allow: []string{"api.example.com", "*.internal.example", "127.0.0.1:8080", "[::1]:*"},
		Timeout: 2 * time.Second, MaxResponse: 64 << 10, MaxRequestBody: 1 << 10, Concurrency: 10, PerHost: 4}
	if !reflect.DeepEqual(c.HTTP, want) {
		t.Errorf("got %+v\nwant %+v", c.HTTP, want)
	}
}

func TestHTTPClientConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ body, key, msg string }{
		{`allow = "x.com"`, "http.allow", "must be an array"},
		{`allow = [5]`, "http.allow[0]", "must be a string"},
		{`allow = ["http://x.com/"]`, "http.allow[0]", "not a URL"},
		{`allow = ["x.com:99999"]`, "http.allow[0]", "bad port"},
		{`allow = ["*.10.0.0.1"]`, "http.allow[0]", "a wildcard needs a name"},
		{`allow = ["bad host"]`, "http.allow[0]", "bad host name"},
		{`timeout = "0s"`, "http.timeout", "greater than 0"},
		{`max_response = 0`, "http.max_response", "greater than 0"},
		{`concurrency = 0`, "http.concurrency", "greater than 0"},
		{`per_host = -1`, "http.per_host", "negative"},
		{`retries = 3`, "http.retries", ""},
	} {
		es, _ := loadErrors(t, "[http]\n"+tc.body+"\n"+apiRoutes)
		found := false
		for _, e := range es {
			found = found || (e.Key == tc.key && strings.Contains(e.Msg, tc.msg))
		}
		if !found {
			t.Errorf("%s: errors %v, want %s: ...%s...", tc.body, es, tc.key, tc.msg)
		}
	}
}
