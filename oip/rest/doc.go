// Package rest puts an oip.Service on HTTP as the Open Inference Protocol's
// REST API (KServe v2), with Triton's binary tensor extension, and takes it
// off again: NewHandler serves any oip.Service, Client is an oip.Service
// backed by a remote server, so local and remote look alike.
//
// Routes (Go 1.22 ServeMux patterns):
//
//	GET  /v2/health/live, /v2/health/ready        200 or 503, empty body
//	GET  /v2                                      server metadata
//	GET  /v2/models/{m}[/versions/{v}]            model metadata
//	GET  /v2/models/{m}[/versions/{v}]/ready      200 or 503; 404 if unknown
//	POST /v2/models/{m}[/versions/{v}]/infer      inference
//	POST /v2/repository/index                     [{name, version, state, reason}]
//	POST /v2/repository/models/{m}/load|unload
//	GET  /v2/systemsharedmemory[/region/{r}]/status   [{name, key, offset, byte_size}]
//	POST /v2/systemsharedmemory/region/{r}/register   {key, offset, byte_size}
//	POST /v2/systemsharedmemory[/region/{r}]/unregister
//
// The systemsharedmemory routes (Triton's system shared memory extension)
// work when the served oip.Service implements oip.SharedMemory (see
// oip/shm); otherwise they, and any inference naming a region, answer 400.
//
// Every error is {"error": "..."} with the status errdefs.HTTPStatus gives;
// an unknown route is a 404, a known one with the wrong method a 405, and a
// panic a 500 that leaves the server running.
//
// An inference request is a JSON header, optionally followed by raw tensor
// bytes: with Inference-Header-Content-Length: N the first N bytes are the
// JSON and the rest are the inputs whose parameters carry binary_data_size,
// in input order. The body is read once into a pooled buffer; binary inputs
// alias it and JSON `data` goes through the streaming tensor.DecodeJSONData,
// so no tensor bytes are copied on the way in. Outputs go back as JSON, or
// raw after the JSON header when the request asks (binary_data on an output,
// binary_data_output on the request), written straight from the output
// tensors. A "timeout" request parameter, in microseconds as in Triton,
// bounds the request's context.
//
// A request body may be compressed, as Triton takes it: Content-Encoding
// gzip or deflate (zlib), and then Inference-Header-Content-Length counts
// the decompressed bytes. The limit on body size holds both for the bytes
// sent and for what they decompress to (413). Responses are not
// compressed: on the links where it pays, gRPC compression is there.
//
// Buffer reuse puts one rule on the served oip.Service: once Infer has
// returned without error it must not touch the request's input data again.
// (After an error the buffer is never reused, so a service may abandon work
// on a deadline and let it finish in the background.)
package rest
