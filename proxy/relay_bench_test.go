package proxy

import (
	"testing"

	pb "github.com/accelpool/accelpool/api/inference"
	"github.com/accelpool/accelpool/oip/grpcsvc"
)

// BenchmarkRelay1MB relays requests whose answers carry 1 MiB of raw
// output (the size of an OCR recognition answer) through the proxy's gRPC
// server to a target on loopback: the device's CPU per relayed megabyte
// (go test -run '^$' -bench Relay -cpuprofile cpu.out ./proxy).
func BenchmarkRelay1MB(b *testing.B) {
	rec := startRecorder(b)
	rec.resp.Outputs = []*pb.ModelInferResponse_InferOutputTensor{{Name: "y", Datatype: "UINT8", Shape: []int64{1 << 20}}}
	rec.resp.RawOutputContents = [][]byte{make([]byte, 1<<20)}
	p := newProxy(b, Config{Targets: []Target{{Name: "edge", Addr: rec.addr, Tier: "edge"}}})
	waitProbed(b, p)
	conn := serveProxy(b, p, grpcsvc.Options{})
	req := wireRequest(b, "m")
	b.SetBytes(1 << 20)
	for b.Loop() {
		if _, err := sendRaw(conn, req); err != nil {
			b.Fatal(err)
		}
		rec.mu.Lock()
		rec.got = rec.got[:0]
		rec.mu.Unlock()
	}
}
