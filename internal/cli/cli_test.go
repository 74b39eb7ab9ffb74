package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSizeAndAccelerators(t *testing.T) {
	for in, want := range map[string]int64{"8GiB": 8 << 30, "512MiB": 512 << 20, "1.5GB": 1500000000, "1024": 1024} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "-1GiB", "lots", "0", "NaNGiB", "InfGiB", "1e30GiB", "0.1B"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
	acc, err := parseAccelerators("gpu:80GiB:100,cpu:16GiB:8,gpu:40GiB")
	if err != nil || len(acc) != 3 || acc[2].ID != "gpu1" || acc[1].Compute != 8 || acc[2].Compute != 1 {
		t.Fatalf("%+v %v", acc, err)
	}
	for _, bad := range []string{"fpga:1GiB", "gpu", "gpu:1GiB:-2", "gpu:big", "cpu:1GiB:NaN", "cpu:1GiB:Inf", "cpu:1e30GiB"} {
		if _, err := parseAccelerators(bad); err == nil {
			t.Errorf("parseAccelerators(%q) accepted", bad)
		}
	}
}

func TestReorderAndLabels(t *testing.T) {
	got := reorder([]string{"push", "m.onnx", "--name", "x", "--replace"})
	if strings.Join(got, " ") != "--name x --replace push m.onnx" {
		t.Errorf("reorder: %v", got)
	}
	l, err := parseLabels("zone=eu, gpu=a100")
	if err != nil || l["zone"] != "eu" || l["gpu"] != "a100" {
		t.Errorf("labels %v %v", l, err)
	}
	if _, err := parseLabels("novalue"); err == nil {
		t.Error("label without = accepted")
	}
}

func TestServerTokenIsGeneratedOnceAndPrivate(t *testing.T) {
	dir := t.TempDir()
	t1, gen, err := serverToken("", dir)
	if err != nil || !gen || len(t1) < 32 {
		t.Fatalf("%q %v %v", t1, gen, err)
	}
	t2, gen2, _ := serverToken("", dir)
	if t2 != t1 || gen2 {
		t.Fatal("token not kept")
	}
	st, _ := os.Stat(filepath.Join(dir, "token"))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v", st.Mode())
	}
	if t3, _, _ := serverToken("given", dir); t3 != "given" {
		t.Fatal("flag token ignored")
	}
}

func TestHelpAndUnknownCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "deploy") {
		t.Fatalf("help: %d %s", code, out.String())
	}
	for _, cmd := range []string{"up", "server", "agent", "deploy", "get", "explain", "infer", "serve"} {
		out.Reset()
		errb.Reset()
		if code := Main([]string{cmd, "--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "Usage: accelpool "+cmd) {
			t.Errorf("%s --help: code %d, %q", cmd, code, errb.String())
		}
	}
	if code := Main([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown command") {
		t.Fatalf("unknown command: %d", code)
	}
	errb.Reset()
	if code := Main([]string{"deploy", "-f", "/nonexistent.yaml"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "nonexistent") {
		t.Fatalf("missing file: %d %s", code, errb.String())
	}
	// Bad server flags are named before anything starts or listens.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--max-body-bytes", "-1"}, "--max-body-bytes -1: must be between 4096 and 2147483647"},
		{[]string{"up", "--max-body-bytes", "4294967296"}, "--max-body-bytes 4294967296: must be between"},
		{[]string{"proxy", "--max-body-bytes", "0", "--target", "name=a,addr=127.0.0.1:1"}, "--max-body-bytes 0: must be between"},
		{[]string{"serve", "--providers", "bogus"}, `--providers "bogus": "bogus" is not one of tensorrt, cuda, cpu`},
		{[]string{"up", "--etcd-listen", "0.0.0.0:2379", "--data-dir", "/nonexistent/accelpool-test"}, "--etcd-listen 0.0.0.0:2379 binds beyond loopback"},
		{[]string{"server", "--etcd-listen", "10.1.2.3:2379", "--data-dir", "/nonexistent/accelpool-test"}, "the embedded etcd has no authentication"},
		{[]string{"up", "--providers", "cuda,,cpu"}, `"" is not one of`},
		{[]string{"agent", "--providers", "cpu,cpu", "--join", "http://127.0.0.1:1"}, "cpu is given twice"},
		{[]string{"serve", "extra"}, `unexpected arguments ["extra"]`},
		{[]string{"infer", "--model", "m", "--max-side", "0"}, "--max-side 0: must be at least 32"},
		{[]string{"infer", "--model", "m", "--scale", "0"}, "--scale 0: must be a finite number other than 0"},
		{[]string{"infer", "--model", "m", "--std", "1,0,1"}, `--std "1,0,1": every entry divides`},
		{[]string{"infer", "--model", "m", "--mean", "0,NaN,0"}, "NaN is not a finite number"},
		{[]string{"bench", "overhead", "--client-cpus", "1;rm"}, `--client-cpus "1;rm": want a CPU list`},
		{[]string{"bench", "overhead", "--client-cpus", "1", "--client", "in-process"}, "--client-cpus needs --client process"},
	} {
		errb.Reset()
		if code := Main(c.args, &out, &errb); code != 1 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%v: code %d, %q; want 1 and %q", c.args, code, errb.String(), c.want)
		}
	}
	// Bad proxy timings are named before anything starts.
	for _, c := range []struct{ flag, want string }{
		{"--refresh-after=10ms", "--refresh-after 10ms: at least 1s"},
		{"--refresh-after=-1s", "--refresh-after -1s: must not be negative"},
		{"--probe-interval=1ms", "--probe-interval 1ms: at least 10ms"},
	} {
		errb.Reset()
		if code := Main([]string{"proxy", c.flag, "--target", "name=a,addr=127.0.0.1:1"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), c.want) {
			t.Errorf("proxy %s: code %d, %q", c.flag, code, errb.String())
		}
	}
}
