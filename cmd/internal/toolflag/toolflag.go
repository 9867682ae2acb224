//go:build linux

// Package toolflag holds what moonwire's measuring commands (moonbench,
// moonattack) share on their command lines and in their process setup:
// per-mode flag defaults and a raised descriptor limit. It is for the
// commands under cmd/ only and knows nothing of moonwire itself.
package toolflag

import (
	"flag"
	"syscall"
)

// SetDefaults sets, in fs (already parsed), every flag named in defs that
// the command line left unset, to its value there: a mode's defaults
// (moonattack's -attack, moonbench's -scenario) that differ from the
// flag's own.
func SetDefaults(fs *flag.FlagSet, defs map[string]string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, v := range defs {
		if !set[name] {
			if err := fs.Set(name, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// RaiseFDLimit raises the soft RLIMIT_NOFILE to the hard limit and
// returns it: the commands hold thousands of sockets.
func RaiseFDLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, err
		}
	}
	return rl.Cur, nil
}
