// Package tensor is accelpool's one in-memory tensor representation and the
// conversions every wire format shares: datatype names of the Open Inference
// Protocol, element counts with overflow checks, the length-prefixed BYTES
// layout, FP16/BF16 arithmetic, and a streaming JSON codec for the `data`
// field (flat or nested arrays).
//
// A Tensor holds its elements as raw little-endian bytes, exactly as the
// binary tensor extension and gRPC raw contents carry them, so the hot path
// moves bytes from the wire to the runtime without re-encoding.
package tensor
