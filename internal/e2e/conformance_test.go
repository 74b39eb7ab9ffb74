package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/accelpool/accelpool/agent"
	"github.com/accelpool/accelpool/agent/runtime"
	"github.com/accelpool/accelpool/internal/onnxtest"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/tensor"
)

// TestConformance runs every ONNX backend node test case that ONNX Runtime
// passes in-process through the server over REST JSON, REST binary and
// gRPC, and requires the same outputs. It prints the counts.
func TestConformance(t *testing.T) {
	requireTestdata(t)
	b := requireORT(t)
	cases, err := onnxtest.ListCases(testdataDir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	type passed struct {
		c    onnxtest.Case
		data onnxtest.CaseData
		outs []tensor.Tensor // in-process outputs
	}
	var ok []passed
	var inproc onnxtest.Summary
	repo := t.TempDir()
	for _, c := range cases {
		r, d, outs := runInProcess(ctx, b, c)
		inproc.Add(r)
		if r.Status != onnxtest.Passed {
			continue
		}
		dir := filepath.Join(repo, c.Name)
		if err := os.MkdirAll(filepath.Join(dir, "1"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(c.Model, filepath.Join(dir, "1", "model.onnx")); err != nil {
			t.Fatal(err)
		}
		// One intra-op thread: hundreds of sessions stay cheap.
		if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("intra_op_threads: 1\ninter_op_threads: 1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		ok = append(ok, passed{c, d, outs})
	}
	t.Logf("in-process (ONNX Runtime): %s", inproc)
	if len(ok) < 500 {
		t.Fatalf("only %d cases pass in-process; expected most of the %d node cases", len(ok), len(cases))
	}

	s := startStack(t, repo, agent.NodeConfig{})
	counts := map[string]map[string]int{}
	var failures []string
	for _, tr := range transports {
		counts[tr] = map[string]int{}
		for _, p := range ok {
			req := &oip.InferRequest{ModelName: p.c.Name, ID: "conf-" + p.c.Name}
			for _, in := range p.data.Inputs {
				req.Inputs = append(req.Inputs, oip.InferInput{Tensor: in})
			}
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			resp, err := s.clients[tr].Infer(rctx, req)
			cancel()
			status := ""
			switch {
			case err != nil && tr == "rest-json" && jsonCannotCarry(p.data):
				status = "not-json"
			case err != nil:
				status = "error"
				failures = append(failures, fmt.Sprintf("%s %s: %v", tr, p.c.Name, err))
			case resp.ID != req.ID:
				status = "error"
				failures = append(failures, fmt.Sprintf("%s %s: id %q not echoed", tr, p.c.Name, resp.ID))
			default:
				if cerr := onnxtest.CheckOutputs(resp.Outputs, p.data.Outputs); cerr != nil {
					status = "mismatch"
					failures = append(failures, fmt.Sprintf("%s %s: %v", tr, p.c.Name, cerr))
				} else if identical(resp.Outputs, p.outs) {
					status = "identical"
				} else {
					status = "within-tolerance"
					t.Logf("%s %s: equal within tolerance, not bit-identical", tr, p.c.Name)
				}
			}
			counts[tr][status]++
		}
	}
	for _, tr := range transports {
		c := counts[tr]
		t.Logf("%-11s: %d cases: %d bit-identical to in-process, %d equal within tolerance, %d not carried by JSON (non-UTF-8 BYTES), %d mismatched, %d errors",
			tr, len(ok), c["identical"], c["within-tolerance"], c["not-json"], c["mismatch"], c["error"])
	}
	sort.Strings(failures)
	for _, f := range failures {
		t.Error(f)
	}
	fmt.Printf("conformance: %d node cases, %d pass in-process; served: rest-json %d, rest-binary %d, grpc %d pass\n",
		len(cases), len(ok),
		counts["rest-json"]["identical"]+counts["rest-json"]["within-tolerance"],
		counts["rest-binary"]["identical"]+counts["rest-binary"]["within-tolerance"],
		counts["grpc"]["identical"]+counts["grpc"]["within-tolerance"])
}

// runInProcess is onnxtest.RunCase keeping the outputs for comparison.
func runInProcess(ctx context.Context, b runtime.Backend, c onnxtest.Case) (onnxtest.Result, onnxtest.CaseData, []tensor.Tensor) {
	r := onnxtest.Result{Case: c}
	d, err := onnxtest.ReadCase(c)
	switch {
	case errors.Is(err, onnxtest.ErrUnsupported):
		r.Status, r.Detail = onnxtest.Unsupported, err.Error()
		return r, d, nil
	case err != nil:
		r.Status, r.Detail = onnxtest.LoadFailed, err.Error()
		return r, d, nil
	}
	sess, err := b.Load(ctx, c.Model, runtime.Options{IntraOpThreads: 1, InterOpThreads: 1})
	if err != nil {
		r.Status, r.Detail = onnxtest.LoadFailed, err.Error()
		return r, d, nil
	}
	defer sess.Close()
	outs, err := sess.Run(ctx, d.Inputs, nil)
	if err != nil {
		r.Status, r.Detail = onnxtest.RunFailed, err.Error()
		return r, d, nil
	}
	if err := onnxtest.CheckOutputs(outs, d.Outputs); err != nil {
		r.Status, r.Detail = onnxtest.Mismatch, err.Error()
		return r, d, nil
	}
	r.Status = onnxtest.Passed
	return r, d, outs
}

// jsonCannotCarry reports whether a case has BYTES that are not UTF-8,
// which JSON strings cannot represent.
func jsonCannotCarry(d onnxtest.CaseData) bool {
	for _, list := range [][]tensor.Tensor{d.Inputs, d.Outputs} {
		for _, t := range list {
			if t.DataType != tensor.Bytes {
				continue
			}
			n, _ := tensor.NumElements(t.Shape)
			elems, err := tensor.SplitBytes(t.Data, n)
			if err != nil {
				return true
			}
			for _, e := range elems {
				if !utf8.Valid(e) {
					return true
				}
			}
		}
	}
	return false
}

func identical(got, want []tensor.Tensor) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].Name != want[i].Name || !bytes.Equal(got[i].Data, want[i].Data) {
			return false
		}
	}
	return true
}
