// Package client is the Go client of the control plane's admin API, used
// by the CLI. It tries each configured server in turn when one cannot be
// reached, so any replica of a highly available control plane will do.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
)

// Client talks to one control plane.
type Client struct {
	servers []string
	token   string
	hc      *http.Client
	err     error // set by Broken: every call fails with it
}

// Broken returns a client whose every call fails with err (a configuration
// error found before any call, such as an unreadable CA file).
func Broken(err error) *Client { return &Client{err: err} }

// New returns a client for the given server base URLs ("http://host:7000").
// A bare host:port gets "http://". hc may be nil.
func New(servers []string, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Minute}
	}
	c := &Client{token: token, hc: hc}
	for _, s := range servers {
		s = strings.TrimRight(strings.TrimSpace(s), "/")
		if s == "" {
			continue
		}
		if !strings.Contains(s, "://") {
			s = "http://" + s
		}
		c.servers = append(c.servers, s)
	}
	return c
}

// do sends a request to the first server that answers and decodes a JSON
// answer into out (when non-nil). body is re-read for each server, so it
// must be a bytes.Reader or nil, or a one-shot reader with one cluster.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, contentType string, out any) error {
	if c.err != nil {
		return c.err
	}
	if len(c.servers) == 0 {
		return errdefs.Invalid("no server address given (--server or ACCELPOOL_SERVER)")
	}
	var lastErr error
	for _, base := range c.servers {
		if br, ok := body.(*bytes.Reader); ok {
			_, _ = br.Seek(0, io.SeekStart)
		}
		req, err := http.NewRequestWithContext(ctx, method, base+path, body)
		if err != nil {
			return errdefs.Invalid(err.Error())
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			lastErr = errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("server %s unreachable: %v", base, err))
			continue
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		resp.Body.Close()
		if err != nil {
			lastErr = errdefs.New(errdefs.ErrUnavailable, fmt.Sprintf("server %s: reading answer: %v", base, err))
			continue
		}
		if resp.StatusCode >= 300 {
			var e struct {
				Error string `json:"error"`
			}
			msg := strings.TrimSpace(string(data))
			if json.Unmarshal(data, &e) == nil && e.Error != "" {
				msg = e.Error
			}
			err := errdefs.FromHTTP(resp.StatusCode, msg)
			if resp.StatusCode == http.StatusServiceUnavailable && len(c.servers) > 1 {
				lastErr = err
				continue
			}
			return err
		}
		if out != nil && len(data) > 0 {
			if err := json.Unmarshal(data, out); err != nil {
				return fmt.Errorf("server %s: undecodable answer: %w", base, err)
			}
		}
		return nil
	}
	return lastErr
}

// PushModel uploads a model file as artifact name.
func (c *Client) PushModel(ctx context.Context, name string, content []byte) (cluster.ModelArtifact, error) {
	var art cluster.ModelArtifact
	err := c.do(ctx, http.MethodPost, "/api/v1/models/"+url.PathEscape(name), bytes.NewReader(content), "application/octet-stream", &art)
	return art, err
}

// Models lists the artifacts.
func (c *Client) Models(ctx context.Context) ([]cluster.ModelArtifact, error) {
	var out []cluster.ModelArtifact
	return out, c.do(ctx, http.MethodGet, "/api/v1/models", nil, "", &out)
}

// Model reads one artifact's record.
func (c *Client) Model(ctx context.Context, name string) (cluster.ModelArtifact, error) {
	var out cluster.ModelArtifact
	return out, c.do(ctx, http.MethodGet, "/api/v1/models/"+url.PathEscape(name), nil, "", &out)
}

// DeleteModel removes an artifact record no application uses.
func (c *Client) DeleteModel(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/models/"+url.PathEscape(name), nil, "", nil)
}

// DeployOptions modify Deploy.
type DeployOptions struct {
	// Replace updates applications that exist instead of failing.
	Replace bool
	// AllowPending accepts applications no registered node can run yet.
	AllowPending bool
}

// Deploy creates the applications of a YAML file, all or none.
func (c *Client) Deploy(ctx context.Context, yamlDoc []byte, opts DeployOptions) ([]cluster.Application, error) {
	q := url.Values{}
	if opts.Replace {
		q.Set("replace", "true")
	}
	if opts.AllowPending {
		q.Set("allowPending", "true")
	}
	var out []cluster.Application
	return out, c.do(ctx, http.MethodPost, "/api/v1/apps?"+q.Encode(), bytes.NewReader(yamlDoc), "application/yaml", &out)
}

// Apps lists the applications with their status.
func (c *Client) Apps(ctx context.Context) ([]cluster.AppView, error) {
	var out []cluster.AppView
	return out, c.do(ctx, http.MethodGet, "/api/v1/apps", nil, "", &out)
}

// App reads one application.
func (c *Client) App(ctx context.Context, name string) (cluster.AppView, error) {
	var out cluster.AppView
	return out, c.do(ctx, http.MethodGet, "/api/v1/apps/"+url.PathEscape(name), nil, "", &out)
}

// DeleteApp deletes an application; its instances are removed.
func (c *Client) DeleteApp(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/apps/"+url.PathEscape(name), nil, "", nil)
}

// Explain returns why an application's instances are where they are.
func (c *Client) Explain(ctx context.Context, name string) (cluster.ExplainView, error) {
	var out cluster.ExplainView
	return out, c.do(ctx, http.MethodGet, "/api/v1/apps/"+url.PathEscape(name)+"/explain", nil, "", &out)
}

// Nodes lists the nodes.
func (c *Client) Nodes(ctx context.Context) ([]cluster.NodeView, error) {
	var out []cluster.NodeView
	return out, c.do(ctx, http.MethodGet, "/api/v1/nodes", nil, "", &out)
}

// Node reads one node.
func (c *Client) Node(ctx context.Context, name string) (cluster.NodeView, error) {
	var out cluster.NodeView
	return out, c.do(ctx, http.MethodGet, "/api/v1/nodes/"+url.PathEscape(name), nil, "", &out)
}

// PutProfile stores a measured profile in the registry.
func (c *Client) PutProfile(ctx context.Context, p cluster.ModelProfile) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPut, "/api/v1/profiles/"+url.PathEscape(p.Model)+"/"+url.PathEscape(p.AcceleratorKind), bytes.NewReader(b), "application/json", nil)
}

// Profiles lists the stored profiles.
func (c *Client) Profiles(ctx context.Context) ([]cluster.ModelProfile, error) {
	var out []cluster.ModelProfile
	return out, c.do(ctx, http.MethodGet, "/api/v1/profiles", nil, "", &out)
}

// Leader reports the control plane's leader.
func (c *Client) Leader(ctx context.Context) (cluster.LeaderView, error) {
	var out cluster.LeaderView
	return out, c.do(ctx, http.MethodGet, "/api/v1/leader", nil, "", &out)
}

// WaitReady polls until every application (or every one named in apps,
// each of which must exist) has at least its desired number of ready
// instances, or ctx ends. A named application the server does not list
// yet (a replica whose mirror has not caught up) is not ready.
func (c *Client) WaitReady(ctx context.Context, apps ...string) error {
	for {
		all, err := c.Apps(ctx)
		if err == nil {
			ok, seen := true, 0
			for _, a := range all {
				if len(apps) > 0 && !contains(apps, a.Metadata.Name) {
					continue
				}
				seen++
				if a.Status.Ready < a.Status.Desired {
					ok = false
				}
			}
			if ok && seen >= len(apps) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return errors.Join(ctx.Err(), err)
			}
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
