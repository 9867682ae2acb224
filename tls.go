package moonwire

import (
	"crypto/tls"
	"sync/atomic"
)

// certStore serves the TLS certificate and lets a reload swap in a renewed
// one: new handshakes use it, established connections keep theirs.
type certStore struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

func (c *certStore) load() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return err
	}
	c.cert.Store(&cert)
	return nil
}

func (c *certStore) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cert.Load(), nil
}
