// Package sim is a discrete-event simulator of accelpool's serving queues.
// It runs on a virtual clock with a seeded random source and no
// goroutines, so a run is a pure function of its Scenario: the same seed
// gives the same latencies on any machine.
//
// A Scenario is a cluster (cluster.Node values with their accelerators),
// the instances placed on it — by any scheduler.Policy, through the same
// scheduler code the control plane runs (see Fill) — the applications
// (model, request rate, p99 objective, arrival process) and the models'
// service-time profiles per accelerator kind. Run simulates every request:
//
//   - Arrivals: per application, Poisson at its rate, or a recorded trace
//     of timestamps replayed with its gaps scaled to the rate (Trace; e.g.
//     the Azure LLM inference trace).
//   - Routing: each request goes to one of its application's instances,
//     chosen by a gateway.Policy — by default the gateway's own
//     LeastOutstanding, counting the requests queued or running on each
//     instance.
//   - Service demand: drawn per request from the profile of (model,
//     accelerator kind): a gamma distribution with the profile's mean and
//     coefficient of variation by default (Lognormal on request, and a
//     constant when the CV is 0). The gamma keeps the measured mean and
//     CV and, unlike a lognormal, has a light right tail, which matches
//     DNN inference service times (a fixed graph with little variation)
//     better than a heavy tail. Or, where a profile carries measurements
//     (Service.SamplesMs), one of them drawn uniformly: an empirical
//     distribution, each sample optionally paired with a delay that adds
//     to the latency without occupying the accelerator (the transport,
//     waking an idle core).
//   - CPUs and GPUs: processor sharing. The n requests running on an
//     accelerator each progress at min(1, P/n) of their speed alone,
//     where P is the accelerator's parallelism: 1 for a GPU (n concurrent
//     kernels share it, so each runs n times slower, the behaviour of the
//     Ibis measurements in ../shared/data/ibis/trt_ps_validation.csv), and
//     for a CPU its cores divided by the runtime threads each request uses
//     (Scenario.JobThreads; by default a request uses every core, as ONNX
//     Runtime's default intra-op pool does, so P = 1). An instance runs at
//     most Scenario.Concurrency requests at once (the agent's config.yaml
//     concurrency); the others wait in its FIFO queue, as in the agent.
//   - TPUs: one FCFS queue per accelerator serving one request at a time;
//     a request whose model differs from the previous one's pays the
//     profile's switch cost first (the Edge TPU reloading parameters).
//
// Requests that arrive during the warm-up are served but not measured;
// after Scenario.Duration no request arrives and the queues drain, so
// every measured request completes (an overloaded placement shows as
// latencies that grow with the duration, not as lost requests). Each
// application's result is its request count and mean, p50 and p99
// latency; it violates its objective when the p99 measured exceeds it.
//
// Fill is the placement half: it adds applications one at a time to a
// scheduler.State with a policy, committing each placement with
// State.Add, until one cannot be placed. At 10,000 nodes and 100,000
// applications it runs without simulating queues (the decision
// benchmark); on smaller clusters its instances feed Run.
package sim
