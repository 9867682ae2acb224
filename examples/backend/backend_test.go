package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/moonwire/moonwire/internal/moontest"
)

// TestBackendExample runs the example as shipped, on free ports: the
// backend decides who joins and keeps the messages, chat.lua asks it over
// http.request, and the backend pushes into a room through the server API.
func TestBackendExample(t *testing.T) {
	t.Parallel()
	b := newBackend(demoUsers, "", "demo-api-key-0123456789")
	hs := httptest.NewServer(b.routes())
	defer hs.Close()
	backendHost := strings.TrimPrefix(hs.URL, "http://")

	cfg, err := os.ReadFile("moonwire.toml")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("scripts/chat.lua")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer(
		`listen = "127.0.0.1:8765"`, `listen = "127.0.0.1:0"`,
		`listen = "127.0.0.1:8090"`, `listen = "127.0.0.1:0"`,
		"127.0.0.1:8081", backendHost,
	).Replace(string(cfg))
	s := moontest.Start(t, moontest.Files(text, "scripts/chat.lua", string(script)))
	b.api = "http://" + s.APIAddr()

	// The backend decides who may join.
	refused := func(url string, status int) {
		t.Helper()
		_, err := moontest.TryDial(t, s.URL(url))
		var r *moontest.Refusal
		if !errors.As(err, &r) || r.Status != status {
			t.Fatalf("%s: %v, want a %d refusal", url, err, status)
		}
	}
	refused("/chat/lobby", 401)
	refused("/chat/lobby?token=nobody", 403)
	refused("/chat/secret?token=bob-token", 403)

	ann := moontest.Dial(t, s.URL("/chat/lobby?token=ann-token"))
	// Her first message coming back proves ann is in the room (on_open
	// runs before on_message): only then can she hear bob join.
	ann.Send("hello")
	ann.Expect(`{"id":1,"text":"hello","type":"message","user":"ann"}`)
	bob := moontest.Dial(t, s.URL("/chat/lobby?token=bob-token"))
	ann.Expect(`{"type":"join","user":"bob"}`)

	// Messages are stored first, then broadcast with the backend's id, in
	// the order sent.
	ann.Send("how")
	ann.Send("are you")
	for i, text := range []string{"how", "are you"} {
		want := `{"id":` + string(rune('2'+i)) + `,"text":"` + text + `","type":"message","user":"ann"}`
		ann.Expect(want)
		bob.Expect(want)
	}
	resp, err := http.Get(hs.URL + "/messages?room=lobby")
	if err != nil {
		t.Fatal(err)
	}
	var stored []message
	err = json.NewDecoder(resp.Body).Decode(&stored)
	resp.Body.Close()
	if err != nil || len(stored) != 3 || stored[2].Text != "are you" || stored[2].User != "ann" {
		t.Fatalf("stored: %+v, %v", stored, err)
	}

	// Something outside the chat: the backend publishes through the API.
	order := moontest.Dial(t, s.URL("/chat/order-42?token=bob-token"))
	order.Send("where is it?") // its echo proves bob is in the room
	order.Expect(`{"id":4,"text":"where is it?","type":"message","user":"bob"}`)
	resp, err = http.Post(hs.URL+"/orders/42/ship", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"delivered":1`) {
		t.Fatalf("ship: %d %s", resp.StatusCode, body)
	}
	order.Expect(`{"order":"42","type":"shipped"}`)

	bob.Close(1000)
	ann.Expect(`{"type":"leave","user":"bob"}`)

	// The backend gone: joins are refused 503, a message is not stored.
	hs.Close()
	refused("/chat/lobby?token=ann-token", 503)
	ann.Send("anyone?")
	got := ann.Next().Text()
	if !strings.Contains(got, `"error":"not stored"`) {
		t.Fatalf("with the backend down: %s", got)
	}
}
