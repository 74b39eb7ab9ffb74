// Package linkemu emulates network links for benchmarks by running and
// driving Shopify's toxiproxy (v2) as a separate process. It speaks
// toxiproxy's HTTP API with net/http and encoding/json and does not import
// toxiproxy.
//
// A Server is one toxiproxy-server on a free loopback port. A Proxy is one
// TCP proxy on it, listening on a free loopback port and forwarding to an
// upstream address through toxics that realise a Link: a round-trip time
// split evenly between the two directions (the latency toxic on each
// stream) and a bandwidth limit applied to each direction (the bandwidth
// toxic). A Proxy's Link can be changed, and the proxy cut and restored,
// while traffic runs through it.
//
// What toxiproxy emulates, and what it does not: delays are whole
// milliseconds and rates whole KB/s (1 KB = 1000 bytes); the TCP handshake
// with the proxy is local and free, so only bytes pay the RTT (a TLS or
// HTTP/2 handshake does, a bare connect does not); there is no loss,
// reordering or congestion control across the emulated link.
//
// Find locates the binary that scripts/setup.sh --bench builds into the
// cache directory.
package linkemu
