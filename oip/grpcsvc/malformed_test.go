package grpcsvc

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	pb "github.com/accelpool/accelpool/api/inference"
)

// bytesCodec sends a []byte as the message itself, to put bytes on the
// wire that no protobuf encoder would write.
type bytesCodec struct{}

func (bytesCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (bytesCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (bytesCodec) Name() string { return "proto" }

// TestMalformedMessageIsInvalid: bytes that are not a protobuf message of
// the method's request type are the client's error (InvalidArgument,
// saying so), on every method, and the server keeps serving.
func TestMalformedMessageIsInvalid(t *testing.T) {
	addr := startServer(t, newFake(), Options{})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	bodies := map[string][]byte{
		"bad tag":            {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"truncated length":   {0x0a, 0x7f, 'a'},                            // field 1, 127 bytes announced, 1 sent
		"invalid UTF-8 name": {0x0a, 0x02, 0xc3, 0x28},                     // field 1 (a string) not UTF-8
		"group end alone":    {0x0c},                                       // end-group tag with no start
		"overlong varint":    append(bytes.Repeat([]byte{0x80}, 10), 0x01), // 11 bytes, 10 at most
	}
	methods := []string{
		pb.GRPCInferenceService_ModelInfer_FullMethodName,
		pb.GRPCInferenceService_ModelMetadata_FullMethodName,
		pb.GRPCInferenceService_ModelReady_FullMethodName,
		pb.GRPCInferenceService_RepositoryModelLoad_FullMethodName,
	}
	for _, method := range methods {
		for name, body := range bodies {
			var reply []byte
			err := conn.Invoke(t.Context(), method, &body, &reply, grpc.ForceCodecV2(bytesCodec{}))
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "malformed request message") {
				t.Errorf("%s, %s: got %v, want InvalidArgument naming a malformed request message", method, name, err)
			}
		}
	}
	c := dial(t, addr)
	if _, err := c.ModelMetadata(t.Context(), "echo", ""); err != nil {
		t.Fatalf("server stopped serving after malformed messages: %v", err)
	}
}
