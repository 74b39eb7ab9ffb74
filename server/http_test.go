package server

import "net/http"

type httpClient = http.Client

type bearerRT struct{ tok string }

func (b bearerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return http.DefaultTransport.RoundTrip(r)
}

func newAuthClient(tok string) *http.Client { return &http.Client{Transport: bearerRT{tok}} }
