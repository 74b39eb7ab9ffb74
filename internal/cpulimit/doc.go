// Package cpulimit runs processes as weak devices: a Group is a cgroup with
// a CFS bandwidth limit (cgroup v1's cpu controller, or cpu.max under v2),
// so that everything in it together gets at most a given number of CPUs,
// e.g. 0.2 for a fifth of one core. The period is short (Period, 10 ms) so
// a throttled process is held back in small steps rather than long stalls.
//
// It needs root (or a delegated, writable cgroup) and the cpu controller;
// Available says why not when either is missing.
package cpulimit
