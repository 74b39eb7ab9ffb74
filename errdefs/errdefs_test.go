package errdefs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMapping(t *testing.T) {
	cases := []struct {
		err     error
		http    int
		code    codes.Code
		outcome string
	}{
		{Invalid("bad shape"), 400, codes.InvalidArgument, "invalid"},
		{fmt.Errorf("model x: %w", ErrNotFound), 404, codes.NotFound, "not_found"},
		{ErrAlreadyExists, 409, codes.AlreadyExists, "error"},
		{ErrConflict, 409, codes.Aborted, "error"},
		{New(ErrResourceExhausted, "queue full"), 503, codes.ResourceExhausted, "overloaded"},
		{ErrUnavailable, 503, codes.Unavailable, "unavailable"},
		{ErrTooLarge, 413, codes.ResourceExhausted, "invalid"},
		{fmt.Errorf("wait: %w", context.DeadlineExceeded), 504, codes.DeadlineExceeded, "deadline"},
		{context.Canceled, 499, codes.Canceled, "canceled"},
		{ErrUnauthenticated, 401, codes.Unauthenticated, "error"},
		{errors.New("boom"), 500, codes.Internal, "error"},
	}
	for _, c := range cases {
		if got := HTTPStatus(c.err); got != c.http {
			t.Errorf("HTTPStatus(%v) = %d, want %d", c.err, got, c.http)
		}
		if got := GRPCCode(c.err); got != c.code {
			t.Errorf("GRPCCode(%v) = %v, want %v", c.err, got, c.code)
		}
		if got := Outcome(c.err); got != c.outcome {
			t.Errorf("Outcome(%v) = %q, want %q", c.err, got, c.outcome)
		}
	}
	// gRPC's own size refusals are the request's size, not overload.
	for _, msg := range []string{"grpc: received message larger than max (5 vs. 4)", "grpc: trying to send message larger than max (122880042 vs. 67108864)"} {
		if err := FromGRPC(status.Error(codes.ResourceExhausted, msg)); !errors.Is(err, ErrTooLarge) || HTTPStatus(err) != 413 {
			t.Errorf("FromGRPC(ResourceExhausted %q) = %v (HTTP %d), want ErrTooLarge, 413", msg, err, HTTPStatus(err))
		}
	}
	if err := FromGRPC(status.Error(codes.ResourceExhausted, "model m: queue full")); !errors.Is(err, ErrResourceExhausted) || HTTPStatus(err) != 503 {
		t.Errorf("queue full through gRPC: %v, want ErrResourceExhausted, 503", err)
	}
	if Outcome(nil) != "success" || ToGRPC(nil) != nil || FromGRPC(nil) != nil {
		t.Error("nil handling")
	}
}

func TestRoundTrips(t *testing.T) {
	for _, k := range []error{ErrInvalid, ErrNotFound, ErrAlreadyExists, ErrConflict, ErrUnavailable,
		ErrResourceExhausted, ErrDeadline, ErrCanceled, ErrUnauthenticated} {
		err := New(k, "message for "+k.Error())
		back := FromGRPC(ToGRPC(err))
		if !errors.Is(back, k) || back.Error() != err.Error() {
			t.Errorf("gRPC round trip of %v gave %v", k, back)
		}
		if h := FromHTTP(HTTPStatus(err), err.Error()); HTTPStatus(h) != HTTPStatus(err) {
			t.Errorf("HTTP round trip of %v changed status", k)
		}
	}
}

// TestClip: a message quoting megabytes of client input reaches the wire
// clipped, on a character boundary, saying how much was cut; the kind is
// kept.
func TestClip(t *testing.T) {
	long := Invalid("unknown output \"" + strings.Repeat("é", 5<<20) + "\"")
	st, _ := status.FromError(ToGRPC(long))
	if st.Code() != codes.InvalidArgument || len(st.Message()) > MaxMessageBytes || !utf8.ValidString(st.Message()) ||
		!strings.HasPrefix(st.Message(), "unknown output \"é") || !strings.Contains(st.Message(), "bytes more)") {
		t.Fatalf("clipped to %d bytes, code %v, ends %q", len(st.Message()), st.Code(), st.Message()[max(0, len(st.Message())-40):])
	}
	if short := "model \"m\" not found"; Clip(short) != short {
		t.Fatalf("a short message changed: %q", Clip(short))
	}
	internal := status.Error(codes.Internal, strings.Repeat("x", 1<<20))
	if st, _ := status.FromError(ToGRPC(internal)); len(st.Message()) > MaxMessageBytes || st.Code() != codes.Internal {
		t.Fatalf("a passed-through status: %d bytes, %v", len(st.Message()), st.Code())
	}
}
