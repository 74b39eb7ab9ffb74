// Package gateway routes Open Inference Protocol requests addressed to an
// application to one of the application's ready instances, so that the
// pooled accelerators of the continuum look like one inference server.
//
// A Gateway implements oip.Service by forwarding: the model name a client
// uses is the application's name, and each request goes over gRPC to the
// agent serving one instance, under that instance's ServedName. The oip
// transports (rest, grpcsvc) put a Gateway on the wire exactly as they put
// an agent's Manager there.
//
// The gateway sees the cluster only through Resolver (the control plane
// implements it from its watch of the cluster state; StaticResolver is the
// fixed one tests and single-process setups use) and makes routing
// decisions only through Policy, a pure function of the candidates and the
// requests in flight, so the simulator can reuse it.
//
// # Routing
//
// Candidates are the endpoints that are Ready and have a gRPC address.
// LeastOutstanding picks the one with the fewest requests in flight
// through this gateway; ties go round-robin, per application, over the tied
// endpoints in InstanceID order.
//
// An instance whose attempt failed in a way that says it is gone or not
// serving (ErrUnavailable, or ErrNotFound for its served model) is passed
// over for Config.Cooldown while other candidates remain. Without this, a
// dead instance, failing fast and so never having requests in flight,
// would look the least loaded and attract the first attempt of every
// request. When every candidate is cooling down they are tried anyway.
//
// # Retries
//
// A request is retried on another instance, never one already tried, when
// the failure means the instance did not process it: ErrUnavailable
// (connection refused or reset, server or model not ready, unloading),
// ErrNotFound (the instance's model was removed) and ErrResourceExhausted
// (that instance's queue is full). gRPC message-size refusals are
// ErrTooLarge (errdefs.FromGRPC), not ErrResourceExhausted: they would fail
// the same way everywhere, so they are not retried. ErrInvalid, ErrDeadline, ErrCanceled and model failures
// (ErrInternal) are returned at once. Attempts are bounded by
// Config.MaxAttempts and by the request context's deadline, which each
// attempt carries as its gRPC deadline; there is no pause between attempts,
// since each goes to a different instance.
//
// # Versions
//
// An application is served as one model with one version, "1" (AppVersion):
// which artifact backs it is the control plane's business, and instances
// may number their versions differently. A request or metadata call naming
// another version gets ErrNotFound; forwarded requests name no version.
//
// # Connections
//
// One gRPC connection per agent address is cached and shared by all
// requests. A connection is closed when its address no longer appears in
// the Resolver (Prune, run every Config.PruneInterval and callable by the
// server after a cluster change) or when an attempt over it failed with
// ErrUnavailable while the connection was not READY; requests still using
// it finish first.
//
// A node that silently drops packets (rather than refusing connections)
// costs the requests routed to it their deadline until the control plane
// marks its instances not Ready.
package gateway
