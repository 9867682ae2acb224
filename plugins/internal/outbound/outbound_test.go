package outbound

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHTTPClientEnforcesAllow: the *http.Client handed to other modules
// refuses hosts and redirects outside the allow list and bounds bodies.
func TestHTTPClientEnforcesAllow(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "other") }))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect":
			http.Redirect(w, r, other.URL, http.StatusFound)
		case "/big":
			io.WriteString(w, strings.Repeat("x", 200))
		default:
			io.WriteString(w, "ok")
		}
	}))
	defer srv.Close()
	c, err := New(Options{Allow: []string{strings.TrimPrefix(srv.URL, "http://")}, MaxResponse: 100})
	if err != nil {
		t.Fatal(err)
	}
	hc := c.HTTPClient()
	resp, err := hc.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("got %q", b)
	}
	if _, err := hc.Get(other.URL); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("other host: %v, want ErrNotAllowed", err)
	}
	if _, err := hc.Get(srv.URL + "/redirect"); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("redirect: %v, want ErrNotAllowed", err)
	}
	resp, err = hc.Get(srv.URL + "/big")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("big body: %v, want ErrTooLarge", err)
	}
}

// TestReconfigure: a new allow list applies to the next request.
func TestReconfigure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Do(context.Background(), Request{URL: srv.URL}); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("empty allow list: %v", err)
	}
	apply, err := c.Reconfigure(Options{Allow: []string{strings.TrimPrefix(srv.URL, "http://")}})
	if err != nil {
		t.Fatal(err)
	}
	apply()
	resp, err := c.Do(context.Background(), Request{URL: srv.URL})
	if err != nil || string(resp.Body) != "ok" {
		t.Fatalf("got %v %v", resp, err)
	}
	if _, err := c.Reconfigure(Options{Allow: []string{"http://bad/"}}); err == nil {
		t.Fatal("a bad pattern was accepted")
	}
}

// TestReadBounded: a body is read up to its bound and no further.
func TestReadBounded(t *testing.T) {
	if b, err := readBounded(strings.NewReader("12345"), -1, 5); err != nil || string(b) != "12345" {
		t.Fatalf("at the bound: %q %v", b, err)
	}
	if _, err := readBounded(strings.NewReader("123456"), -1, 5); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("past the bound: %v", err)
	}
	if _, err := readBounded(strings.NewReader(""), 1<<40, 5); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("declared past the bound: %v", err)
	}
}
