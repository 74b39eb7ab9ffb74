package grpcsvc

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/accelpool/accelpool/api/inference"
	"github.com/accelpool/accelpool/errdefs"
	"github.com/accelpool/accelpool/oip"
)

// DefaultCallTimeout bounds the Client calls whose oip.Service methods take
// no context: ServerMetadata, Live and Ready.
const DefaultCallTimeout = 5 * time.Second

// Client is an oip.Service served by a remote GRPCInferenceService (accelpool,
// Triton or KServe). Errors come back wrapping the errdefs sentinels, so a
// remote failure reads like a local one.
type Client struct {
	rpc   pb.GRPCInferenceServiceClient
	conn  *grpc.ClientConn // set when the Client owns it
	calls time.Duration
}

var _ oip.Service = (*Client)(nil)

// NewClient wraps an existing connection; Close leaves it open. The
// connection's own call options apply: grpc-go's 4 MiB default receive limit
// is likely too small for inference, see Dial.
func NewClient(conn grpc.ClientConnInterface) *Client {
	return &Client{rpc: pb.NewGRPCInferenceServiceClient(conn), calls: DefaultCallTimeout}
}

// Dial connects to addr (host:port, or any grpc target). By default it uses
// plaintext and allows messages of DefaultMaxMsgSize both ways; opts come
// after these defaults and so override them (grpc.WithTransportCredentials
// for TLS). The connection is made lazily, on the first call.
func Dial(addr string, opts ...grpc.DialOption) (*Client, error) {
	all := append(DefaultDialOptions(), opts...)
	conn, err := grpc.NewClient(addr, all...)
	if err != nil {
		return nil, fmt.Errorf("grpc client %s: %w", addr, err)
	}
	c := NewClient(conn)
	c.conn = conn
	return c, nil
}

// DefaultDialOptions are what Dial uses before the caller's options:
// plaintext, DefaultMaxMsgSize messages both ways, HTTP/2 flow-control
// windows of DefaultWindowSize so a multi-megabyte tensor is not sent in
// 64 KiB steps that each wait for a window update, and read and write
// buffers of DefaultBufferSize.
func DefaultDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(DefaultMaxMsgSize),
			grpc.MaxCallSendMsgSize(DefaultMaxMsgSize),
		),
		grpc.WithInitialWindowSize(DefaultWindowSize),
		grpc.WithInitialConnWindowSize(DefaultWindowSize),
		grpc.WithReadBufferSize(DefaultBufferSize),
		grpc.WithWriteBufferSize(DefaultBufferSize),
	}
}

// Close closes the connection if Dial opened it.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

func (c *Client) shortCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.calls)
}

// ServerMetadata implements oip.Service; on failure it returns the zero value.
func (c *Client) ServerMetadata() oip.ServerMetadata {
	ctx, cancel := c.shortCtx()
	defer cancel()
	r, err := c.rpc.ServerMetadata(ctx, &pb.ServerMetadataRequest{})
	if err != nil {
		return oip.ServerMetadata{}
	}
	return oip.ServerMetadata{Name: r.GetName(), Version: r.GetVersion(), Extensions: r.GetExtensions()}
}

// Live implements oip.Service; an unreachable server is not live.
func (c *Client) Live() bool {
	ctx, cancel := c.shortCtx()
	defer cancel()
	r, err := c.rpc.ServerLive(ctx, &pb.ServerLiveRequest{})
	return err == nil && r.GetLive()
}

// Ready implements oip.Service; an unreachable server is not ready.
func (c *Client) Ready() bool {
	ctx, cancel := c.shortCtx()
	defer cancel()
	r, err := c.rpc.ServerReady(ctx, &pb.ServerReadyRequest{})
	return err == nil && r.GetReady()
}

// ModelMetadata implements oip.Service.
func (c *Client) ModelMetadata(ctx context.Context, name, version string) (oip.ModelMetadata, error) {
	r, err := c.rpc.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: name, Version: version})
	if err != nil {
		return oip.ModelMetadata{}, errdefs.FromGRPC(err)
	}
	md := oip.ModelMetadata{Name: r.GetName(), Versions: r.GetVersions(), Platform: r.GetPlatform()}
	if md.Inputs, err = metadataFromProto(r.GetInputs()); err != nil {
		return oip.ModelMetadata{}, malformed(err)
	}
	if md.Outputs, err = metadataFromProto(r.GetOutputs()); err != nil {
		return oip.ModelMetadata{}, malformed(err)
	}
	return md, nil
}

// ModelReady implements oip.Service.
func (c *Client) ModelReady(ctx context.Context, name, version string) (bool, error) {
	r, err := c.rpc.ModelReady(ctx, &pb.ModelReadyRequest{Name: name, Version: version})
	if err != nil {
		return false, errdefs.FromGRPC(err)
	}
	return r.GetReady(), nil
}

// Infer implements oip.Service. Inputs travel as raw_input_contents, their
// Data slices used as they are (the tensor Codec sends them without a copy
// in Go), so they must not change while the call is in flight; as with
// net/http request bodies, after a call that ended early (cancelled, past
// its deadline) gRPC may still be reading them briefly. ctx's deadline
// becomes the gRPC deadline.
func (c *Client) Infer(ctx context.Context, req *oip.InferRequest) (*oip.InferResponse, error) {
	return c.InferWith(ctx, req)
}

// tensorCodec is the call option of every ModelInfer the Client sends.
var tensorCodec = grpc.ForceCodecV2(Codec{})

// InferWith is Infer with call options (Compressed, for one).
func (c *Client) InferWith(ctx context.Context, req *oip.InferRequest, opts ...grpc.CallOption) (*oip.InferResponse, error) {
	preq, err := EncodeInferRequest(req)
	if err != nil {
		return nil, err
	}
	// A copy: appending to the caller's slice could write into its array.
	r, err := c.rpc.ModelInfer(ctx, preq, append(opts[:len(opts):len(opts)], tensorCodec)...)
	if err != nil {
		return nil, errdefs.FromGRPC(err)
	}
	resp, err := decodeInferResponse(r)
	if err != nil {
		return nil, malformed(err)
	}
	return resp, nil
}

// RepositoryIndex implements oip.Service.
func (c *Client) RepositoryIndex(ctx context.Context, readyOnly bool) ([]oip.ModelIndexEntry, error) {
	r, err := c.rpc.RepositoryIndex(ctx, &pb.RepositoryIndexRequest{Ready: readyOnly})
	if err != nil {
		return nil, errdefs.FromGRPC(err)
	}
	out := make([]oip.ModelIndexEntry, len(r.GetModels()))
	for i, m := range r.GetModels() {
		out[i] = oip.ModelIndexEntry{Name: m.GetName(), Version: m.GetVersion(), State: m.GetState(), Reason: m.GetReason()}
	}
	return out, nil
}

// LoadModel implements oip.Service.
func (c *Client) LoadModel(ctx context.Context, name string) error {
	_, err := c.rpc.RepositoryModelLoad(ctx, &pb.RepositoryModelLoadRequest{ModelName: name})
	return errdefs.FromGRPC(err)
}

// UnloadModel implements oip.Service.
func (c *Client) UnloadModel(ctx context.Context, name string) error {
	_, err := c.rpc.RepositoryModelUnload(ctx, &pb.RepositoryModelUnloadRequest{ModelName: name})
	return errdefs.FromGRPC(err)
}

// The client's shared memory calls are named apart from oip.SharedMemory
// on purpose: a Client is an oip.Service, and a transport serving one (a
// relay) must not offer regions that live on the far machine.

// SharedMemoryRegister registers a system shared memory region.
func (c *Client) SharedMemoryRegister(ctx context.Context, r oip.SharedMemoryRegion) error {
	_, err := c.rpc.SystemSharedMemoryRegister(ctx, &pb.SystemSharedMemoryRegisterRequest{Name: r.Name, Key: r.Key, Offset: r.Offset, ByteSize: r.ByteSize})
	return errdefs.FromGRPC(err)
}

// SharedMemoryUnregister unregisters one region, or all with "".
func (c *Client) SharedMemoryUnregister(ctx context.Context, name string) error {
	_, err := c.rpc.SystemSharedMemoryUnregister(ctx, &pb.SystemSharedMemoryUnregisterRequest{Name: name})
	return errdefs.FromGRPC(err)
}

// SharedMemoryStatus lists one region, or all with "", by name.
func (c *Client) SharedMemoryStatus(ctx context.Context, name string) ([]oip.SharedMemoryRegion, error) {
	r, err := c.rpc.SystemSharedMemoryStatus(ctx, &pb.SystemSharedMemoryStatusRequest{Name: name})
	if err != nil {
		return nil, errdefs.FromGRPC(err)
	}
	out := make([]oip.SharedMemoryRegion, 0, len(r.GetRegions()))
	for _, g := range r.GetRegions() {
		out = append(out, oip.SharedMemoryRegion{Name: g.GetName(), Key: g.GetKey(), Offset: g.GetOffset(), ByteSize: g.GetByteSize()})
	}
	slices.SortFunc(out, func(a, b oip.SharedMemoryRegion) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// malformed marks a response the client cannot read as the server's fault.
func malformed(err error) error {
	return errdefs.New(errdefs.ErrInternal, "malformed response from server: "+err.Error())
}
