//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
)

// result is what an attack did and what the server spent: one JSON line,
// and the rows of the human-readable table. Fields an attack does not set
// are left out.
type result struct {
	Attack     string         `json:"attack"`
	Label      string         `json:"label,omitempty"`
	URL        string         `json:"url"`
	Conns      int            `json:"conns"`
	Opened     int            `json:"opened"`
	DialErrors map[string]int `json:"dial_errors,omitempty"`
	DurationS  float64        `json:"duration_s"`
	ElapsedS   float64        `json:"elapsed_s"`
	SettleS    float64        `json:"settle_s"`

	// pingflood: pings written (whole frames), and their rate.
	Pings     int64   `json:"pings,omitempty"`
	PingsPerS float64 `json:"pings_per_s,omitempty"`

	// inflate: connections whose handshake accepted permessage-deflate,
	// uncompressed frames of InflatesTo bytes sent, compressed frames
	// sent, each DeflatedFrameBytes on the wire and inflating to
	// InflatesTo bytes, InflatedBytes in all.
	Negotiated         int   `json:"negotiated,omitempty"`
	BigFrames          int   `json:"big_frames,omitempty"`
	DeflatedFrames     int64 `json:"deflated_frames,omitempty"`
	DeflatedFrameBytes int   `json:"deflated_frame_bytes,omitempty"`
	InflatesTo         int   `json:"inflates_to_bytes,omitempty"`
	InflatedBytes      int64 `json:"inflated_bytes,omitempty"`

	// slowbody: body bytes trickled in all, connections the server ended
	// (closed or reset), the status lines it sent, and how long after
	// their request head connections were answered and ended (minimum,
	// median, maximum).
	BodyBytes      int64          `json:"body_bytes,omitempty"`
	ServerClosed   int            `json:"server_closed"`
	StatusLines    map[string]int `json:"status_lines,omitempty"`
	AnsweredAfterS []float64      `json:"answered_after_s_min_med_max,omitempty"`
	ClosedAfterS   []float64      `json:"closed_after_s_min_med_max,omitempty"`

	// chatstore: the room pattern, text messages sent (and their bytes),
	// what came back.
	Room         string `json:"room,omitempty"`
	Messages     int64  `json:"messages,omitempty"`
	MessageBytes int64  `json:"message_bytes,omitempty"`
	FramesIn     int64  `json:"frames_in,omitempty"`
	BytesIn      int64  `json:"bytes_in,omitempty"`

	// How the connections ended, as far as this side saw: "close 1008
	// slow consumer" (the server's close frame), "eof", "reset", "open"
	// (not closed by the end of the attack and the peek); and writes that
	// failed for a reason other than the attack's deadline.
	Ends        map[string]int `json:"ends,omitempty"`
	WriteErrors map[string]int `json:"write_errors,omitempty"`

	// The server's figures (with -pid).
	*ServerFigures `json:",omitempty"`
}

// rows are the human-readable table's rows.
func (r *result) rows() [][2]string {
	rows := [][2]string{
		{"attack", r.Attack},
	}
	if r.Label != "" {
		rows = append(rows, [2]string{"label", r.Label})
	}
	rows = append(rows,
		[2]string{"url", r.URL},
		[2]string{"connections", fmt.Sprintf("%d opened of %d%s", r.Opened, r.Conns, fmtCounts(" dial errors: ", r.DialErrors))},
		[2]string{"elapsed", fmt.Sprintf("%.2f s (-duration %.2f s, then the peek if any), then %.2f s settle", r.ElapsedS, r.DurationS, r.SettleS)},
		[2]string{"sent", r.sent()},
	)
	switch r.Attack {
	case "slowbody":
		rows = append(rows,
			[2]string{"server closed", r.closed()},
			[2]string{"status lines", fmtCounts("", r.StatusLines) + fmtMinMedMax(", ", r.AnsweredAfterS)})
	case "chatstore":
		rows = append(rows, [2]string{"received", fmt.Sprintf("%d frames, %s", r.FramesIn, fmtBytes(r.BytesIn))})
	}
	rows = append(rows, [2]string{"ends", fmtCounts("", r.Ends)})
	if len(r.WriteErrors) > 0 {
		rows = append(rows, [2]string{"write errors", fmtCounts("", r.WriteErrors)})
	}
	if s := r.ServerFigures; s != nil {
		rows = append(rows,
			[2]string{"server pid", fmt.Sprint(s.PID)},
			[2]string{"server RSS before", fmtBytes(s.RSSBefore)},
			[2]string{"server RSS peak", fmtBytes(s.RSSPeak) + " sampled, " + fmtBytes(s.HWM) + " VmHWM"},
			[2]string{"server RSS after", fmtBytes(s.RSSAfter)},
			[2]string{"server fds", fmt.Sprintf("%d before, %d peak, %d after", s.FDsBefore, s.FDsPeak, s.FDsAfter)},
		)
		if s.Exited {
			rows = append(rows, [2]string{"server", "EXITED during the run: " + s.SampleErr})
		} else if s.SampleErr != "" {
			rows = append(rows, [2]string{"sample error", s.SampleErr})
		}
	}
	return rows
}

// sent says what the attack sent.
func (r *result) sent() string {
	switch r.Attack {
	case "pingflood":
		return fmt.Sprintf("%s pings (%s/s)", fmtCount(r.Pings), fmtCount(int64(r.PingsPerS)))
	case "inflate":
		return fmt.Sprintf("%d deflate negotiated; %d plain frames of %s; %s compressed frames of %d B, each inflating to %s (%s in all)",
			r.Negotiated, r.BigFrames, fmtBytes(int64(r.InflatesTo)), fmtCount(r.DeflatedFrames),
			r.DeflatedFrameBytes, fmtBytes(int64(r.InflatesTo)), fmtBytes(r.InflatedBytes))
	case "slowbody":
		return fmt.Sprintf("%d request heads, %s body bytes", r.Opened, fmtCount(r.BodyBytes))
	case "chatstore":
		return fmt.Sprintf("%d messages, %s (rooms %s)", r.Messages, fmtBytes(r.MessageBytes), r.Room)
	}
	return ""
}

// closed says how many slowbody connections the server ended, and when.
func (r *result) closed() string {
	return fmt.Sprintf("%d of %d", r.ServerClosed, r.Opened) + fmtMinMedMax(", ", r.ClosedAfterS)
}

// fmtMinMedMax formats a minimum, median and maximum time after the
// request head, after prefix; empty for none.
func fmtMinMedMax(prefix string, a []float64) string {
	if len(a) != 3 {
		return ""
	}
	return fmt.Sprintf("%s%.2f/%.2f/%.2f s after the request head (min/median/max)", prefix, a[0], a[1], a[2])
}

// report prints the table and the JSON line, or only the JSON line.
func report(w io.Writer, r *result, jsonOnly bool) error {
	if !jsonOnly {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, row := range r.rows() {
			fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// printTable reads JSON lines (other lines are skipped) from file, "-"
// for standard input, and prints one Markdown table row per line.
func printTable(file string, w io.Writer) error {
	if file == "-" {
		return printTableFrom(os.Stdin, w)
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	return printTableFrom(f, w)
}

// printTableFrom prints the JSON lines read from in as a Markdown table.
func printTableFrom(in io.Reader, w io.Writer) error {
	fmt.Fprintln(w, "| attack | binary | conns | sent | RSS before | RSS peak (VmHWM) | RSS after | fds before / peak / after | connections ended |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r result
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			return err
		}
		fmt.Fprintln(w, r.tableRow())
	}
	return sc.Err()
}

// tableRow is the result as one Markdown table row.
func (r *result) tableRow() string {
	sent := r.sent()
	if r.Attack == "inflate" {
		sent = fmt.Sprintf("%d plain + %s deflate frames (%s inflated)", r.BigFrames, fmtCount(r.DeflatedFrames), fmtBytes(r.InflatedBytes))
	}
	if r.Attack == "chatstore" {
		sent = fmt.Sprintf("%d msgs, %s", r.Messages, fmtBytes(r.MessageBytes))
	}
	ended := fmtCounts("", r.Ends)
	if r.Attack == "slowbody" {
		ended = "server closed " + r.closed() + "; " + ended
	}
	before, peak, after, fds := "-", "-", "-", "-"
	if s := r.ServerFigures; s != nil {
		before = fmtBytes(s.RSSBefore)
		peak = fmt.Sprintf("**%s** (%s)", fmtBytes(s.RSSPeak), fmtBytes(s.HWM))
		after = fmtBytes(s.RSSAfter)
		fds = fmt.Sprintf("%d / %d / %d", s.FDsBefore, s.FDsPeak, s.FDsAfter)
		if s.Exited {
			after = "EXITED"
			fds += " (exited)"
		}
	}
	cells := []string{r.Attack, r.Label, fmt.Sprintf("%d/%d", r.Opened, r.Conns), sent, before, peak, after, fds, ended}
	for i, c := range cells {
		cells[i] = strings.ReplaceAll(c, "|", `\|`)
	}
	return "| " + strings.Join(cells, " | ") + " |"
}

// fmtCounts formats a count map "a: 3, b: 1" (largest first), after
// prefix; empty for an empty map.
func fmtCounts(prefix string, m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		name := k
		if name == "" {
			name = "(none)"
		}
		parts[i] = fmt.Sprintf("%s: %d", name, m[k])
	}
	return prefix + strings.Join(parts, ", ")
}

// fmtBytes formats a byte count in binary units: "512 B", "3.2 MiB".
func fmtBytes(n int64) string {
	const u = 1024
	switch {
	case n < u:
		return fmt.Sprintf("%d B", n)
	case n < u*u:
		return fmt.Sprintf("%.1f KiB", float64(n)/u)
	case n < u*u*u:
		return fmt.Sprintf("%.1f MiB", float64(n)/(u*u))
	}
	return fmt.Sprintf("%.2f GiB", float64(n)/(u*u*u))
}

// fmtCount formats a count with a k or M suffix past ten thousand.
func fmtCount(n int64) string {
	switch {
	case n < 10_000:
		return fmt.Sprint(n)
	case n < 1_000_000:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	}
	return fmt.Sprintf("%.1fM", float64(n)/1e6)
}
