// Command backend is the application server of examples/backend: the
// part of a chat app that moonwire does not do. It knows its users (a
// token each), decides who may join which room, keeps every chat message,
// and tells rooms about things that happen outside the chat (an order
// shipped) by publishing through moonwire's server API.
//
// moonwire's chat.lua in this folder calls it over HTTP: POST /authorize
// from on_handshake, POST /messages from on_message. Nothing here speaks
// WebSocket.
//
//	go run ./examples/backend -listen 127.0.0.1:8081 -moonwire-api http://127.0.0.1:8090 -api-key KEY
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// user is who a token belongs to and the rooms they may join ("*": any).
type user struct {
	Name  string
	Rooms []string
}

// message is one stored chat message.
type message struct {
	ID   int     `json:"id"`
	Room string  `json:"room"`
	User string  `json:"user"`
	Text string  `json:"text"`
	At   float64 `json:"at"`
}

// backend is the application: users, their rooms, and the messages.
type backend struct {
	users map[string]user // by token
	api   string          // moonwire's server API, e.g. http://127.0.0.1:8090
	key   string          // its API key
	hc    *http.Client

	mu   sync.Mutex
	msgs []message
}

func newBackend(users map[string]user, api, key string) *backend {
	return &backend{users: users, api: strings.TrimRight(api, "/"), key: key, hc: &http.Client{Timeout: 5 * time.Second}}
}

// maxBody bounds what the backend reads of a request.
const maxBody = 64 << 10

func (b *backend) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /authorize", b.authorize)
	mux.HandleFunc("POST /messages", b.store)
	mux.HandleFunc("GET /messages", b.list)
	mux.HandleFunc("POST /orders/{id}/ship", b.ship)
	return mux
}

// authorize answers moonwire's on_handshake: {"token","room"} -> 200
// {"user"} when the token's user may join the room, else 403.
func (b *backend) authorize(w http.ResponseWriter, r *http.Request) {
	var req struct{ Token, Room string }
	if !decode(w, r, &req) {
		return
	}
	u, ok := b.users[req.Token]
	if !ok {
		reply(w, http.StatusForbidden, map[string]string{"error": "unknown token"})
		return
	}
	for _, room := range u.Rooms {
		if room == "*" || room == req.Room {
			reply(w, http.StatusOK, map[string]string{"user": u.Name})
			return
		}
	}
	reply(w, http.StatusForbidden, map[string]string{"error": u.Name + " may not join " + req.Room})
}

// store keeps a chat message: {"room","user","text"} -> {"id","at"}.
func (b *backend) store(w http.ResponseWriter, r *http.Request) {
	var m message
	if !decode(w, r, &m) {
		return
	}
	if m.Room == "" || m.User == "" || m.Text == "" {
		reply(w, http.StatusBadRequest, map[string]string{"error": "room, user and text are required"})
		return
	}
	b.mu.Lock()
	m.ID = len(b.msgs) + 1
	m.At = float64(time.Now().UnixMilli()) / 1000
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	reply(w, http.StatusCreated, map[string]any{"id": m.ID, "at": m.At})
}

// list returns a room's stored messages: GET /messages?room=R.
func (b *backend) list(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	out := []message{}
	b.mu.Lock()
	for _, m := range b.msgs {
		if m.Room == room {
			out = append(out, m)
		}
	}
	b.mu.Unlock()
	reply(w, http.StatusOK, out)
}

// ship is something that happens outside the chat: the order's room hears
// of it through moonwire's server API.
func (b *backend) ship(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	event, _ := json.Marshal(map[string]string{"type": "shipped", "order": id})
	res, err := b.publish(r.Context(), "order-"+id, string(event))
	if err != nil {
		reply(w, http.StatusBadGateway, map[string]string{"error": err.Error()})
		return
	}
	reply(w, http.StatusOK, res)
}

// publish broadcasts data to room through moonwire's server API.
func (b *backend) publish(ctx context.Context, room, data string) (map[string]any, error) {
	body, _ := json.Marshal(map[string]string{"room": room, "data": data})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.api+publishPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "apikey "+b.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("moonwire api: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("moonwire api: %s: %s", resp.Status, bytes.TrimSpace(raw))
	}
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("moonwire api: %w", err)
	}
	return out, nil
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	d := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	if err := d.Decode(v); err != nil {
		reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return false
	}
	return true
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// demoUsers are the example's accounts.
var demoUsers = map[string]user{
	"ann-token": {Name: "ann", Rooms: []string{"*"}},
	"bob-token": {Name: "bob", Rooms: []string{"lobby", "order-42"}},
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to serve on")
	api := flag.String("moonwire-api", "http://127.0.0.1:8090", "moonwire's server API")
	key := flag.String("api-key", os.Getenv("MOONWIRE_API_KEY"), "moonwire API key (default $MOONWIRE_API_KEY)")
	flag.Parse()
	b := newBackend(demoUsers, *api, *key)
	srv := &http.Server{Addr: *listen, Handler: b.routes(), ReadHeaderTimeout: 5 * time.Second}
	slog.Info("backend listening", "addr", *listen)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		slog.Error("backend", "err", err)
		os.Exit(1)
	}
}

// publishPath is the server API's publish command.
const publishPath = "/api/publish"
