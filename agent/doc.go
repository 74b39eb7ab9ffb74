// Package agent is the node-side serving engine: it loads the models of a
// repository into a runtime backend, gives each a bounded queue with dynamic
// batching (package batch), and answers the Open Inference Protocol through
// oip.Service. The transports in oip/rest and oip/grpcsvc put a Manager on
// the wire.
package agent
