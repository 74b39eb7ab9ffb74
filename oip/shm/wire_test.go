package shm_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
	"github.com/accelpool/accelpool/oip/grpcsvc"
	"github.com/accelpool/accelpool/oip/rest"
	"github.com/accelpool/accelpool/oip/shm"
	"github.com/accelpool/accelpool/tensor"
)

// wireClient is what both transports' clients offer.
type wireClient interface {
	oip.Service
	SharedMemoryRegister(context.Context, oip.SharedMemoryRegion) error
	SharedMemoryUnregister(context.Context, string) error
	SharedMemoryStatus(context.Context, string) ([]oip.SharedMemoryRegion, error)
}

// serve starts svc behind REST and gRPC on loopback and returns a client
// of each.
func serve(t *testing.T, svc oip.Service) map[string]wireClient {
	t.Helper()
	hs := httptest.NewServer(rest.NewHandler(svc, rest.Options{}))
	t.Cleanup(hs.Close)
	gs, err := grpcsvc.New(svc, grpcsvc.Options{}).NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	gc, err := grpcsvc.Dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gc.Close() })
	return map[string]wireClient{"rest": rest.NewClient(hs.URL, rest.ClientOptions{}), "grpc": gc}
}

// TestOverTheWire registers regions, infers through them and unregisters,
// over REST and gRPC, with the objects in /dev/shm as a client makes them.
func TestOverTheWire(t *testing.T) {
	key := "/accelpool-test-" + strings.ReplaceAll(t.Name(), "/", "-")
	path := shm.DefaultDir + key
	if err := os.WriteFile(path, make([]byte, 8192), 0o600); err != nil {
		t.Fatalf("cannot make a shared memory object: %v", err)
	}
	t.Cleanup(func() { os.Remove(path) })
	g := shm.NewRegistry("", 0)
	defer g.Close()
	e := &echo{}
	ctx := context.Background()
	for proto, c := range serve(t, shm.Wrap(e, g, 0)) {
		t.Run(proto, func(t *testing.T) {
			if !slices.Contains(c.ServerMetadata().Extensions, oip.ExtensionSystemSharedMemory) {
				t.Errorf("server metadata lacks %s", oip.ExtensionSystemSharedMemory)
			}
			in := oip.SharedMemoryRegion{Name: proto + "-in", Key: key, ByteSize: 4096}
			out := oip.SharedMemoryRegion{Name: proto + "-out", Key: key, Offset: 4096, ByteSize: 4096}
			for _, r := range []oip.SharedMemoryRegion{in, out} {
				if err := c.SharedMemoryRegister(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.SharedMemoryRegister(ctx, in); !errors.Is(err, errdefs.ErrAlreadyExists) {
				t.Errorf("registering %s twice: %v", in.Name, err)
			}
			if err := c.SharedMemoryRegister(ctx, oip.SharedMemoryRegion{Name: "x", Key: "/../x", ByteSize: 1}); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("registering a path: %v", err)
			}
			st, err := c.SharedMemoryStatus(ctx, in.Name)
			if err != nil || len(st) != 1 || st[0] != in {
				t.Errorf("status of %s: %+v, %v", in.Name, st, err)
			}
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(f32s(1.5, -2, 8), 0); err != nil {
				t.Fatal(err)
			}
			resp, err := c.Infer(ctx, &oip.InferRequest{ModelName: "double", ID: "r1",
				Inputs:  []oip.InferInput{{Tensor: tensor.Tensor{Name: "x", DataType: tensor.FP32, Shape: []int64{1, 3}}, Parameters: shmParams(in.Name, 0, 12)}},
				Outputs: []oip.RequestedOutput{{Name: "y", Parameters: shmParams(out.Name, 100, 12)}}})
			if err != nil {
				t.Fatal(err)
			}
			if resp.ID != "r1" || len(resp.Outputs) != 1 || resp.Outputs[0].Name != "y" || resp.Outputs[0].Data != nil || !slices.Equal(resp.Outputs[0].Shape, []int64{1, 3}) {
				t.Errorf("response %+v; want y [1 3] without data", resp)
			}
			got := make([]byte, 12)
			if _, err := f.ReadAt(got, 4096+100); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, f32s(3, -4, 16)) {
				t.Errorf("output region holds %v, want 3 -4 16", got)
			}
			// The same request with the output on the wire.
			resp, err = c.Infer(ctx, &oip.InferRequest{ModelName: "double",
				Inputs: []oip.InferInput{{Tensor: tensor.Tensor{Name: "x", DataType: tensor.FP32, Shape: []int64{3}}, Parameters: shmParams(in.Name, 0, 12)}}})
			if err != nil || len(resp.Outputs) != 1 || !bytes.Equal(resp.Outputs[0].Data, f32s(3, -4, 16)) {
				t.Errorf("output on the wire: %+v, %v", resp, err)
			}
			_, err = c.Infer(ctx, &oip.InferRequest{ModelName: "double",
				Inputs: []oip.InferInput{{Tensor: tensor.Tensor{Name: "x", DataType: tensor.FP32, Shape: []int64{3}}, Parameters: shmParams("gone", 0, 12)}}})
			if !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("an unknown region: %v", err)
			}
			if err := c.SharedMemoryUnregister(ctx, in.Name); err != nil {
				t.Fatal(err)
			}
			if _, err := c.SharedMemoryStatus(ctx, in.Name); !errors.Is(err, errdefs.ErrNotFound) {
				t.Errorf("status after unregister: %v", err)
			}
			if err := c.SharedMemoryUnregister(ctx, ""); err != nil {
				t.Fatal(err)
			}
			if st, err := c.SharedMemoryStatus(ctx, ""); err != nil || len(st) != 0 {
				t.Errorf("status after unregistering all: %+v, %v", st, err)
			}
		})
	}
}

// TestNotAllowed: a server without the extension refuses its calls and
// requests that name regions, with the flag that enables it.
func TestNotAllowed(t *testing.T) {
	ctx := context.Background()
	for proto, c := range serve(t, &echo{}) {
		t.Run(proto, func(t *testing.T) {
			if err := c.SharedMemoryRegister(ctx, oip.SharedMemoryRegion{Name: "a", Key: "/a", ByteSize: 1}); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "--allow-client-shm") {
				t.Errorf("register: %v", err)
			}
			if _, err := c.SharedMemoryStatus(ctx, ""); !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("status: %v", err)
			}
			_, err := c.Infer(ctx, &oip.InferRequest{ModelName: "double",
				Inputs: []oip.InferInput{{Tensor: tensor.Tensor{Name: "x", DataType: tensor.FP32, Shape: []int64{3}}, Parameters: shmParams("a", 0, 12)}}})
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "--allow-client-shm") {
				t.Errorf("infer with a region: %v", err)
			}
			_, err = c.Infer(ctx, &oip.InferRequest{ModelName: "double",
				Inputs:  []oip.InferInput{{Tensor: tensor.Tensor{Name: "x", DataType: tensor.FP32, Shape: []int64{1}, Data: f32s(1)}}},
				Outputs: []oip.RequestedOutput{{Name: "y", Parameters: shmParams("a", 0, 4)}}})
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "--allow-client-shm") {
				t.Errorf("infer with an output region: %v", err)
			}
		})
	}
}
