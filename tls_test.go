package moonwire_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/moonwire/moonwire/internal/moontest"
)

// selfSigned returns a PEM certificate and key for 127.0.0.1 with the given
// serial number, and a pool that trusts it.
func selfSigned(t *testing.T, serial int64) (certPEM, keyPEM string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "moonwire test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})), pool
}

func TestTLS(t *testing.T) {
	t.Parallel()
	cert, key, pool := selfSigned(t, 1)
	s := moontest.Start(t, moontest.Files(`
[server]
tls_cert = "cert.pem"
tls_key = "key.pem"
static_dir = "public"

[[routes]]
path = "/echo"
script = "echo.lua"
`, "scripts/echo.lua", `return { on_message = function(conn, data, kind) conn:send(data, kind) end }`,
		"cert.pem", cert, "key.pem", key, "public/index.html", "secure page"))
	if s.URL("/echo")[:6] != "wss://" {
		t.Fatalf("URL %s", s.URL("/echo"))
	}
	tlsCfg := &tls.Config{RootCAs: pool}
	c := moontest.Dial(t, s.URL("/echo"), moontest.DialOptions{TLS: tlsCfg})
	c.Send("over tls")
	c.Expect("over tls")
	serial := func(c *moontest.Client) int64 {
		return c.Conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(c); got != 1 {
		t.Fatalf("serial %d", got)
	}

	// Plain HTTP on the same port is HTTPS now.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	resp, err := hc.Get(s.HTTPURL("/index.html"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "secure page" {
		t.Fatalf("static over https: %q", body)
	}

	// A plain-text client gets nowhere.
	if _, err := moontest.TryDial(t, "ws://"+s.Addr()+"/echo"); err == nil {
		t.Fatal("a ws:// dial to a TLS server succeeded")
	}

	// A renewed certificate applies on reload, to new connections; the
	// open one carries on.
	cert2, key2, pool2 := selfSigned(t, 2)
	s.WriteFile(t, "cert.pem", cert2)
	s.WriteFile(t, "key.pem", key2)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	d := moontest.Dial(t, s.URL("/echo"), moontest.DialOptions{TLS: &tls.Config{RootCAs: pool2}})
	if got := serial(d); got != 2 {
		t.Fatalf("after reload: serial %d", got)
	}
	c.Send("still")
	c.Expect("still")

	// A broken certificate fails the reload; the server keeps the old one.
	s.WriteFile(t, "cert.pem", "not a certificate")
	if err := s.Reload(); err == nil {
		t.Fatal("reload with a broken certificate succeeded")
	}
	e := moontest.Dial(t, s.URL("/echo"), moontest.DialOptions{TLS: &tls.Config{RootCAs: pool2}})
	e.Send("ok")
	e.Expect("ok")
}
