package redistest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// CA is a throw-away certificate authority made for one test. Its key never
// leaves the process and its certificate is trusted by nothing but the
// *tls.Config values it hands out.
type CA struct {
	cert *x509.Certificate
	der  []byte
	key  *ecdsa.PrivateKey
}

// NewCA generates a self-signed ECDSA P-256 CA valid for one day.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("redistest: CA key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: "thermos test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("redistest: CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("redistest: CA certificate: %v", err)
	}
	return &CA{cert: cert, der: der, key: key}
}

// ClientConfig returns a new *tls.Config that trusts only this CA.
func (ca *CA) ClientConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// writeServerCert issues a server certificate for 127.0.0.1 and localhost
// and writes it, its key and the CA certificate as PEM files into dir.
func (ca *CA) writeServerCert(tb testing.TB, dir string) (certFile, keyFile, caFile string) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("redistest: server key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(tb),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatalf("redistest: server certificate: %v", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatalf("redistest: server key: %v", err)
	}
	certFile = filepath.Join(dir, "server.crt")
	keyFile = filepath.Join(dir, "server.key")
	caFile = filepath.Join(dir, "ca.crt")
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{certFile, "CERTIFICATE", der}, {keyFile, "PRIVATE KEY", keyDER}, {caFile, "CERTIFICATE", ca.der}} {
		b := pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der})
		if err := os.WriteFile(f.path, b, 0o600); err != nil {
			tb.Fatalf("redistest: %v", err)
		}
	}
	return certFile, keyFile, caFile
}

func serial(tb testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		tb.Fatalf("redistest: serial: %v", err)
	}
	return n
}

// TLSServer is a redis-server that accepts TLS on TLSAddr with a certificate
// issued by its own CA. It keeps its plain port (Addr) too, so Do and CLI
// keep working for set-up and checks; clients under test should dial
// TLSAddr with ClientConfig.
type TLSServer struct {
	*Server
	CA      *CA
	tlsPort int
}

// StartTLS launches a private redis-server like Start, with TLS on a second
// free loopback port (clients are not asked for certificates). The
// certificates are generated for this server and live in its directory.
// Both ports are checked to be the new server's: the plain one by its
// process ID, the TLS one by a handshake that trusts only this server's CA
// and the same process ID read over it.
func StartTLS(tb testing.TB, opts *Options) *TLSServer {
	tb.Helper()
	ca := NewCA(tb)
	certFile, keyFile, caFile := ca.writeServerCert(tb, tb.TempDir())
	o := &Options{}
	if opts != nil {
		o.Persist = opts.Persist
		o.Args = append(o.Args, opts.Args...)
	}
	o.Args = append(o.Args,
		"--tls-cert-file", certFile,
		"--tls-key-file", keyFile,
		"--tls-ca-cert-file", caFile,
		"--tls-auth-clients", "no",
	)
	s := &TLSServer{Server: start(tb, o, true), CA: ca}
	s.tlsPort = s.p.TLSPort()
	if pid, err := s.tlsPID(); err != nil || pid != s.PID() {
		tb.Fatalf("redistest: TLS port %d: process_id %d, %v; want the server's %d", s.tlsPort, pid, err, s.PID())
	}
	return s
}

// tlsPID reads INFO server's process_id over the TLS port.
func (s *TLSServer) tlsPID() (int, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", s.TLSAddr(), s.ClientConfig())
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	w := bufio.NewWriter(c)
	r := bufio.NewReader(c)
	pw := s.p.Password()
	if pw != "" {
		writeArgs(w, "AUTH", pw)
	}
	writeArgs(w, "INFO", "server")
	if err := w.Flush(); err != nil {
		return 0, err
	}
	if pw != "" {
		if _, err := readReply(r); err != nil {
			return 0, err
		}
	}
	info, err := readReply(r)
	if err != nil {
		return 0, err
	}
	str, _ := info.(string)
	for line := range strings.Lines(str) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("no process_id in INFO server over TLS")
}

// TLSAddr returns the TLS listener's address, 127.0.0.1:port.
func (s *TLSServer) TLSAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.tlsPort)) }

// ClientConfig returns a new *tls.Config that trusts this server's CA (and
// nothing else).
func (s *TLSServer) ClientConfig() *tls.Config { return s.CA.ClientConfig() }

// PEM returns the CA's certificate, PEM-encoded, for clients that read
// their trusted CAs from a file.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der})
}
