// Package baseline holds the placement policies that model-driven
// placement (package latency) is compared with, as scheduler.Policy
// values that run in the same pipeline, so the comparison differs in the
// policy alone:
//
//   - knapsack by memory: an accelerator may take an instance while its
//     memory lasts (scheduler.Memory, among the default checkers), the
//     bin chosen by first fit (the first accelerator in node-name, then
//     accelerator-ID order), best fit (the least memory left) or worst
//     fit (the most memory left);
//   - knapsack by utilisation: memory, and Σ λ_i·s_i ≤ 1 over the
//     instances on the accelerator (λ_i the instance's share of its
//     application's rate, s_i its model's service time alone), first
//     fit.
//
// None of them predicts latency: they overcommit it whenever the
// co-located applications slow each other past their objectives, which
// is what the comparison measures. Knapsacks lists them for reports.
package baseline
