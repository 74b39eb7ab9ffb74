package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/accelpool/accelpool/client"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/internal/onnxtest"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/proxy"
)

// TestProxyJoin runs the device proxy as its own process against a control
// plane in another (`accelpool up`): the proxy learns the instances from
// --join, offloads a model it cannot run itself and answers what the model
// answers in-process; when the control plane's process is killed a model
// the device holds is answered locally and one it does not hold gets a
// clear error within the request's deadline; when the process comes back
// the proxy offloads again. Real models (ONNX Runtime), real processes, on
// loopback: no link is emulated here.
func TestProxyJoin(t *testing.T) {
	repo := requireDemoModels(t)
	w := newWorkload(t, requireORT(t), repo)
	bin := clusterBinary(t)
	dir := t.TempDir()

	// The control plane deploys both models; the device holds only ocr-cls.
	upRepo, devRepo := filepath.Join(dir, "up-models"), filepath.Join(dir, "device-models")
	for _, l := range []struct{ dir, model string }{{upRepo, "blazeface-front"}, {upRepo, "ocr-cls"}, {devRepo, "ocr-cls"}} {
		if err := os.MkdirAll(l.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(repo, l.model), filepath.Join(l.dir, l.model)); err != nil {
			t.Fatal(err)
		}
	}
	const token = "proxy-join-test-token"
	port := func() string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) }
	upHTTP, upGRPC := port(), port()
	ps := newProcSet(t, bin)
	up := ps.start("up", "up", "--data-dir", filepath.Join(dir, "up"), "--model-repository", upRepo, "--token", token,
		"--http", upHTTP, "--grpc", upGRPC, "--metrics", port(), "--etcd-listen", port())
	cl := client.New([]string{"http://" + upHTTP}, token, &http.Client{Timeout: 10 * time.Second})
	upReady := func() {
		t.Helper()
		if err := waitHTTP200("http://"+upHTTP+"/readyz", 60*time.Second); err != nil {
			t.Fatalf("up: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		if err := cl.WaitReady(ctx, "blazeface-front", "ocr-cls"); err != nil {
			t.Fatalf("up: applications not ready: %v", err)
		}
	}
	upReady()

	pHTTP, pGRPC := port(), port()
	ps.start("proxy", "proxy", "--join", "http://"+upHTTP, "--token", token, "--models", devRepo,
		"--http", pHTTP, "--grpc", pGRPC, "--probe-interval", "200ms", "--timeout", "5s")
	if err := waitHTTP200("http://"+pHTTP+"/v2/health/ready", 60*time.Second); err != nil {
		t.Fatalf("proxy: %v", err)
	}
	gc, err := grpcsvc.Dial(pGRPC)
	if err != nil {
		t.Fatal(err)
	}
	defer gc.Close()

	// infer asks the proxy for one model's answer with a deadline and checks
	// it against the in-process outputs; it returns where the proxy ran it.
	infer := func(model string, deadline time.Duration) (string, time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		resp, err := gc.Infer(ctx, &oip.InferRequest{ModelName: model, Inputs: []oip.InferInput{{Tensor: w.inputs[model]}}})
		took := time.Since(start)
		if err != nil {
			return "", took, err
		}
		if err := onnxtest.CheckOutputs(resp.Outputs, w.want[model]); err != nil {
			return "", took, fmt.Errorf("%s through the proxy: %w", model, err)
		}
		where, _ := resp.Parameters[proxy.ParamTarget].(string)
		return where, took, nil
	}
	// offloaded waits until the proxy has discovered an instance of model
	// and runs it there.
	offloaded := func(model string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		var last string
		for time.Since(start) < within {
			where, _, err := infer(model, 5*time.Second)
			if err == nil && where != proxy.LocalName && where != "" {
				return time.Since(start)
			}
			last = fmt.Sprintf("ran on %q, err %v", where, err)
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s not offloaded through the proxy within %v (last: %s)", model, within, last)
		return 0
	}
	took := offloaded("blazeface-front", 30*time.Second)
	t.Logf("blazeface-front (not on the device) offloaded through the discovered instance after %v", took.Round(time.Millisecond))
	for range 5 {
		where, _, err := infer("blazeface-front", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if where == proxy.LocalName {
			t.Fatal("blazeface-front ran locally on a device that does not hold it")
		}
	}
	where, _, err := infer("ocr-cls", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ocr-cls (on the device and deployed) ran on %s", where)

	// The control plane and its agent die: what the device holds runs
	// locally, what it does not gets an error naming the model, and
	// nothing waits past its deadline.
	up.kill()
	const deadline = 3 * time.Second
	for i := range 5 {
		where, took, err := infer("ocr-cls", deadline)
		if err != nil {
			t.Fatalf("ocr-cls request %d after the control plane died: %v (after %v)", i, err, took)
		}
		if where != proxy.LocalName {
			t.Fatalf("ocr-cls request %d after the control plane died ran on %q, want local", i, where)
		}
		_, took, err = infer("blazeface-front", deadline)
		if err == nil {
			t.Fatalf("blazeface-front request %d answered with nothing left that runs it", i)
		}
		if took > deadline+500*time.Millisecond {
			t.Fatalf("blazeface-front request %d took %v, past its %v deadline", i, took, deadline)
		}
		if !strings.Contains(err.Error(), "blazeface-front") {
			t.Fatalf("blazeface-front request %d: error does not name the model: %v", i, err)
		}
		if i == 0 {
			t.Logf("blazeface-front with the control plane dead: %v after %v: %v", errdefs.GRPCCode(err), took.Round(time.Millisecond), err)
		}
	}

	// It comes back (same data directory and ports): offloading resumes.
	up.restart()
	upReady()
	took = offloaded("blazeface-front", 60*time.Second)
	t.Logf("control plane restarted: blazeface-front offloaded again after %v", took.Round(time.Millisecond))
}
