package member

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/accelpool/accelpool/errdefs"
)

// client talks to the control plane replicas. Requests go to the server that
// answered last; a connection failure (or a 502/503/504, what a replica that
// cannot serve answers) moves on to the next one.
type client struct {
	servers []string
	token   string
	hc      *http.Client
	cur     atomic.Int64 // index into servers of the one that answered last
}

func newClient(servers []string, token string, hc *http.Client) *client {
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = strings.TrimRight(s, "/")
	}
	return &client{servers: out, token: token, hc: hc}
}

// defaultHTTPClient has connection-level timeouts only: long polls and blob
// downloads take as long as they take, and each request carries its own
// deadline.
func defaultHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
	}}
}

// statusError is a non-2xx answer from the control plane.
type statusError struct {
	Code int
	Msg  string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Code, http.StatusText(e.Code), e.Msg)
}

// Unwrap maps the status to the errdefs sentinel.
func (e *statusError) Unwrap() error {
	if e.Code == http.StatusConflict {
		return errdefs.ErrConflict
	}
	return errors.Unwrap(errdefs.FromHTTP(e.Code, e.Msg))
}

// statusCode is err's HTTP status, or 0 when it is not an HTTP answer.
func statusCode(err error) int {
	var se *statusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func readStatusError(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(raw))
	if json.Unmarshal(raw, &body) == nil && body.Error != "" {
		msg = body.Error
	}
	return &statusError{Code: resp.StatusCode, Msg: msg}
}

// cancelBody cancels the request's context when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// do sends one request, trying each server at most once starting from the
// current one. timeout bounds each attempt (0: none); the caller closes the
// response body.
func (c *client) do(ctx context.Context, method, path string, body []byte, hdr http.Header, timeout time.Duration) (*http.Response, error) {
	n := len(c.servers)
	start := int(c.cur.Load())
	var errs []string
	for i := 0; i < n; i++ {
		idx := (start + i) % n
		actx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			actx, cancel = context.WithTimeout(ctx, timeout)
		}
		req, err := http.NewRequestWithContext(actx, method, c.servers[idx]+path, bytes.NewReader(body))
		if err != nil {
			cancel()
			return nil, errdefs.Invalid(fmt.Sprintf("control plane request: %v", err))
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			errs = append(errs, err.Error())
			continue
		}
		switch resp.StatusCode {
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			if i < n-1 {
				errs = append(errs, fmt.Sprintf("%s: %s", c.servers[idx], readStatusError(resp)))
				resp.Body.Close()
				cancel()
				continue
			}
		}
		c.cur.Store(int64(idx))
		resp.Body = cancelBody{resp.Body, cancel}
		return resp, nil
	}
	return nil, errdefs.New(errdefs.ErrUnavailable, "no control plane server reachable: "+strings.Join(errs, "; "))
}

// call sends in as JSON (nil: no body) and decodes a 2xx answer into out.
func (c *client) call(ctx context.Context, method, path string, in, out any, timeout time.Duration) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode %s: %w", path, err)
		}
	}
	resp, err := c.do(ctx, method, path, body, nil, timeout)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readStatusError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s answer: %w", path, err)
	}
	return nil
}
