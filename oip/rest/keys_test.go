package rest

import (
	"errors"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
)

func TestRequestKeys(t *testing.T) {
	x := `{"name":"x","shape":[1],"datatype":"FP32","data":[1]}`
	for _, c := range []struct {
		name, body, want string
	}{
		{"inputs twice", `{"inputs":[` + x + `],"inputs":[]}`, `request: key "inputs" is given twice`},
		{"id twice", `{"id":"a","id":"b","inputs":[` + x + `]}`, `request: key "id" is given twice`},
		{"capitalised key", `{"Inputs":[` + x + `]}`, `request: key "Inputs" is not "inputs" (keys are case-sensitive)`},
		{"escaped duplicate", `{"inputs":[{"name":"x","na\u006de":"y","shape":[1],"datatype":"FP32","data":[1]}]}`, `input 0: key "name" is given twice`},
		{"tensor datatype twice", `{"inputs":[` + x + `,{"name":"y","shape":[1],"datatype":"FP32","datatype":"INT8","data":[1]}]}`, `input 1: key "datatype" is given twice`},
		{"tensor key case", `{"inputs":[{"name":"x","SHAPE":[1],"datatype":"FP32","data":[1]}]}`, `input 0: key "SHAPE" is not "shape"`},
		{"output name twice", `{"inputs":[` + x + `],"outputs":[{"name":"a","name":"b"}]}`, `requested output 0: key "name" is given twice`},
		{"many keys, one twice", `{"inputs":[{"name":"x"` + strings.Repeat(`,"k":1`, 2) + `,"shape":[1],"datatype":"FP32","data":[1]}]}`, `key "k" is given twice`},
		{"twice beyond the first eight", `{"inputs":[{"name":"x","a":1,"b":1,"c":1,"d":1,"e":1,"f":1,"g":1,"h":1,"i":1,"i":2,"shape":[1],"datatype":"FP32","data":[1]}]}`, `key "i" is given twice`},
	} {
		_, err := ParseInferRequest([]byte(c.body), 0)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid containing %q", c.name, err, c.want)
		}
	}
	// What the checks must leave alone: strings that look like keys inside
	// data and parameters, nested arrays, unknown keys, whitespace, null.
	for _, body := range []string{
		`{"inputs":[` + x + `]}`,
		` { "id" : "a" , "inputs" : [ { "name" : "s" , "shape" : [ 2 ] , "datatype" : "BYTES" , "data" : [ "{\"name\":1,\"name\":2}" , "]},{" ] } ] } `,
		`{"inputs":[{"name":"x","shape":[2,1],"datatype":"FP32","data":[[1],[2]]}],"outputs":null,"parameters":{"Inputs":1,"inputs":2}}`,
		`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"future_field":{"a":[1,{"b":"}"}]}}]}`,
	} {
		if _, err := ParseInferRequest([]byte(body), 0); err != nil {
			t.Errorf("%s: %v", body, err)
		}
	}
	// Malformed JSON is json.Unmarshal's to report.
	for _, body := range []string{`{"inputs":[{"name":"x",`, `{"inputs":`, `{"a" 1}`, `{"inputs":[1,2]`, `{"a":"\x`} {
		_, err := ParseInferRequest([]byte(body), 0)
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "malformed request JSON") {
			t.Errorf("%q: %v, want malformed request JSON", body, err)
		}
	}
}

// BenchmarkRequestKeys sets the key check's pass against the whole parse
// of the same JSON request (150,528 FP32 values), in one run.
func BenchmarkRequestKeys(b *testing.B) {
	vals := make([]string, 3*224*224)
	for i := range vals {
		vals[i] = "0.123456"
	}
	body := []byte(`{"id":"r","inputs":[{"name":"x","shape":[1,3,224,224],"datatype":"FP32","data":[` + strings.Join(vals, ",") + `]}]}`)
	b.Run("keys", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if err := checkRequestKeys(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parse", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, err := ParseInferRequest(body, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}
