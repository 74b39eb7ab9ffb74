package cache

import (
	"os"
	"path/filepath"
	"strings"
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
		BinDir():          "/c/bin",
	} {
		if filepath.ToSlash(got) != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestImagesDir(t *testing.T) {
	root := t.TempDir()
	t.Setenv("ACCELPOOL_CACHE", root)
	want := filepath.Join(root, "assets", "images")

	// Nothing installed: the error names the first file and the fix.
	dir, err := ImagesDir()
	if err == nil {
		t.Fatal("ImagesDir() succeeded with no images installed")
	}
	if dir != want {
		t.Errorf("ImagesDir() dir = %q, want %q", dir, want)
	}
	for _, s := range []string{filepath.Join(want, Images[0]), "scripts/setup.sh --bench"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}

	// All but the last: the error names the last.
	if err := os.MkdirAll(want, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range Images[:len(Images)-1] {
		if err := os.WriteFile(filepath.Join(want, name), []byte("png"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	last := Images[len(Images)-1]
	if _, err := ImagesDir(); err == nil || !strings.Contains(err.Error(), last) {
		t.Errorf("ImagesDir() error = %v, want one naming %s", err, last)
	}

	if err := os.WriteFile(filepath.Join(want, last), []byte("png"), 0o644); err != nil {
		t.Fatal(err)
	}
	if dir, err := ImagesDir(); err != nil || dir != want {
		t.Errorf("ImagesDir() = %q, %v; want %q, nil", dir, err, want)
	}
}
