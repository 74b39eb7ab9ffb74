// Package proxy is the device proxy: it runs on a weak device, serves the
// Open Inference Protocol on localhost, and sends each request where it
// will finish soonest — the device itself, or one of the remote instances
// (agents or gateways) the device can reach — so that an application
// written against a local inference server gets a remote accelerator's
// speed without changing its code.
//
// A Proxy implements oip.Service; the oip transports put it on the wire
// as they put an agent's Manager there. NewGRPCServer puts it on gRPC with
// one difference: a request offloaded to a remote target is relayed as
// the bytes the application sent and answered with the bytes the target
// sent (the proxy reads the routing fields in place and appends its own
// response parameters), so a device with a tenth of a core does not
// decode and re-encode megabytes of tensors; only requests that run on
// the device, or fall back to it, are decoded. Its options for a model are:
//
//   - local, when Config.Local (an agent.Manager over the device's own
//     model repository, usually) has the model ready;
//   - every Target that serves the model: the fixed Config.Targets, and
//     those Config.Discover returns (the control plane's view: the nodes
//     holding ready instances of the application, with tier and site).
//
// # Measuring
//
// Each target's link is probed every ProbeInterval with the linkprobe
// echo over the same gRPC connection requests use (round trip), and every
// BandwidthEvery probes with transfers sized to take about 20 ms, at most
// 256 KiB (bandwidth both ways), when no request is in the proxy: on a
// slow device a probe and a request slow each other down. A bandwidth
// probe that a request overlapped anyway (one arrived while it ran) is
// discarded and retried after 1, 2, 4, ... ticks as discards follow each
// other, at most BandwidthEvery (under steady traffic a retry at every
// tick would spend a probe's bytes each ProbeInterval). A bandwidth is
// the median of the last five probes; a transfer shorter than 5 ms is
// too short to time from a device that stalls for milliseconds, so a
// largest probe that short records "at least 419 Mbit/s" (the same every
// time) and a smaller one records nothing and makes the next the largest.
// Each response's server-side time (the queue_us,
// preprocess_us and compute_us parameters agents return) and size are
// folded into per-model means, and so is the transfer time: what the
// measured latency had past the round trip and the server time. On a slow
// device that includes its own cost of moving the bytes, which bandwidth
// probes misjudge; the probes still say when the link changes (round trip
// at once, bandwidth when three of the last five probes say it moved
// more than twofold). An answer far slower
// than predicted triggers a probe at once and is not learned from unless
// the next ones are as slow. Local runs fold their duration into the local
// mean. Only answers tell a far end's own time, and a target that is not
// chosen gets none: so a remote option that has gone Config.RefreshAfter
// (30 s) without answering a model is explored again by one request, and
// that answer replaces its estimates — a target judged slow while busy is
// not shunned for good.
//
// # Choosing
//
// Package offload ranks the options (see its documentation for the
// formula); the proxy tries them in that order. A request whose attempt
// fails in a way that says it was not processed, or processed wrongly
// there (unavailable, overloaded, not found, a model failure, the
// attempt's own time budget spent), goes to the next option, if its
// deadline leaves time (not the same target sent the other way: it would
// fail alike; but see Compression for a refused compressed attempt).
// Requests that are invalid fail at once: they
// would fail everywhere. When the request can also run locally, a remote
// attempt's budget leaves room to run it locally afterwards.
//
// # Compression
//
// A request and its answer may cross a link as they are, or compressed
// with zero-run encoding (internal/zrun: runs of zero bytes removed, a
// gRPC compressor every accelpool server answers in kind). With
// Config.Compress auto (the default) each target is first offered plain;
// a sampled plain answer (the first of a model, then one in 64) is
// measured for how much it would shrink, and once it shrinks to under
// 0.8 of its size the target is offered compressed as well. Each of the
// two options is explored once and then predicted from its own
// measurements, so compression is chosen where it makes answers arrive
// sooner: a detection map that is mostly zeros crosses a 100 Mbit/s link
// five times faster, while a dense answer, which does not shrink, is
// never sent compressed.
//
// A target without the zero-run decompressor (a Triton server, an older
// accelpool) answers a compressed request with gRPC status Unimplemented.
// That attempt does not count as the target failing: the request may
// still go to it plain (in its ranked place; under Compress always, which
// offered no plain option, next). If the plain attempt answers, the
// target is offered plain only from then on, a warning names it once, and
// its status says compressionRefused; if it fails too, Unimplemented was
// about something else and nothing is remembered.
//
// Every response says where it ran and what was predicted (parameters
// accelpool_target, accelpool_predicted_us, accelpool_attempts, and
// accelpool_compressed when it went compressed), and the
// metrics export predicted and measured latency per model and option, so
// the prediction error is visible.
package proxy
