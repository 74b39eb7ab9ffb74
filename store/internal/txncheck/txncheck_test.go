package txncheck

import (
	"errors"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/store"
)

func TestCheck(t *testing.T) {
	cases := []struct {
		name   string
		op     store.Op
		exists bool
		mod    int64
		want   error
	}{
		{"no condition, missing", store.Op{Key: "/k"}, false, 0, nil},
		{"CreateOnly, missing", store.Op{Key: "/k", CreateOnly: true}, false, 0, nil},
		{"CreateOnly, exists", store.Op{Key: "/k", CreateOnly: true}, true, 3, errdefs.ErrAlreadyExists},
		{"PrevRev match", store.Op{Key: "/k", PrevRev: 3}, true, 3, nil},
		{"PrevRev stale", store.Op{Key: "/k", PrevRev: 2}, true, 3, errdefs.ErrConflict},
		{"PrevRev, missing", store.Op{Key: "/k", PrevRev: 2}, false, 0, errdefs.ErrConflict},
		{"MustExist, exists", store.Op{Key: "/k", MustExist: true}, true, 3, nil},
		{"MustExist, missing", store.Op{Key: "/k", MustExist: true}, false, 0, errdefs.ErrNotFound},
		{"CreateOnly before MustExist", store.Op{Key: "/k", CreateOnly: true, MustExist: true}, true, 3, errdefs.ErrAlreadyExists},
	}
	for _, c := range cases {
		err := Check(c.op, c.exists, c.mod)
		if c.want == nil {
			if err != nil {
				t.Errorf("%s: %v; want nil", c.name, err)
			}
			continue
		}
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), `"/k"`) {
			t.Errorf("%s: %v; want %v naming \"/k\"", c.name, err, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	if err := Validate([]store.Op{{Key: "/a"}, {Key: "/b"}}); err != nil {
		t.Fatal(err)
	}
	if err := Validate([]store.Op{{Key: "/a"}, {Key: "/a", Delete: true}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("duplicate key: %v", err)
	}
	if err := Validate([]store.Op{{Key: ""}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("empty key: %v", err)
	}
}
