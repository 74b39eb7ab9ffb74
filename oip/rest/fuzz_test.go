package rest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
)

// FuzzParseInferRequest feeds arbitrary bodies and header lengths to the
// request parser. It must never panic, must fail only with ErrInvalid or
// ErrTooLarge, and a request it accepts must hold valid tensors that survive
// EncodeInferRequest and a second parse unchanged.
func FuzzParseInferRequest(f *testing.F) {
	hdr := `{"inputs":[{"name":"a","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}`
	f.Add([]byte(hdr+"\x00\x00\x80\x3f\x00\x00\x00\x40"), len(hdr))
	f.Add([]byte(`{"id":"1","inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}`), 0)
	f.Add([]byte(`{"inputs":[{"name":"s","shape":[1],"datatype":"BYTES","data":["hi"]}],"outputs":[{"name":"s","parameters":{"binary_data":true}}]}`), 0)
	f.Add([]byte(hdr+"\x00"), len(hdr))
	f.Add([]byte(hdr), -1)
	f.Fuzz(func(t *testing.T, body []byte, headerLen int) {
		req, err := ParseInferRequest(body, headerLen)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) && !errors.Is(err, errdefs.ErrTooLarge) {
				t.Fatalf("error %v wraps neither ErrInvalid nor ErrTooLarge", err)
			}
			return
		}
		for i := range req.Inputs {
			if err := req.Inputs[i].Validate(); err != nil {
				t.Fatalf("accepted an invalid input: %v", err)
			}
		}
		header, blobs, err := EncodeInferRequest(nil, req, true)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		again := append([]byte(nil), header...)
		for _, b := range blobs {
			again = append(again, b...)
		}
		req2, err := ParseInferRequest(again, len(header))
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, header)
		}
		if len(req2.Inputs) != len(req.Inputs) || req2.ID != req.ID {
			t.Fatalf("re-parse changed the request")
		}
		for i := range req.Inputs {
			a, b := req.Inputs[i], req2.Inputs[i]
			if a.Name != b.Name || a.DataType != b.DataType || !bytes.Equal(a.Data, b.Data) || len(a.Shape) != len(b.Shape) {
				t.Fatalf("input %d changed: %+v vs %+v", i, a.Tensor, b.Tensor)
			}
		}
	})
}
