// Package tlsutil builds client TLS configurations from a CA bundle, for
// the connections accelpool components open to each other when their
// listeners serve TLS (--tls-cert/--tls-key) with a private CA.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ClientConfig trusts the PEM certificates in caFile (plus the system
// roots); an empty caFile gives nil (plain connections).
func ClientConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// HTTPClient returns an HTTP client using cfg (nil: the default transport).
func HTTPClient(cfg *tls.Config, timeout time.Duration) *http.Client {
	if cfg == nil {
		return &http.Client{Timeout: timeout}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr, Timeout: timeout}
}

// DialOptions are the gRPC options for cfg (none when nil).
func DialOptions(cfg *tls.Config) []grpc.DialOption {
	if cfg == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
}
