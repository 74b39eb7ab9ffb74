// wakeup measures how soon a thread woken from a sleep runs while other
// threads keep every core busy, and how long it then keeps a core: the
// question is whether the kernel's scheduler time slices delay short
// inference requests beside long ones (see docs/benchmarks.md, issue 5's
// validation). Not part of the build.
//
//   gcc -O2 -pthread bench/experiments/wakeup.c -o /tmp/wakeup
//   /tmp/wakeup SPINNERS WAKEUPS WORK_MS     e.g. /tmp/wakeup 2 300 2
//
// SPINNERS threads spin, recording each gap of over 50 µs in their own
// progress (time off the CPU); the main thread sleeps 5 ms WAKEUPS times,
// each time records how late it woke, then works WORK_MS of CPU.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_SPINNERS 4
#define MAX_GAPS 200000

static double now_ms(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static volatile int stop;
static double gaps[MAX_SPINNERS][MAX_GAPS];
static int ngaps[MAX_SPINNERS];

static void *spin(void *arg) {
	long id = (long)arg;
	double last = now_ms();
	while (!stop) {
		double t = now_ms();
		if (t - last > 0.05 && ngaps[id] < MAX_GAPS)
			gaps[id][ngaps[id]++] = t - last;
		last = t;
	}
	return NULL;
}

static int cmp(const void *a, const void *b) {
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: %s SPINNERS WAKEUPS WORK_MS\n", argv[0]);
		return 2;
	}
	int nspin = atoi(argv[1]), n = atoi(argv[2]);
	double work = atof(argv[3]);
	if (nspin < 0 || nspin > MAX_SPINNERS || n < 1 || n > 100000 || work < 0) {
		fprintf(stderr, "SPINNERS 0..%d, WAKEUPS 1..100000, WORK_MS >= 0\n", MAX_SPINNERS);
		return 2;
	}
	pthread_t th[MAX_SPINNERS];
	for (long i = 0; i < nspin; i++)
		pthread_create(&th[i], NULL, spin, (void *)i);
	usleep(200000);
	double *late = malloc(n * sizeof(double));
	for (int i = 0; i < n; i++) {
		struct timespec ts = {0, 5000000};
		double t0 = now_ms();
		nanosleep(&ts, NULL);
		late[i] = now_ms() - t0 - 5.0;
		for (double w0 = now_ms(); now_ms() - w0 < work;)
			;
	}
	stop = 1;
	for (int i = 0; i < nspin; i++)
		pthread_join(th[i], NULL);
	qsort(late, n, sizeof(double), cmp);
	printf("spinners %d: woke late by p50 %.3f p90 %.3f p99 %.3f max %.3f ms\n", nspin,
	       late[n / 2], late[n * 9 / 10], late[n * 99 / 100], late[n - 1]);
	for (int i = 0; i < nspin; i++) {
		qsort(gaps[i], ngaps[i], sizeof(double), cmp);
		if (ngaps[i])
			printf(" spinner %d: %d times off the CPU, for p50 %.3f p90 %.3f ms\n", i, ngaps[i],
			       gaps[i][ngaps[i] / 2], gaps[i][ngaps[i] * 9 / 10]);
	}
	free(late);
	return 0;
}
