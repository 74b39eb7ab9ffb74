package errdefs

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
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
