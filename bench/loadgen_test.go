package bench

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/accelpool/accelpool/api/inference"
)

func TestCheckGRPCAnswer(t *testing.T) {
	good, err := proto.Marshal(&pb.ModelInferResponse{ModelName: "m", Id: "x",
		Outputs:           []*pb.ModelInferResponse_InferOutputTensor{{Name: "a"}, {Name: "b"}},
		RawOutputContents: [][]byte{make([]byte, 12), make([]byte, 3)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkGRPCAnswer(good, wireOutputs{12, 3}); err != nil {
		t.Errorf("good answer: %v", err)
	}
	for name, c := range map[string]struct {
		b    []byte
		want wireOutputs
	}{
		"other sizes": {good, wireOutputs{12, 4}},
		"one output":  {good, wireOutputs{12}},
		"truncated":   {good[:len(good)-1], wireOutputs{12, 3}},
		"empty":       {nil, wireOutputs{12, 3}},
	} {
		if err := checkGRPCAnswer(c.b, c.want); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFrameRequests(t *testing.T) {
	reqs := [][]byte{[]byte("first"), {}, make([]byte, 300)}
	got, err := splitRequests(frameRequests(reqs))
	if err != nil || len(got) != 3 || string(got[0]) != "first" || len(got[1]) != 0 || len(got[2]) != 300 {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	for name, b := range map[string][]byte{
		"empty":      nil,
		"truncated":  frameRequests(reqs)[:10],
		"bad varint": {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	} {
		if _, err := splitRequests(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
