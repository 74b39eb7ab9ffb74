// Package offload decides where one inference request from a device runs:
// on the device itself or on one of the remote instances it can reach.
//
// It is pure: it sees the options only through Option values (what was
// measured about each: link round trip and bandwidth, the time the far end
// reports spending on the model, the residual the estimate has been
// missing), and it receives the clock. The device proxy (package proxy)
// measures and calls it; tests and the simulator call it the same way.
//
// # The prediction
//
// Running locally is predicted to take
//
//	(waiting + 1) × local service time
//
// where waiting is the requests the device is already running or queueing
// for the model. Running on a remote instance is predicted to take
//
//	RTT + transfer + server time + residual
//
// where server time is what the instance reports (queueing, preprocessing
// and compute) for recent requests. Transfer is, once requests of the model
// have run there, what they spent past the round trip and the server
// (Learned: it includes a slow device's own cost of moving the bytes,
// which bandwidth probes misjudge), else input bytes ÷ uplink + output
// bytes ÷ downlink at the probed bandwidths. The residual is an optional
// correction and may be negative. An option never measured for the model
// has no prediction and is tried first, once, so every option gets
// measured.
//
// # The choice
//
// Options are ranked by predicted latency. Predictions within TieMargin of
// each other count as tied; ties go to the option with fewer requests in
// flight, then to the nearer tier (device, edge, cloud), then by name. The
// first option whose prediction meets the deadline leads; if none does the
// fastest leads anyway (it is the best chance). The rest follow in rank
// order as fallbacks: the proxy tries them when an attempt fails in a way
// that says the request was not processed.
package offload
