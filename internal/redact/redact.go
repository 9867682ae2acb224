// Package redact hides credentials in server URLs, for the error messages
// and logs of the broker and store backends, which all name the server
// they failed to reach.
//
// It knows URLs only: nothing of brokers, stores or their clients.
package redact

import (
	"net/url"
	"strings"
)

// URLs returns raw, a comma-separated list of server URLs, with every
// password replaced by "xxxxx". With tokens, a user name without a
// password is hidden too (NATS reads it as a token), and a server without
// a scheme is read as scheme:// (as the NATS client does).
func URLs(raw, scheme string, tokens bool) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if scheme != "" && p != "" && !strings.Contains(p, "://") {
			p = scheme + "://" + p
		}
		u, err := url.Parse(p)
		switch {
		case err != nil:
			p = "(unparsable URL)"
		case u.User != nil:
			if _, ok := u.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
			} else if tokens {
				u.User = url.User("xxxxx")
			}
			p = u.String()
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}
