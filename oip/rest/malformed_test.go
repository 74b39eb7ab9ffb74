package rest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// Each malformed request gets its status and a JSON error naming the
// problem, and the server keeps serving.
func TestMalformedRequests(t *testing.T) {
	const limit = 1 << 20
	base := startServer(t, newFake(), Options{MaxBodyBytes: limit})
	in := func(fields string) string { return `{"inputs":[{"name":"x",` + fields + `}]}` }
	fp32x2 := `"shape":[2],"datatype":"FP32"`
	binHdr := in(fp32x2 + `,"parameters":{"binary_data_size":8}`)
	binHdrLen := strconv.Itoa(len(binHdr))

	tests := []struct {
		name    string
		method  string
		path    string
		headers []string
		body    string
		status  int
		phrase  string
	}{
		{name: "invalid JSON", body: `{"inputs":[`, status: 400, phrase: "malformed request JSON"},
		{name: "not an object", body: `[1,2]`, status: 400, phrase: "malformed request JSON"},
		{name: "empty body", body: ``, status: 400, phrase: "malformed request JSON"},
		{name: "deeply nested JSON", body: in(`"shape":[1],"datatype":"FP32","data":` + strings.Repeat("[", 10000) + "1" + strings.Repeat("]", 10000)),
			status: 400, phrase: "depth"},
		{name: "nested past the codec's limit", body: in(`"shape":[1],"datatype":"FP32","data":` + strings.Repeat("[", 100) + "1" + strings.Repeat("]", 100)),
			status: 400, phrase: "depth exceeds 64"},
		{name: "shape vs data count", body: in(`"shape":[2,2],"datatype":"FP32","data":[1,2,3]`), status: 400, phrase: "holds 3 elements, shape needs 4"},
		{name: "unknown datatype", body: in(`"shape":[1],"datatype":"FP8","data":[1]`), status: 400, phrase: `unknown datatype "FP8"`},
		{name: "missing datatype", body: in(`"shape":[1],"data":[1]`), status: 400, phrase: "no datatype"},
		{name: "missing shape", body: in(`"datatype":"FP32","data":[1]`), status: 400, phrase: "no shape"},
		{name: "missing name", body: `{"inputs":[{"shape":[1],"datatype":"FP32","data":[1]}]}`, status: 400, phrase: "no name"},
		{name: "duplicate input", body: `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]},{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}`,
			status: 400, phrase: "appears twice"},
		{name: "negative dim", body: in(`"shape":[-1],"datatype":"FP32","data":[1]`), status: 400, phrase: "negative"},
		{name: "overflow shape", body: in(`"shape":[4294967296,4294967296],"datatype":"FP32","data":[1]`), status: 400, phrase: "more than"},
		{name: "shape beyond int64", body: in(`"shape":[99999999999999999999],"datatype":"FP32","data":[1]`), status: 400, phrase: "malformed request JSON"},
		{name: "huge shape tiny data", body: in(`"shape":[1000000000],"datatype":"FP32","data":[1]`), status: 400, phrase: "holds 1 elements, shape needs 1000000000"},
		{name: "non-numeric FP32", body: in(`"shape":[2],"datatype":"FP32","data":[1,"abc"]`), status: 400, phrase: `element 1: "abc" is not a number`},
		{name: "int out of range", body: in(`"shape":[1],"datatype":"INT8","data":[200]`), status: 400, phrase: "200 is out of range for INT8"},
		{name: "fraction for int", body: in(`"shape":[1],"datatype":"INT32","data":[1.5]`), status: 400, phrase: "not an integer"},
		{name: "bool as number", body: in(`"shape":[1],"datatype":"BOOL","data":[1]`), status: 400, phrase: "not a BOOL"},
		{name: "truncated binary body", headers: []string{HeaderContentLength, binHdrLen}, body: binHdr + "1234",
			status: 400, phrase: "truncated"},
		{name: "extra trailing bytes", headers: []string{HeaderContentLength, binHdrLen}, body: binHdr + "123456789",
			status: 400, phrase: "1 extra trailing bytes"},
		{name: "binary size vs shape", headers: []string{HeaderContentLength, strconv.Itoa(len(in(fp32x2 + `,"parameters":{"binary_data_size":4}`)))},
			body: in(fp32x2+`,"parameters":{"binary_data_size":4}`) + "1234", status: 400, phrase: "needs 8 bytes"},
		{name: "binary without header length", body: binHdr + "12345678", status: 400, phrase: "malformed request JSON"},
		{name: "binary size without header", body: binHdr, status: 400, phrase: "no " + HeaderContentLength},
		{name: "negative binary_data_size", body: in(fp32x2 + `,"parameters":{"binary_data_size":-8}`), status: 400, phrase: "non-negative integer"},
		{name: "bad BYTES binary", headers: []string{HeaderContentLength, strconv.Itoa(len(in(`"shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":4}`)))},
			body: in(`"shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":4}`) + "\x09\x00\x00\x00", status: 400, phrase: "BYTES element 0 claims 9 bytes"},
		{name: "bad BOOL binary", headers: []string{HeaderContentLength, strconv.Itoa(len(in(`"shape":[1],"datatype":"BOOL","parameters":{"binary_data_size":1}`)))},
			body: in(`"shape":[1],"datatype":"BOOL","parameters":{"binary_data_size":1}`) + "\x07", status: 400, phrase: "not 0 or 1"},
		{name: "header length negative", headers: []string{HeaderContentLength, "-5"}, body: binHdr, status: 400, phrase: "negative"},
		{name: "header length non-numeric", headers: []string{HeaderContentLength, "ten"}, body: binHdr, status: 400, phrase: "not an integer"},
		{name: "header length beyond body", headers: []string{HeaderContentLength, "100000"}, body: binHdr, status: 400, phrase: "larger than the"},
		{name: "header length 1<<62", headers: []string{HeaderContentLength, strconv.FormatInt(1<<62, 10)}, body: binHdr, status: 400, phrase: "larger than the"},
		{name: "header length overflows int64", headers: []string{HeaderContentLength, "99999999999999999999999"}, body: binHdr, status: 400, phrase: "not an integer"},
		{name: "both data and binary_data_size", headers: []string{HeaderContentLength, strconv.Itoa(len(in(fp32x2 + `,"data":[1,2],"parameters":{"binary_data_size":8}`)))},
			body: in(fp32x2+`,"data":[1,2],"parameters":{"binary_data_size":8}`) + "12345678", status: 400, phrase: "both data and binary_data_size"},
		{name: "missing data", body: in(fp32x2), status: 400, phrase: "neither data nor binary_data_size"},
		{name: "null data", body: in(fp32x2 + `,"data":null`), status: 400, phrase: "neither data nor binary_data_size"},
		{name: "object parameter", body: `{"parameters":{"p":{"a":1}},` + in(`"shape":[1],"datatype":"FP32","data":[1]`)[1:], status: 400, phrase: `parameter "p"`},
		{name: "binary_data not bool", body: `{"outputs":[{"name":"x","parameters":{"binary_data":"yes"}}],` + in(`"shape":[1],"datatype":"FP32","data":[1]`)[1:],
			status: 400, phrase: "must be true or false"},
		{name: "oversized body", body: in(`"shape":[1],"datatype":"BYTES","data":["` + strings.Repeat("a", limit) + `"]`), status: 413, phrase: "exceeds the"},
		{name: "oversized chunked body", headers: []string{"chunked", ""}, body: in(`"shape":[1],"datatype":"BYTES","data":["` + strings.Repeat("a", limit) + `"]`),
			status: 413, phrase: "exceeds the"},
		{name: "wrong method", method: "GET", status: 405, phrase: "not allowed"},
		{name: "wrong method on health", method: "POST", path: "/v2/health/live", status: 405, phrase: "not allowed"},
		{name: "unknown route", method: "GET", path: "/v3/whatever", status: 404, phrase: "no route"},
		{name: "empty path segment", path: "/v2//models/echo/infer", body: in(`"shape":[1],"datatype":"FP32","data":[1]`), status: 404, phrase: `empty, "." or ".." segment`},
		{name: "dot-dot path segment", method: "GET", path: "/v2/models/x/../echo", status: 404, phrase: `empty, "." or ".." segment`},
		{name: "unknown model", path: "/v2/models/nope/infer", body: in(`"shape":[1],"datatype":"FP32","data":[1]`), status: 404, phrase: `model "nope"`},
		{name: "unknown output", body: `{"outputs":[{"name":"y"}],` + in(`"shape":[1],"datatype":"FP32","data":[1]`)[1:], status: 400, phrase: `no output "y"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method, path := tc.method, tc.path
			if method == "" {
				method = http.MethodPost
			}
			if path == "" {
				path = "/v2/models/echo/infer"
			}
			var body io.Reader = strings.NewReader(tc.body)
			chunked := false
			for i := 0; i+1 < len(tc.headers); i += 2 {
				chunked = chunked || tc.headers[i] == "chunked"
			}
			if chunked {
				body = io.MultiReader(strings.NewReader(tc.body)) // unknown length
			}
			req, err := http.NewRequest(method, base+path, body)
			if err != nil {
				t.Fatal(err)
			}
			if method == http.MethodGet {
				req.Body, req.ContentLength = nil, 0
			}
			for i := 0; i+1 < len(tc.headers); i += 2 {
				if tc.headers[i] != "chunked" {
					req.Header.Set(tc.headers[i], tc.headers[i+1])
				}
			}
			r := send(t, req)
			var e struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(r.body, &e); err != nil {
				t.Fatalf("status %d, body is not a JSON error: %q", r.status, r.body)
			}
			t.Logf("%d %s", r.status, e.Error)
			if r.status != tc.status {
				t.Errorf("status %d, want %d (%s)", r.status, tc.status, e.Error)
			}
			if !strings.Contains(e.Error, tc.phrase) {
				t.Errorf("error %q does not mention %q", e.Error, tc.phrase)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tc.status == 405 && r.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
			// Still serving.
			ok := post(t, base+"/v2/models/echo/infer", []byte(in(`"shape":[1],"datatype":"FP32","data":[1]`)))
			if ok.status != http.StatusOK || !bytes.Contains(ok.body, []byte(`"data":[1]`)) {
				t.Fatalf("after %s: %d %s", tc.name, ok.status, ok.body)
			}
		})
	}
	if len(tests) < 20 {
		t.Fatalf("only %d cases", len(tests))
	}
}

// TestCleanPaths: in front of a ServeMux, an unclean path gets a JSON 404
// instead of the mux's redirect; clean ones, a trailing slash among them,
// reach the mux.
func TestCleanPaths(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := CleanPaths(mux)
	for p, want := range map[string]int{
		"/v2/models/m/infer": http.StatusTeapot, "/v2/models/m/": http.StatusTeapot, "/v2/": http.StatusTeapot,
		"/v2//models/m/infer": http.StatusNotFound, "/v2/./models": http.StatusNotFound, "/v2/models/..": http.StatusNotFound,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "http://x"+p, nil))
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", p, rec.Code, want)
		}
		if want == http.StatusNotFound && !strings.Contains(rec.Body.String(), `"error"`) {
			t.Errorf("%s: body %q is not a JSON error", p, rec.Body.String())
		}
	}
}
