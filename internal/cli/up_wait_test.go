package cli

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/agent/repository"
	"github.com/accelpool/accelpool/cluster"
	"github.com/accelpool/accelpool/errdefs"
)

// TestWhileUnavailable: a control plane not leading yet is waited for
// (said once); any other answer, success or error, ends the wait at once.
func TestWhileUnavailable(t *testing.T) {
	var out strings.Builder
	calls := 0
	err := whileUnavailable(context.Background(), &out, func() error {
		if calls++; calls < 3 {
			return errdefs.New(errdefs.ErrUnavailable, "leadership is changing; retry shortly")
		}
		return nil
	})
	if err != nil || calls != 3 || strings.Count(out.String(), "waiting for the control plane") != 1 {
		t.Fatalf("err %v after %d calls, output %q", err, calls, out.String())
	}
	calls = 0
	bad := errdefs.Invalid("bad model")
	if err := whileUnavailable(context.Background(), &out, func() error { calls++; return bad }); !errors.Is(err, bad) || calls != 1 {
		t.Fatalf("another error: %v after %d calls", err, calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := whileUnavailable(ctx, &out, func() error { return errdefs.New(errdefs.ErrUnavailable, "no leader") }); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled while waiting: %v", err)
	}
}

// TestRepositoryApp: `up` deploys a repository model with its config.yaml
// (batching to spec.batching, the rest to spec.serving) under a valid
// application name.
func TestRepositoryApp(t *testing.T) {
	for in, want := range map[string]string{"ocr-cls": "ocr-cls", "My_Model.v2": "my-model-v2"} {
		if got := appName(in); got != want {
			t.Errorf("appName(%q) = %q, want %q", in, got, want)
		}
	}
	c, err := repository.ParseConfig([]byte("max_batch_size: 8\nmax_queue_delay_ms: 2\nconcurrency: 3\nintra_op_threads: 1\npreprocess: {x: {width: 64}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := repositoryApp("m", c)
	if err != nil {
		t.Fatal(err)
	}
	apps, err := cluster.ParseApplications(doc)
	if err != nil {
		t.Fatalf("%v in\n%s", err, doc)
	}
	s := apps[0].Spec
	if s.Model != "m" || s.Batching != (cluster.Batching{MaxBatchSize: 8, MaxQueueDelayMs: 2}) || s.Serving == nil ||
		s.Serving.Concurrency != 3 || s.Serving.IntraOpThreads != 1 || s.Serving.Preprocess["x"].Width != 64 || s.Serving.MaxBatchSize != 0 {
		t.Fatalf("spec %+v (serving %+v) from\n%s", s, s.Serving, doc)
	}
}
