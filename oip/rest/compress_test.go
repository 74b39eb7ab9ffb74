package rest

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
)

// compressed returns b written through a compressor from newWriter.
func compressed(t *testing.T, b []byte, newWriter func(io.Writer) io.WriteCloser) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := newWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(t *testing.T, b []byte) []byte {
	return compressed(t, b, func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) })
}

func zlibbed(t *testing.T, b []byte) []byte {
	return compressed(t, b, func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) })
}

// TestCompressedRequests: gzip and deflate request bodies, as Triton
// takes them (Content-Encoding; Inference-Header-Content-Length counts the
// decompressed bytes), give the same answers as plain ones; a body that
// decompresses past the limit is 413 however small it is sent, and corrupt
// or unknown encodings are 400.
func TestCompressedRequests(t *testing.T) {
	const limit = 1 << 20
	base := startServer(t, newFake(), Options{MaxBodyBytes: limit})
	url := base + "/v2/models/echo/infer"
	jsonBody := []byte(`{"id":"z","inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1.5,2.5]}]}`)
	hdr := `{"id":"z","inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}],"outputs":[{"name":"x","parameters":{"binary_data":false}}]}`
	binBody := append([]byte(hdr), 0, 0, 0xc0, 0x3f, 0, 0, 0x20, 0x40) // 1.5, 2.5
	for _, c := range []struct {
		name, enc string
		body      []byte
		headers   []string
	}{
		{"gzip JSON", "gzip", gzipped(t, jsonBody), nil},
		{"deflate JSON", "deflate", zlibbed(t, jsonBody), nil},
		{"gzip binary", "gzip", gzipped(t, binBody), []string{HeaderContentLength, strconv.Itoa(len(hdr))}},
		{"identity", "identity", jsonBody, nil},
	} {
		r := post(t, url, c.body, append([]string{"Content-Encoding", c.enc}, c.headers...)...)
		resp := parseResponse(t, r)
		if resp.ID != "z" || len(resp.Outputs) != 1 || fmt.Sprint(resp.Outputs[0].Float32s()) != "[1.5 2.5]" {
			t.Errorf("%s: response %+v", c.name, resp)
		}
	}
	bomb := gzipped(t, []byte(`{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["`+strings.Repeat("a", 4*limit)+`"]}]}`))
	if len(bomb) > limit/16 {
		t.Fatalf("the bomb is %d bytes compressed; the test wants it far under the limit", len(bomb))
	}
	for _, c := range []struct {
		name, enc string
		body      []byte
		status    int
		phrase    string
	}{
		{"decompresses past the limit", "gzip", bomb, 413, "gzip request body decompresses to more than the 1048576-byte limit"},
		{"corrupt gzip", "gzip", []byte("not gzip at all"), 400, "gzip request body"},
		{"truncated deflate", "deflate", zlibbed(t, jsonBody)[:20], 400, "deflate request body"},
		{"unknown encoding", "br", jsonBody, 400, "br\\\" is not supported (want gzip, deflate or identity)"},
	} {
		r := post(t, url, c.body, "Content-Encoding", c.enc)
		if r.status != c.status || !strings.Contains(string(r.body), c.phrase) {
			t.Errorf("%s: %d %s, want %d containing %q", c.name, r.status, r.body, c.status, c.phrase)
		}
	}
	// The server keeps serving.
	if r := post(t, url, jsonBody); r.status != 200 {
		t.Fatalf("after the bad bodies: %d %s", r.status, r.body)
	}
}
