package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/moonwire/moonwire/router/internal/origin"
)

// folder resolves a directory key. For a config on disk it returns the
// absolute OS path and a rootFS of it (opened through os.OpenInRoot, so
// nothing resolves outside the folder); for LoadFS a sub-filesystem and ""
// for the OS path. display is how messages name the folder. fsys is nil
// when the folder is unusable (the problem is recorded).
func (l *loader) folder(key, p string) (osPath string, fsys fs.FS, display string) {
	if l.src.fsys == nil {
		osPath = p
		if !filepath.IsAbs(osPath) {
			osPath = filepath.Join(l.src.dir, osPath)
		}
		osPath = filepath.Clean(osPath)
		fi, err := os.Stat(osPath)
		if err != nil || !fi.IsDir() {
			l.folderError(key, p, osPath, fi, err)
			return osPath, nil, osPath
		}
		return osPath, rootFS(osPath), osPath
	}

	if strings.HasPrefix(p, "/") || filepath.IsAbs(p) || strings.Contains(p, `\`) {
		l.errorf(key, "%q: must be a slash-separated path relative to the config file inside %s", p, strings.TrimSuffix(embeddedPrefix, "/"))
		return "", nil, p
	}
	inside := path.Join(l.src.fsDir, p)
	display = embeddedPrefix + inside
	if !fs.ValidPath(inside) {
		l.errorf(key, "%q leaves %s", p, strings.TrimSuffix(embeddedPrefix, "/"))
		return "", nil, display
	}
	fi, err := fs.Stat(l.src.fsys, inside)
	if err != nil || !fi.IsDir() {
		l.folderError(key, p, display, fi, err)
		return "", nil, display
	}
	sub, err := fs.Sub(l.src.fsys, inside)
	if err != nil {
		l.fail(key, err)
		return "", nil, display
	}
	return "", sub, display
}

func (l *loader) folderError(key, p, where string, fi fs.FileInfo, err error) {
	shown := where
	if p != where {
		shown = fmt.Sprintf("%q (%s)", p, where)
	}
	switch {
	case err != nil && errors.Is(err, fs.ErrNotExist):
		l.errs = append(l.errs, &Error{Key: key, Msg: "directory " + shown + " does not exist", err: err})
	case err != nil:
		l.errs = append(l.errs, &Error{Key: key, Msg: fmt.Sprintf("directory %s: %v", shown, unwrapPath(err)), err: err})
	case !fi.IsDir():
		l.errorf(key, "%s is not a directory", shown)
	}
}

// rootFS is a folder on disk as an fs.FS that nothing opened through it
// can leave, symlinks included: os.DirFS follows a link out of the folder
// (a scripts folder's lib -> /etc would let require read it), while
// os.OpenInRoot refuses any path that resolves outside. No descriptor is
// held between opens, so a reload's fresh config leaks nothing.
type rootFS string

// Open implements fs.FS.
func (r rootFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	f, err := os.OpenInRoot(string(r), name)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// osFile resolves a file key (TLS material) and checks that it is a file.
// For LoadFS the path is kept as written: it is on the OS, relative to the
// working directory.
func (l *loader) osFile(key, p string) string {
	osPath := p
	if l.src.dir != "" && !filepath.IsAbs(osPath) {
		osPath = filepath.Join(l.src.dir, osPath)
	}
	shown := osPath
	if p != osPath {
		shown = fmt.Sprintf("%q (%s)", p, osPath)
	}
	fi, err := os.Stat(osPath)
	switch {
	case err != nil && errors.Is(err, fs.ErrNotExist):
		l.errs = append(l.errs, &Error{Key: key, Msg: "file " + shown + " does not exist", err: err})
	case err != nil:
		l.errs = append(l.errs, &Error{Key: key, Msg: fmt.Sprintf("file %s: %v", shown, unwrapPath(err)), err: err})
	case fi.IsDir():
		l.errorf(key, "%s is a directory, not a file", shown)
	}
	return osPath
}

// unwrapPath drops the path an *fs.PathError repeats, since messages
// already name it.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// pathDir is path.Dir for a name inside an fs.FS.
func pathDir(name string) string { return path.Dir(name) }

// checkAddr accepts what net.Listen("tcp", addr) will: host:port with an
// optional host and a numeric port 0-65535. Service names are refused so
// a typo is not looked up in /etc/services at start-up.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return &causeError{fmt.Sprintf("invalid address %q: %s (want host:port, e.g. \"127.0.0.1:8765\" or \":8765\")", addr, ae.Err), err}
		}
		return fmt.Errorf("invalid address %q: %w", addr, err)
	}
	if strings.ContainsAny(host, " \t/") {
		return fmt.Errorf("invalid address %q: bad host %q", addr, host)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("invalid address %q: port must be a number from 0 to 65535", addr)
	}
	return nil
}

// checkOrigin validates one allowed_origins entry and returns it in the
// normal form the router matches (lower-case, no default port). An origin
// (RFC 6454) is scheme://host[:port] and nothing else; browsers never send
// a path, so an entry with one could never match and is a mistake worth
// reporting. The rules are router/internal/origin's, which the router
// parses the entry with again.
func checkOrigin(o string) (string, error) {
	p, err := origin.Parse(o)
	if err != nil {
		return "", err
	}
	return p.String(), nil
}

var brokerSchemes = map[string][]string{
	"redis": {"redis", "rediss"},
	"nats":  {"nats", "tls"},
}

// checkBrokerURL checks the scheme and host of a broker URL; nats accepts
// a comma-separated list of servers, as its clients do.
func checkBrokerURL(kind, raw string) error {
	urls := []string{raw}
	if kind == "nats" {
		urls = strings.Split(raw, ",")
	}
	for _, s := range urls {
		s = strings.TrimSpace(s)
		u, err := url.Parse(s)
		if err != nil {
			return &causeError{fmt.Sprintf("invalid URL %q", s), err}
		}
		ok := false
		for _, sc := range brokerSchemes[kind] {
			ok = ok || u.Scheme == sc
		}
		if !ok {
			return fmt.Errorf("invalid URL %q: scheme must be %s:// for broker.kind %q", s, strings.Join(brokerSchemes[kind], ":// or "), kind)
		}
		if u.Host == "" {
			return fmt.Errorf("invalid URL %q: missing host", s)
		}
	}
	return nil
}
