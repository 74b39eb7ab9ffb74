// Package latency predicts the latency of DNN applications sharing one
// accelerator, and uses the predictions to place them (seed 003, Ibis:
// Liang et al., "Model-driven cluster resource management for AI
// workloads in edge clouds", ACM TAAS 2023). It is pure: plain functions
// over profiles and rates, no I/O, no clocks.
//
// # Models
//
// A Model predicts, for the loads co-located on one accelerator (request
// rate λ_i, Poisson; a Profile with the mean service time s_i alone, its
// coefficient of variation cv_i, the switch cost c_i), each load's mean
// and p99 response time and the accelerator's utilisation ρ. At ρ ≥ 1 the
// predictions are unstable: infinite latencies. Times are in ms, rates
// per second in Load and per ms in the formulas.
//
// PS, processor sharing (a GPU or CPU running co-located models
// concurrently; ModelForKind "gpu", "cpu"): the accelerator divides itself
// equally among the requests in progress, an M/G/1-PS queue:
//
//	ρ = Σ λ_i·s_i,   T_i = s_i/(1−ρ)   (exact, any service distribution)
//
// The p99 of a request of size x: the response is V = x + E, E the time
// given to others while it is present. E = 0 when the request finds the
// accelerator idle and nothing arrives during x, with probability
// π0 = (1−ρ)·e^{−Λx}; E[E] = T − x; Var V from Coffman, Muntz and Trotter's
// M/M/1-PS result, 2ρ(e^{−a} − 1 + a)/(μ²(1−ρ)⁴) with a = μ(1−ρ)x and 1/μ
// the mean size over all loads, plus (cv·x)²/(1−ρ)². Given E > 0, E is
// gamma with those moments; p99 = x + its quantile at 1 − 0.01/(1−π0)
// (Wilson–Hilferty). A profile's DelayMs (time that occupies no
// accelerator: transport, hand-offs) is added to the mean, and to the
// p99 by summing its gamma moments into the excess's and solving the
// mixed tail for 0.01 (regula falsi on its logarithm). The exponential-tail shortcut T·ln 100 is 14–77 %
// high at ρ = 0.3…0.7 (4.6 times the service time on an idle
// accelerator) and not used.
//
// PSConcurrent is the closed view the Ibis GPU measurements take: n jobs
// start together and nothing else arrives; sorted by size, the k-th of m
// completes at C_k = C_{k−1} + (m−k+1)(x_(k) − x_(k−1)), so n equal jobs
// take n times as long each.
//
// FCFS, serial with a model switch (an Edge TPU; "tpu"): one request at a
// time in arrival order, one model's weights loaded at a time; a request
// whose model differs from the previous request's pays c_i. With Poisson
// arrivals the previous request's model is independent of this one's, so
// request i switches with probability q_i = 1 − Λ_m/Λ (Λ_m the rate of
// the loads sharing its model; Load.Model names it). An M/G/1 queue with
// Pollaczek–Khinchine:
//
//	E[S_i] = s_i + q_i·c_i
//	E[S_i²] = s_i²(1+cv_i²) + 2·s_i·q_i·c_i + q_i·c_i²
//	ρ = Σ λ_i·E[S_i],  W = Σ λ_i·E[S_i²]/(2(1−ρ)),  mean_i = W + E[S_i]
//
// The p99: P(W > u) is the larger of the Cramér–Lundberg asymptote
// C·e^{−γu} (γ solves Σ λ_i(E[e^{γS_i}] − 1) = γ; C = (1−ρ)/(Σ λ_i·E[S_i
// e^{γS_i}] − 1); exact for M/M/1) and ρ·E[(S − u)⁺]/E[S], the wait for
// the request in service alone (a lower bound that matters at low load);
// then P(W + S_i > t) = 0.01 is solved for t (closed form when the
// asymptote dominates, else bisection). FCFSConcurrent is the closed view:
// jobs arriving together are served in order, each paying its switch when
// the model changes.
//
// Batch, a dedicated slice with dynamic batching (as agent/batch batches:
// take the oldest request, collect up to MaxBatch or until MaxDelayMs
// has passed, serve the batch in Profile.BatchMs(b)): the embedded Markov
// chain at the instants the slice takes a first request, state y the
// requests waiting then. A batch taken with y ≥ B holds B at once; with
// y < B it holds y+k if k < B−y arrive within the delay D (Poisson), else
// B at the (B−y)-th arrival; during its service S(b), Poisson(λ·S(b))
// arrive, and the next take finds max(y−B, 0) plus those (or, if none,
// idles until one). The stationary distribution (power iteration) weighs
// a tagged request's response by where it arrives: first after an idle
// slice, while a batch forms, or during a service behind the requests
// already waiting (over B of them ahead: full batches first). Mean and p99
// come from that mixture; ρ = λ·E[S(b)]/E[b]; stable while λ·S(B)/B < 1.
// MaxBatch ≤ 1 is FCFS. It costs about a millisecond: it sizes slices,
// the placement checker does not run it.
//
// FCFS and Batch add a profile's DelayMs to what they predict for the
// accelerator: the means add, and the p99 adds the delay's excess over
// its mean to the prediction's in quadrature (independent times; between
// the normal case and the sum of the two p99s, and within −1…+9 % of the
// simulated queue, TestFCFSDelayAgainstSimulation).
//
// # Validation
//
// Against the Ibis measurements (../shared/data/ibis, read by package
// ibis; go test -v -run Validation):
//
//   - trt_ps_validation.csv (YOLOv4-tiny, ResNet50, EfficientNet-B3 under
//     TensorRT on a Jetson Nano; each alone, then the three issuing one
//     request at the same instant, 99 rounds after a warm-up round):
//     PSConcurrent from the alone means predicts the concurrent means
//     within 1.0 % on average (per request 3.5 %); "n times as long"
//     alone would be 29.6 % off, because EfficientNet-B3 runs alone once
//     the two short jobs finish.
//   - edgetpu_fcfs_validation.csv (five models on an Edge TPU, alone
//     taking turns, then five at once): every request follows another
//     model, so a sequential mean is s_i + c_i; FCFSConcurrent predicts
//     the concurrent means within 1.1 % (per request 1.4 %), where
//     processor sharing would be 139 % off. The data cannot split s_i from
//     c_i; edgetpu-workload1.yaml does for efficientnet-S (10.16 + 17.31
//     ms), within 2.5 % of the measured ENets-S.
//
// Nothing is fitted to the measurements predicted. The Ibis data has no
// open-arrival (Poisson) runs, so the open models are checked against a
// discrete-event simulation of the same queues (des_test.go): means
// within 2 %, p99 within −5…+10 % for PS, −2…+6 % for FCFS and ±4 % for
// Batch at ρ = 0.2…0.9. Measurements of co-located models on our own
// serving path are the bench's.
//
// # Placement
//
// Checker ("latency") admits a candidate accelerator only if, with the
// proposed instance, its model (ModelForKind) keeps every co-located
// application's p99 within spec.objective.p99Ms less a headroom for the
// model's own error (DefaultHeadroom, 2 %) and ρ within MaxUtilisation
// (0.9), rejecting with the worst offender: "app face p99 would be 143ms >
// 98ms (100ms objective less 2 % headroom; ρ=0.82)". With Policy.Top it
// runs deferred (scheduler.DeferredChecker): on candidates in rank order
// until the best that pass are found, from per-accelerator sums kept in
// the TenantCache, without allocating. An instance's rate is its
// application's spec.rate split over spec.replicas.min instances
// (EvenShare); profiles come from a ProfileSource (model, kind), which the
// control plane backs with its profile registry; StaticProfiles and
// ProfileFunc serve tests and the simulator. The snapshot must carry the
// co-located applications (Snapshot.Apps): a tenant without one rejects
// the accelerator, as does a model without a profile.
//
// Slack ("latency-slack") ranks by the smallest remaining headroom
// 1 − p99/objective: it spreads. ModelDrivenPolicy packs instead: the
// default checkers plus the latency Checker, ranked by LeastWaste
// ("least-waste"), so applications fill the fewest accelerators while
// every objective holds. LeastWaste is scheduler.BinPack that counts
// memory nothing can use as lost: an application that cannot share an
// accelerator even with a copy of itself goes to the smallest that takes
// it, and a placement that leaves a hole smaller than the application
// ranks low. Package baseline has the knapsacks it is compared with.
//
// # Cost
//
// PS predicts five loads in under a microsecond, FCFS in a few (the
// Lundberg root). A Checker from NewChecker caches each accelerator's
// resolved tenants (TenantCache) for the life of the scheduler's State,
// so after a State's first decision a candidate costs two map lookups and
// O(1) arithmetic unless it passes the utilisation bound, when the model
// runs over its tenants. BenchmarkPlaceModelDriven measures decisions on
// the scheduler's synthetic 10,000-node cluster next to BinPackPolicy.
package latency
