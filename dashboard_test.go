package moonwire_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moonwire/moonwire"
	"github.com/moonwire/moonwire/internal/admin"
	"github.com/moonwire/moonwire/internal/moontest"
)

// feed reads a node's /dashboard/feed and calls ok with each snapshot
// until it returns true; the test fails after 30 s.
func feed(t *testing.T, adminAddr, what string, ok func(admin.Snapshot) bool) admin.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddr+"/dashboard/feed", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("feed: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("feed: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	event := ""
	var last admin.Snapshot
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: ") && event == "snapshot":
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &last); err != nil {
				t.Fatalf("feed: a snapshot that is not JSON: %v", err)
			}
			if ok(last) {
				return last
			}
		}
	}
	b, _ := json.Marshal(last)
	t.Fatalf("feed: no snapshot with %s within 30 s (%v); the last: %s", what, sc.Err(), b)
	return last
}

// post sends a dashboard action as the page does.
func post(t *testing.T, adminAddr, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+adminAddr+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Moonwire-Action", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, b.String()
}

// TestDashboardCluster: with a network broker every node's dashboard
// lists the cluster's nodes (itself first) with their connections, and a
// node that stops leaves the list; a room's members are the cluster's;
// the close action reaches a connection of another node.
func TestDashboardCluster(t *testing.T) {
	for _, nb := range networkBrokers {
		t.Run(nb.kind, func(t *testing.T) {
			t.Parallel()
			files := clusterFiles(t, nb.kind, nb.url, nb.addr)
			a, b := moontest.Start(t, files), moontest.Start(t, files)
			ma, mb, mb2 := join(t, a), join(t, b), join(t, b)
			idA, idB := a.Router.NodeID(), b.Router.NodeID()
			snap := feed(t, a.AdminAddr(), "both nodes, b with 2 connections", func(s admin.Snapshot) bool {
				return len(s.Nodes) == 2 && s.Nodes[0].ID == idA && s.Nodes[0].Self && s.Nodes[0].Connections == 1 &&
					s.Nodes[1].ID == idB && !s.Nodes[1].Self && s.Nodes[1].Connections == 2 && s.Nodes[1].Connected
			})
			if snap.Broker == nil || snap.Broker.Kind != nb.kind || !snap.Broker.Connected {
				t.Fatalf("broker summary: %+v", snap.Broker)
			}

			// Members of r across both nodes (presence is asynchronous).
			moontest.WaitFor(t, "three members of r", func() bool {
				code, body := get(t, "http://"+a.AdminAddr()+"/dashboard/members?room=r")
				var ans admin.MembersAnswer
				if code != 200 || json.Unmarshal([]byte(body), &ans) != nil {
					return false
				}
				var ids []string
				for _, m := range ans.Members {
					ids = append(ids, m.Conn)
				}
				slices.Sort(ids)
				want := []string{ma.id, mb.id, mb2.id}
				slices.Sort(want)
				return ans.Presence && slices.Equal(ids, want)
			})

			// Close b's connection from a's dashboard.
			code, body := post(t, a.AdminAddr(), "/dashboard/close", `{"conn":"`+mb.id+`"}`)
			if code != 200 {
				t.Fatalf("close a connection of the other node: %d %s", code, body)
			}
			mb.ExpectClose(1008, "closed by an operator")

			// b stops: it leaves a's list.
			ctx, cancel := context.WithTimeout(context.Background(), moontest.Timeout)
			defer cancel()
			if err := b.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			feed(t, a.AdminAddr(), "only node a", func(s admin.Snapshot) bool {
				return len(s.Nodes) == 1 && s.Nodes[0].ID == idA
			})
		})
	}
}

// TestDashboardReloadHistory: the reload history names who asked and
// what changed, and a failed reload's error has file:line; a node on the
// embedded configuration refuses the reload action with 409.
func TestDashboardReloadHistory(t *testing.T) {
	t.Parallel()
	s := moontest.Start(t, moontest.Files(dashConfig[strings.Index(dashConfig, "[[routes]]"):]+"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
		"scripts/echo.lua", dashEcho, "scripts/room.lua", dashRoom))
	s.WriteFile(t, "scripts/echo.lua", dashEcho+"-- v2\n")
	code, body := post(t, s.AdminAddr(), "/dashboard/reload", `{}`)
	if code != 200 || !strings.Contains(body, `"ok":true`) || !strings.Contains(body, `"changed":["/echo"]`) || !strings.Contains(body, `"by":"dashboard"`) {
		t.Fatalf("reload: %d %s", code, body)
	}
	s.WriteFile(t, "scripts/room.lua", dashBroken)
	if err := s.ReloadBy("signal"); err == nil {
		t.Fatal("a broken script reloaded")
	}
	snap := feed(t, s.AdminAddr(), "two reloads", func(s admin.Snapshot) bool { return len(s.Reloads) == 2 })
	if r := snap.Reloads[0]; r.OK || r.By != "signal" || !strings.Contains(r.Error, "room.lua:3:") {
		t.Fatalf("the failed reload: %+v", r)
	}
	if r := snap.Reloads[1]; !r.OK || r.By != "dashboard" {
		t.Fatalf("the first reload: %+v", r)
	}
	var echo admin.RouteSummary
	for _, r := range snap.Routes {
		if r.Path == "/echo" {
			echo = r
		}
	}
	if echo.LoadedAt < snap.Reloads[1].At-1000 || echo.Version == "" {
		t.Fatalf("/echo after its reload: %+v (reloaded at %d)", echo, snap.Reloads[1].At)
	}
}

// TestDashboardEmbeddedConfig: a node on the embedded configuration
// offers no reload, and the reload action answers 409.
func TestDashboardEmbeddedConfig(t *testing.T) {
	t.Parallel()
	n, err := moonwire.New(moonwire.Options{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", Version: "v9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	snap := feed(t, n.AdminAddr(), "a snapshot", func(admin.Snapshot) bool { return true })
	if snap.Actions.Reload || !snap.Actions.Close || snap.Version != "v9.9.9" || snap.Node != n.Router.NodeID() || snap.Nodes != nil {
		t.Fatalf("snapshot of the embedded node: actions %+v, version %q, node %q, nodes %v", snap.Actions, snap.Version, snap.Node, snap.Nodes)
	}
	if code, body := post(t, n.AdminAddr(), "/dashboard/reload", `{}`); code != 409 {
		t.Fatalf("reload of the embedded config: %d %s", code, body)
	}
}
