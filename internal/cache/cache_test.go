package cache

import (
	"path/filepath"
	"testing"
)

func TestDir(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		accelpool, xdg, home string
		want                 string
	}{
		{"explicit", "/c/ap", "/x", "/h", "/c/ap"},
		{"xdg", "", "/x", "/h", "/x/accelpool"},
		{"home", "", "", "/h", "/h/.cache/accelpool"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("ACCELPOOL_CACHE", tc.accelpool)
			t.Setenv("XDG_CACHE_HOME", tc.xdg)
			t.Setenv("HOME", tc.home)
			if got := Dir(); got != tc.want {
				t.Fatalf("Dir() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestPaths(t *testing.T) {
	t.Setenv("ACCELPOOL_CACHE", "/c")
	for got, want := range map[string]string{
		ORTLibPath():      "/c/onnxruntime/" + ORTVersion + "/libonnxruntime.so.1",
		ModelRepository(): "/c/models",
		AssetsDir():       "/c/assets",
	} {
		if filepath.ToSlash(got) != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}
