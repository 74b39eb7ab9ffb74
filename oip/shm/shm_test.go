package shm_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/shm"
	"github.com/accelpool/accelpool/tensor"
)

// echo is an oip.Service whose one model "double" answers output "y", each
// FP32 element of input "x" doubled. It records the last request it got,
// and blocks in Infer while hold is non-nil.
type echo struct {
	got  *oip.InferRequest
	hold chan struct{}
	in   chan struct{} // closed when Infer is entered (with hold)
}

func (e *echo) ServerMetadata() oip.ServerMetadata {
	return oip.ServerMetadata{Name: "echo", Extensions: []string{"model_repository"}}
}
func (e *echo) Live() bool  { return true }
func (e *echo) Ready() bool { return true }
func (e *echo) ModelMetadata(context.Context, string, string) (oip.ModelMetadata, error) {
	return oip.ModelMetadata{}, errdefs.ErrNotFound
}
func (e *echo) ModelReady(context.Context, string, string) (bool, error) { return true, nil }
func (e *echo) RepositoryIndex(context.Context, bool) ([]oip.ModelIndexEntry, error) {
	return nil, nil
}
func (e *echo) LoadModel(context.Context, string) error   { return nil }
func (e *echo) UnloadModel(context.Context, string) error { return nil }

func (e *echo) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	e.got = req
	if e.hold != nil {
		close(e.in)
		<-e.hold
	}
	if len(req.Inputs) != 1 || req.Inputs[0].DataType != tensor.FP32 {
		return nil, errdefs.Invalid("double takes one FP32 input")
	}
	x := req.Inputs[0].Tensor
	y := tensor.Tensor{Name: "y", DataType: tensor.FP32, Shape: slices.Clone(x.Shape), Data: make([]byte, len(x.Data))}
	for i := 0; i+4 <= len(x.Data); i += 4 {
		v := math.Float32frombits(binary.LittleEndian.Uint32(x.Data[i:]))
		binary.LittleEndian.PutUint32(y.Data[i:], math.Float32bits(2*v))
	}
	return &oip.InferResponse{ModelName: req.ModelName, Outputs: []tensor.Tensor{y}}, nil
}

func f32s(vs ...float32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// object makes a shared memory object of size bytes in dir, named key.
func object(t *testing.T, dir, key string, size int) string {
	t.Helper()
	path := filepath.Join(dir, strings.TrimPrefix(key, "/"))
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func shmParams(region string, offset, size int64) oip.Parameters {
	return oip.Parameters{oip.ParamSharedMemoryRegion: region, oip.ParamSharedMemoryOffset: offset, oip.ParamSharedMemoryByteSize: size}
}

func TestRegisterErrors(t *testing.T) {
	dir := t.TempDir()
	object(t, dir, "/obj", 8192)
	if err := os.Mkdir(filepath.Join(dir, "adir"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "obj"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	g := shm.NewRegistry(dir, 3)
	defer g.Close()
	ctx := context.Background()
	if err := g.Register(ctx, oip.SharedMemoryRegion{Name: "taken", Key: "/obj", ByteSize: 10}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		r    oip.SharedMemoryRegion
		kind error
		msg  string
	}{
		{"no name", oip.SharedMemoryRegion{Key: "/obj", ByteSize: 1}, errdefs.ErrInvalid, "needs a name"},
		{"key without slash", oip.SharedMemoryRegion{Name: "a", Key: "obj", ByteSize: 1}, errdefs.ErrInvalid, `must start with "/"`},
		{"key with a path", oip.SharedMemoryRegion{Name: "a", Key: "/../etc/passwd", ByteSize: 1}, errdefs.ErrInvalid, "no other"},
		{"key dot dot", oip.SharedMemoryRegion{Name: "a", Key: "/..", ByteSize: 1}, errdefs.ErrInvalid, "not a shared memory object's name"},
		{"key empty name", oip.SharedMemoryRegion{Name: "a", Key: "/", ByteSize: 1}, errdefs.ErrInvalid, "not a shared memory object's name"},
		{"no object", oip.SharedMemoryRegion{Name: "a", Key: "/missing", ByteSize: 1}, errdefs.ErrNotFound, "create it"},
		{"zero size", oip.SharedMemoryRegion{Name: "a", Key: "/obj"}, errdefs.ErrInvalid, "byte_size is 0"},
		{"beyond the object", oip.SharedMemoryRegion{Name: "a", Key: "/obj", ByteSize: 8193}, errdefs.ErrInvalid, "do not fit"},
		{"offset beyond", oip.SharedMemoryRegion{Name: "a", Key: "/obj", Offset: 8000, ByteSize: 193}, errdefs.ErrInvalid, "do not fit"},
		{"offset overflow", oip.SharedMemoryRegion{Name: "a", Key: "/obj", Offset: math.MaxUint64, ByteSize: 2}, errdefs.ErrInvalid, "do not fit"},
		{"directory", oip.SharedMemoryRegion{Name: "a", Key: "/adir", ByteSize: 1}, errdefs.ErrInvalid, "read-write"},
		{"symlink", oip.SharedMemoryRegion{Name: "a", Key: "/link", ByteSize: 1}, errdefs.ErrInvalid, "read-write"},
		{"name taken", oip.SharedMemoryRegion{Name: "taken", Key: "/obj", ByteSize: 1}, errdefs.ErrAlreadyExists, "already registered"},
	} {
		err := g.Register(ctx, tc.r)
		if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: got %v, want %v with %q", tc.name, err, tc.kind, tc.msg)
		}
	}
	for _, n := range []string{"b", "c"} {
		if err := g.Register(ctx, oip.SharedMemoryRegion{Name: n, Key: "/obj", ByteSize: 10}); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.Register(ctx, oip.SharedMemoryRegion{Name: "d", Key: "/obj", ByteSize: 10}); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Errorf("fourth region of three: %v", err)
	}
}

func TestStatusAndUnregister(t *testing.T) {
	dir := t.TempDir()
	object(t, dir, "/obj", 100)
	g := shm.NewRegistry(dir, 0)
	ctx := context.Background()
	for _, r := range []oip.SharedMemoryRegion{{Name: "b", Key: "/obj", Offset: 50, ByteSize: 50}, {Name: "a", Key: "/obj", ByteSize: 50}} {
		if err := g.Register(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	all, err := g.Status(ctx, "")
	if err != nil || len(all) != 2 || all[0].Name != "a" || all[1] != (oip.SharedMemoryRegion{Name: "b", Key: "/obj", Offset: 50, ByteSize: 50}) {
		t.Fatalf("status: %+v, %v", all, err)
	}
	if one, err := g.Status(ctx, "a"); err != nil || len(one) != 1 || one[0].Name != "a" {
		t.Errorf("status a: %+v, %v", one, err)
	}
	if _, err := g.Status(ctx, "zz"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("status of an unknown region: %v", err)
	}
	if err := g.Unregister(ctx, "zz"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unregister of an unknown region: %v", err)
	}
	if err := g.Unregister(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if all, _ := g.Status(ctx, ""); len(all) != 1 || all[0].Name != "b" {
		t.Errorf("after unregistering a: %+v", all)
	}
	if err := g.Unregister(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if all, _ := g.Status(ctx, ""); len(all) != 0 {
		t.Errorf("after unregistering all: %+v", all)
	}
}

// TestInferThroughRegions reads an input from a region at an offset that
// is not page-aligned and writes the output into another region.
func TestInferThroughRegions(t *testing.T) {
	dir := t.TempDir()
	path := object(t, dir, "/obj", 3*4096)
	g := shm.NewRegistry(dir, 0)
	defer g.Close()
	e := &echo{}
	svc := shm.Wrap(e, g, 0)
	ctx := context.Background()
	if err := svc.RegisterSystemSharedMemory(ctx, oip.SharedMemoryRegion{Name: "in", Key: "/obj", Offset: 4100, ByteSize: 100}); err != nil {
		t.Fatal(err)
	}
	if err := svc.RegisterSystemSharedMemory(ctx, oip.SharedMemoryRegion{Name: "out", Key: "/obj", Offset: 8192, ByteSize: 64}); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(f32s(1, 2, 3), 4100+8); err != nil {
		t.Fatal(err)
	}
	req := &oip.InferRequest{
		ModelName: "double",
		Inputs: []oip.InferInput{{Tensor: tensor.Tensor{Name: "x", DataType: tensor.FP32, Shape: []int64{3}},
			Parameters: oip.Parameters{oip.ParamSharedMemoryRegion: "in", oip.ParamSharedMemoryOffset: int64(8), oip.ParamSharedMemoryByteSize: int64(12), "keep": "me"}}},
		Outputs: []oip.RequestedOutput{{Name: "y", Parameters: shmParams("out", 4, 12)}},
	}
	resp, err := svc.Infer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := e.got.Inputs[0]; !bytes.Equal(got.Data, f32s(1, 2, 3)) || len(got.Parameters) != 1 || got.Parameters["keep"] != "me" {
		t.Errorf("the service got %v with parameters %v", got.Data, got.Parameters)
	}
	if len(e.got.Outputs) != 1 || e.got.Outputs[0].Parameters != nil {
		t.Errorf("the service got requested outputs %+v; want y without shared memory parameters", e.got.Outputs)
	}
	if len(resp.Outputs) != 1 || resp.Outputs[0].Data != nil || !slices.Equal(resp.Outputs[0].Shape, []int64{3}) {
		t.Errorf("response outputs %+v; want y [3] without data", resp.Outputs)
	}
	out := make([]byte, 12)
	if _, err := f.ReadAt(out, 8192+4); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, f32s(2, 4, 6)) {
		t.Errorf("the output region holds %v, want 2 4 6", out)
	}
	if _, ok := req.SharedMemoryOutput("y"); !ok || req.Inputs[0].Data != nil {
		t.Error("Infer changed the caller's request")
	}
	if md := svc.ServerMetadata(); !slices.Contains(md.Extensions, oip.ExtensionSystemSharedMemory) || !slices.Contains(md.Extensions, "model_repository") {
		t.Errorf("extensions %v", md.Extensions)
	}
}

func TestBadReferences(t *testing.T) {
	dir := t.TempDir()
	object(t, dir, "/obj", 4096)
	g := shm.NewRegistry(dir, 0)
	defer g.Close()
	svc := shm.Wrap(&echo{}, g, 0)
	ctx := context.Background()
	for _, r := range []oip.SharedMemoryRegion{{Name: "in", Key: "/obj", ByteSize: 64}, {Name: "small", Key: "/obj", Offset: 64, ByteSize: 8}} {
		if err := g.Register(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	x := tensor.Tensor{Name: "x", DataType: tensor.FP32, Shape: []int64{3}}
	for _, tc := range []struct {
		name    string
		in      oip.Parameters
		data    []byte
		out     oip.Parameters
		kind    error
		message string
	}{
		{"size without region", oip.Parameters{oip.ParamSharedMemoryByteSize: int64(12)}, nil, nil, errdefs.ErrInvalid, "no shared_memory_region"},
		{"region without size", oip.Parameters{oip.ParamSharedMemoryRegion: "in"}, nil, nil, errdefs.ErrInvalid, "no shared_memory_byte_size"},
		{"region not a string", oip.Parameters{oip.ParamSharedMemoryRegion: int64(3), oip.ParamSharedMemoryByteSize: int64(12)}, nil, nil, errdefs.ErrInvalid, "region's name"},
		{"negative size", shmParams("in", 0, -12), nil, nil, errdefs.ErrInvalid, "non-negative"},
		{"size against shape", shmParams("in", 0, 16), nil, nil, errdefs.ErrInvalid, "needs 12 bytes"},
		{"unknown region", shmParams("nope", 0, 12), nil, nil, errdefs.ErrNotFound, `no shared memory region "nope"`},
		{"outside the region", shmParams("in", 60, 12), nil, nil, errdefs.ErrInvalid, "do not fit"},
		{"data and region", shmParams("in", 0, 12), f32s(1, 2, 3), nil, errdefs.ErrInvalid, "give one"},
		{"output region too small", shmParams("in", 0, 12), nil, shmParams("small", 0, 8), errdefs.ErrInvalid, "holds 8"},
		{"output unknown region", shmParams("in", 0, 12), nil, shmParams("nope", 0, 8), errdefs.ErrNotFound, "nope"},
	} {
		in := x
		in.Data = tc.data
		req := &oip.InferRequest{ModelName: "double", Inputs: []oip.InferInput{{Tensor: in, Parameters: tc.in}}}
		if tc.out != nil {
			req.Outputs = []oip.RequestedOutput{{Name: "y", Parameters: tc.out}}
		}
		_, err := svc.Infer(ctx, req)
		if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.message) {
			t.Errorf("%s: got %v, want %v with %q", tc.name, err, tc.kind, tc.message)
		}
	}
	// Bytes in the region that fail validation (a small, unpooled copy):
	// an invalid-argument error, not a panic.
	if err := os.WriteFile(filepath.Join(dir, "obj"), append([]byte{2}, make([]byte, 4095)...), 0o600); err != nil {
		t.Fatal(err)
	}
	b := tensor.Tensor{Name: "x", DataType: tensor.Bool, Shape: []int64{1}}
	_, err := svc.Infer(ctx, &oip.InferRequest{ModelName: "double", Inputs: []oip.InferInput{{Tensor: b, Parameters: shmParams("in", 0, 1)}}})
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "not 0 or 1") {
		t.Errorf("a BOOL of 2 in shared memory: got %v", err)
	}
}

// TestTruncatedObject: a client that shrinks its object under a registered
// region gets an error; the server does not crash on the fault.
func TestTruncatedObject(t *testing.T) {
	dir := t.TempDir()
	path := object(t, dir, "/obj", 3*4096)
	g := shm.NewRegistry(dir, 0)
	defer g.Close()
	svc := shm.Wrap(&echo{}, g, 0)
	ctx := context.Background()
	for _, r := range []oip.SharedMemoryRegion{{Name: "in", Key: "/obj", Offset: 8192, ByteSize: 4096}, {Name: "ok", Key: "/obj", ByteSize: 4096}} {
		if err := g.Register(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	x := tensor.Tensor{Name: "x", DataType: tensor.FP32, Shape: []int64{3}}
	_, err := svc.Infer(ctx, &oip.InferRequest{ModelName: "double", Inputs: []oip.InferInput{{Tensor: x, Parameters: shmParams("in", 0, 12)}}})
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("input from a truncated object: %v", err)
	}
	_, err = svc.Infer(ctx, &oip.InferRequest{ModelName: "double",
		Inputs:  []oip.InferInput{{Tensor: x, Parameters: shmParams("ok", 0, 12)}},
		Outputs: []oip.RequestedOutput{{Name: "y", Parameters: shmParams("in", 0, 12)}}})
	if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("output into a truncated object: %v", err)
	}
}

// TestUnregisterInUse: a region unregistered while a request will still
// write into it stays mapped until that request is done.
func TestUnregisterInUse(t *testing.T) {
	dir := t.TempDir()
	path := object(t, dir, "/obj", 4096)
	g := shm.NewRegistry(dir, 0)
	defer g.Close()
	e := &echo{hold: make(chan struct{}), in: make(chan struct{})}
	svc := shm.Wrap(e, g, 0)
	ctx := context.Background()
	if err := g.Register(ctx, oip.SharedMemoryRegion{Name: "r", Key: "/obj", ByteSize: 4096}); err != nil {
		t.Fatal(err)
	}
	x := tensor.Tensor{Name: "x", DataType: tensor.FP32, Shape: []int64{2}, Data: f32s(5, 6)}
	errc := make(chan error, 1)
	go func() {
		_, err := svc.Infer(ctx, &oip.InferRequest{ModelName: "double", Inputs: []oip.InferInput{{Tensor: x}},
			Outputs: []oip.RequestedOutput{{Name: "y", Parameters: shmParams("r", 16, 8)}}})
		errc <- err
	}()
	<-e.in
	if err := g.Unregister(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if all, _ := g.Status(ctx, ""); len(all) != 0 {
		t.Errorf("status after unregister: %+v", all)
	}
	close(e.hold)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[16:24], f32s(10, 12)) {
		t.Errorf("the region holds %v, want 10 12", b[16:24])
	}
}

// TestInputBytesBounded: the inputs one request reads from shared memory
// are bounded in all, as a body is on the wire, before anything is copied.
func TestInputBytesBounded(t *testing.T) {
	dir := t.TempDir()
	object(t, dir, "/obj", 4096)
	g := shm.NewRegistry(dir, 0)
	defer g.Close()
	e := &echo{}
	svc := shm.Wrap(e, g, 16)
	ctx := context.Background()
	if err := g.Register(ctx, oip.SharedMemoryRegion{Name: "r", Key: "/obj", ByteSize: 4096}); err != nil {
		t.Fatal(err)
	}
	in := func(name string, off, n int64) oip.InferInput {
		return oip.InferInput{Tensor: tensor.Tensor{Name: name, DataType: tensor.FP32, Shape: []int64{n / 4}}, Parameters: shmParams("r", off, n)}
	}
	if _, err := svc.Infer(ctx, &oip.InferRequest{ModelName: "double", Inputs: []oip.InferInput{in("x", 0, 16)}}); err != nil {
		t.Fatalf("16 bytes at a limit of 16: %v", err)
	}
	e.got = nil
	_, err := svc.Infer(ctx, &oip.InferRequest{ModelName: "double", Inputs: []oip.InferInput{in("x", 0, 8), in("z", 8, 12)}})
	if !errors.Is(err, errdefs.ErrTooLarge) || !strings.Contains(err.Error(), `input "z"`) || !strings.Contains(err.Error(), "limit of 16") {
		t.Errorf("20 bytes over two inputs at a limit of 16: %v", err)
	}
	if e.got != nil {
		t.Error("the service ran a request over the limit")
	}
}
