package yamlx

import (
	"errors"
	"testing"
)

func TestExplain(t *testing.T) {
	data := []byte("a: 1\nrate: fast\n")
	got := Explain(data, errors.New("yaml: unmarshal errors:\n  line 2: cannot unmarshal !!str `fast` into float64"))
	want := "yaml: unmarshal errors:\n  line 2 (\"rate: fast\"): cannot unmarshal !!str `fast` into float64"
	if got != want {
		t.Fatalf("got %q", got)
	}
	if got := Explain(data, errors.New("line 99: x")); got != "line 99: x" {
		t.Fatalf("out of range: %q", got)
	}
}
