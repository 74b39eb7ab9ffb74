package cli

import (
	"context"
	"errors"
	"strings"
	"testing"

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
