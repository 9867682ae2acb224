package config

import (
	"errors"
	"strings"
	"testing"
)

func TestPluginTables(t *testing.T) {
	t.Parallel()
	_, file := fixture(t, `
[plugins.greet]
greeting = "hello"
times = "three"
colour = "blue"

[plugins.empty]

[[routes]]
path = "/echo"
script = "echo.lua"
modules = ["greet", "kv"]
`)
	c, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Routes[0].Modules; strings.Join(got, ",") != "greet,kv" {
		t.Errorf("modules = %q", got)
	}
	p := c.Plugin("greet")
	if p.Raw["greeting"] != "hello" {
		t.Errorf("raw = %v", p.Raw)
	}

	// The plugin's own schema: a wrong type names key and line.
	var wrong struct {
		Greeting string `toml:"greeting"`
		Times    int    `toml:"times"`
		Colour   string `toml:"colour"`
	}
	err = p.Decode(&wrong)
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 {
		t.Fatalf("Decode = %v, want one Errors entry", err)
	}
	if e := es[0]; e.File != file || e.Line != 4 || !strings.Contains(e.Key, "times") {
		t.Errorf("error = %+v, want %s line 4, key times", e, file)
	}

	// Keys the plugin does not know are errors, named in full.
	var narrow struct {
		Greeting string `toml:"greeting"`
		Times    string `toml:"times"`
	}
	err = p.Decode(&narrow)
	if !errors.As(err, &es) || len(es) != 1 || es[0].Key != "plugins.greet.colour" || es[0].Msg != "unknown key" {
		t.Fatalf("Decode = %v, want plugins.greet.colour: unknown key", err)
	}
	if narrow.Greeting != "hello" || narrow.Times != "three" {
		t.Errorf("decoded %+v", narrow)
	}

	// Validation errors read like the config's own.
	if got, want := p.Errorf("greeting", "must not be %q", "hello").Error(), file+": plugins.greet.greeting: must not be \"hello\""; got != want {
		t.Errorf("Errorf = %q, want %q", got, want)
	}

	// An absent table is empty, and still names the file.
	abs := c.Plugin("absent")
	var into struct {
		X int `toml:"x"`
	}
	if err := abs.Decode(&into); err != nil || len(abs.Raw) != 0 {
		t.Errorf("absent: %v %v", err, abs.Raw)
	}
	if got := abs.Errorf("", "required").Error(); got != file+": plugins.absent: required" {
		t.Errorf("absent Errorf = %q", got)
	}
	if !c.Plugin("empty").Equal(c.Plugin("empty")) || c.Plugin("empty").Equal(p) {
		t.Error("Equal")
	}
	// A map takes everything.
	var m map[string]any
	if err := p.Decode(&m); err != nil || m["colour"] != "blue" {
		t.Errorf("map decode: %v %v", err, m)
	}
}
