package oip

import (
	"errors"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
)

func TestCheckVersion(t *testing.T) {
	for _, v := range []string{"", "0", "1", "42", "9223372036854775807", "0001"} {
		if err := CheckVersion(v); err != nil {
			t.Errorf("%q: %v, want accepted", v, err)
		}
	}
	for _, v := range []string{"latest", "-1", "+1", "1.0", " 1", "1 ", "v2", "12345678901234567890", "١"} {
		if err := CheckVersion(v); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%q: %v, want invalid", v, err)
		}
	}
}
