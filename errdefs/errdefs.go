// Package errdefs holds the error sentinels shared by every accelpool
// component and the one table that maps them to HTTP status codes and gRPC
// codes at the wire. Code wraps a sentinel with lowercase context
// (fmt.Errorf("model %q: %w", name, errdefs.ErrNotFound)); only the transports
// translate.
package errdefs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The sentinels. Every error a client can see wraps exactly one of them.
var (
	ErrInvalid           = errors.New("invalid argument")
	ErrNotFound          = errors.New("not found")
	ErrAlreadyExists     = errors.New("already exists")
	ErrConflict          = errors.New("conflict")
	ErrUnavailable       = errors.New("unavailable")
	ErrResourceExhausted = errors.New("resource exhausted")
	ErrTooLarge          = errors.New("payload too large")
	ErrDeadline          = errors.New("deadline exceeded")
	ErrCanceled          = errors.New("canceled")
	ErrUnauthenticated   = errors.New("unauthenticated")
	ErrInternal          = errors.New("internal error")
)

// Invalid returns an error wrapping ErrInvalid with the given message.
func Invalid(msg string) error { return &wrapped{msg: msg, kind: ErrInvalid} }

type wrapped struct {
	msg  string
	kind error
}

func (w *wrapped) Error() string { return w.msg }
func (w *wrapped) Unwrap() error { return w.kind }

// New returns an error whose text is msg and that matches kind with errors.Is.
func New(kind error, msg string) error { return &wrapped{msg: msg, kind: kind} }

// WithMessage returns an error of err's kind (ErrInternal when it has
// none) with msg as its whole message.
func WithMessage(err error, msg string) error { return New(kind(err), msg) }

// kind finds the sentinel err wraps; context errors count as deadline/canceled.
func kind(err error) error {
	for _, k := range []error{ErrInvalid, ErrNotFound, ErrAlreadyExists, ErrConflict, ErrUnavailable,
		ErrResourceExhausted, ErrTooLarge, ErrDeadline, ErrCanceled, ErrUnauthenticated} {
		if errors.Is(err, k) {
			return k
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return ErrDeadline
	case errors.Is(err, context.Canceled):
		return ErrCanceled
	}
	return ErrInternal
}

// HTTPStatus is the status code an HTTP transport answers for err.
func HTTPStatus(err error) int {
	switch kind(err) {
	case ErrInvalid:
		return http.StatusBadRequest
	case ErrNotFound:
		return http.StatusNotFound
	case ErrAlreadyExists, ErrConflict:
		return http.StatusConflict
	case ErrUnavailable, ErrResourceExhausted:
		return http.StatusServiceUnavailable
	case ErrTooLarge:
		return http.StatusRequestEntityTooLarge
	case ErrDeadline:
		return http.StatusGatewayTimeout
	case ErrCanceled:
		return 499 // client closed request (nginx convention)
	case ErrUnauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// GRPCCode is the gRPC status code for err.
func GRPCCode(err error) codes.Code {
	switch kind(err) {
	case ErrInvalid:
		return codes.InvalidArgument
	case ErrNotFound:
		return codes.NotFound
	case ErrAlreadyExists:
		return codes.AlreadyExists
	case ErrConflict:
		return codes.Aborted
	case ErrUnavailable:
		return codes.Unavailable
	case ErrResourceExhausted, ErrTooLarge:
		return codes.ResourceExhausted
	case ErrDeadline:
		return codes.DeadlineExceeded
	case ErrCanceled:
		return codes.Canceled
	case ErrUnauthenticated:
		return codes.Unauthenticated
	}
	return codes.Internal
}

// MaxMessageBytes bounds an error message sent to a client. Messages
// quote what the client sent (names, shapes), which may be megabytes; a
// gRPC status travels in HTTP/2 trailers, and one larger than the peer's
// header limit breaks the whole connection, not just the request.
const MaxMessageBytes = 2048

// Clip shortens msg to at most MaxMessageBytes, cutting on a character
// boundary and saying how much was left out.
func Clip(msg string) string {
	if len(msg) <= MaxMessageBytes {
		return msg
	}
	cut := MaxMessageBytes - 40
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes more)", msg[:cut], len(msg)-cut)
}

// ToGRPC converts err to a gRPC status error carrying its message,
// clipped to MaxMessageBytes.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok && kind(err) == ErrInternal {
		if len(st.Message()) <= MaxMessageBytes {
			return err
		}
		return status.Error(st.Code(), Clip(st.Message()))
	}
	return status.Error(GRPCCode(err), Clip(err.Error()))
}

// FromGRPC converts a gRPC status error back to an error wrapping the
// matching sentinel, so a remote failure reads like a local one.
func FromGRPC(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	var k error
	switch st.Code() {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		k = ErrInvalid
	case codes.NotFound:
		k = ErrNotFound
	case codes.AlreadyExists:
		k = ErrAlreadyExists
	case codes.Aborted:
		k = ErrConflict
	case codes.Unavailable:
		k = ErrUnavailable
	case codes.ResourceExhausted:
		k = ErrResourceExhausted
		if IsSizeRefusal(st.Message()) {
			k = ErrTooLarge
		}
	case codes.DeadlineExceeded:
		k = ErrDeadline
	case codes.Canceled:
		k = ErrCanceled
	case codes.Unauthenticated, codes.PermissionDenied:
		k = ErrUnauthenticated
	default:
		k = ErrInternal
	}
	return New(k, st.Message())
}

// IsSizeRefusal reports whether a gRPC ResourceExhausted message is gRPC
// refusing a message over its size limit ("received message larger than
// max", "trying to send message larger than max"): the request is too
// large, not the server overloaded, and would fail the same way on every
// server. FromGRPC maps it to ErrTooLarge.
func IsSizeRefusal(msg string) bool { return strings.Contains(msg, "larger than max") }

// FromHTTP maps an HTTP status and message back to a sentinel-wrapped error.
func FromHTTP(code int, msg string) error {
	var k error
	switch code {
	case http.StatusBadRequest:
		k = ErrInvalid
	case http.StatusNotFound:
		k = ErrNotFound
	case http.StatusConflict:
		k = ErrAlreadyExists
	case http.StatusServiceUnavailable:
		k = ErrUnavailable
	case http.StatusRequestEntityTooLarge:
		k = ErrTooLarge
	case http.StatusGatewayTimeout, http.StatusRequestTimeout:
		k = ErrDeadline
	case http.StatusUnauthorized, http.StatusForbidden:
		k = ErrUnauthenticated
	case 499:
		k = ErrCanceled
	default:
		k = ErrInternal
	}
	return New(k, msg)
}

// Outcome is a short label for err, for metrics: success, invalid,
// not_found, overloaded, unavailable, deadline, canceled or error.
func Outcome(err error) string {
	if err == nil {
		return "success"
	}
	switch kind(err) {
	case ErrInvalid, ErrTooLarge:
		return "invalid"
	case ErrNotFound:
		return "not_found"
	case ErrResourceExhausted:
		return "overloaded"
	case ErrUnavailable:
		return "unavailable"
	case ErrDeadline:
		return "deadline"
	case ErrCanceled:
		return "canceled"
	}
	return "error"
}
