package linkprobe

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func serve(t *testing.T) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.MaxRecvMsgSize(MaxPayload + 64))
	Register(s)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxPayload+64), grpc.MaxCallSendMsgSize(MaxPayload+64)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestMeasure(t *testing.T) {
	conn := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := Measure(ctx, conn, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if r.RTT <= 0 || r.RTT > time.Second {
		t.Errorf("loopback rtt %v", r.RTT)
	}
	// Loopback moves a megabyte in well under 100 ms: more than 80 Mbit/s.
	if r.UpBps < 80e6 || r.DownBps < 80e6 {
		t.Errorf("loopback bandwidth up %.0f down %.0f bit/s, want > 80e6", r.UpBps, r.DownBps)
	}
	t.Logf("loopback: rtt %v, up %.0f Mbit/s, down %.0f Mbit/s", r.RTT, r.UpBps/1e6, r.DownBps/1e6)
}

func TestEchoRefusals(t *testing.T) {
	conn := serve(t)
	ctx := context.Background()
	if _, err := Echo(ctx, conn, 0, MaxPayload+1); err == nil {
		t.Error("oversized answer asked without error")
	}
	// A hand-made request: too short, and asking too much.
	for _, b := range [][]byte{{1, 2}, {0xff, 0xff, 0xff, 0xff}} {
		err := conn.Invoke(ctx, EchoMethod, &wrapperspb.BytesValue{Value: b}, new(wrapperspb.BytesValue))
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("request %x: got %v, want InvalidArgument", b, err)
		}
	}
}

func TestUnregisteredServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	go s.Serve(ln)
	defer s.Stop()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := Measure(context.Background(), conn, 0); status.Code(err) != codes.Unimplemented {
		t.Fatalf("got %v, want Unimplemented", err)
	}
}
