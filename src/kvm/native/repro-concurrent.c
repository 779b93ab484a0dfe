/*
 * repro-concurrent.c: the program of a concurrent case's C reproducer (src/kvm/export-c-concurrent.ts).
 * It runs the case's threads in a repeat-until-seen loop: each attempt in a fresh VM, the setup
 * sequentially (each step checked against the spec, as repro-main.c does), then one pthread per
 * thread released by a barrier (conc-threads.c, the code the harness runs). An attempt's results are
 * checked against every outcome vector a linearization of the threads allows, which the exporter
 * computed with the spec; the loop stops at the first attempt whose results no linearization allows.
 *
 * The exporter inlines repro-main.c (with kvm-ops.c and the setup's data), conc-threads.c and the
 * case's data header in place of the three #include lines below, and nothing else; the data is
 * numbers and escaped string literals only. Built on its own (build.mjs does, as a check) it uses the
 * default headers next to it.
 *
 * Build and run:  gcc -O2 -pthread -o repro repro.c && ./repro [ATTEMPTS]
 * Exit status: 0 not seen in ATTEMPTS attempts, 1 seen (printed), 2 bad ATTEMPTS, 5 a thread stuck,
 * 77 no usable /dev/kvm.
 */
#define REPRO_NO_MAIN
#include "repro-main.c"
#include "conc-threads.c"

/*
 * The case: conc_nthreads threads, thread t on vCPU conc_vcpu[t] (CONC_VMM: a VMM thread) running
 * conc_count[t] requests of conc_reqs (thread after thread, CONC_NREQ in all) described by
 * conc_calls; conc_outcomes[conc_noutcomes][CONC_NREQ], the outcome vectors a linearization allows,
 * described by conc_outcomes_text; conc_attempts, the default number of attempts.
 */
#include "repro-conc-data.h"

static int vector_matches(int v, const struct kmm_resp *r, uint8_t *const *data) {
  for (int j = 0; j < CONC_NREQ; j++) {
    char why[256];
    static const uint8_t none[1];
    if (!matches(&conc_outcomes[v][j], &r[j], data[j] ? data[j] : none, why, sizeof why)) return 0;
  }
  return 1;
}

static void print_case(void) {
  int at = 0;
  for (int t = 0; t < conc_nthreads; t++) {
    if (conc_vcpu[t] == CONC_VMM) printf("  thread %d (VMM):\n", t);
    else printf("  thread %d (vCPU %llu):\n", t, (unsigned long long)conc_vcpu[t]);
    for (uint32_t i = 0; i < conc_count[t]; i++, at++) put_line("    ", &conc_calls[at]);
  }
  printf("  outcomes a linearization allows (%d):\n", conc_noutcomes);
  for (int v = 0; v < conc_noutcomes; v++) {
    printf("    #%d:", v + 1);
    for (int j = 0; j < CONC_NREQ; j++) {
      fputs(j ? " | " : " ", stdout);
      put_text(&conc_outcomes_text[v][j]);
    }
    putchar('\n');
  }
}

/* The setup of one attempt in a fresh VM; 1 when a step differs from the spec (printed). */
static int run_setup(struct kmm *k, uint8_t *data, size_t cap) {
  struct kmm_resp r;
  struct kmm_req reset = { .op = OP_RESET };
  if (kmm_dispatch(k, &reset, &r, data, cap) < 0) {
    fprintf(stderr, "repro: KVM_CREATE_VM: %s\n", strerror(r.err));
    exit(77);
  }
  for (int i = 0; i < NSTEPS; i++) {
    char why[256] = "";
    kmm_dispatch(k, &steps[i].req, &r, data, cap);
    if (matches(&steps[i].e, &r, data, why, sizeof why)) continue;
    printf("setup step %d. ", i + 1);
    put_line("", &steps[i].call);
    put_line("     spec:   ", &steps[i].expected);
    printf("     kernel: %s\n", why);
    return 1;
  }
  return 0;
}

/* One attempt's threads; fills r, data and ts (CONC_NREQ each). */
static void run_threads(struct kmm *k, struct kmm_resp *r, uint8_t **data, int64_t (*ts)[2]) {
  static uint8_t *scratch[CONC_MAX_THREADS];
  struct conc_thread th[CONC_MAX_THREADS];
  pthread_t pt[CONC_MAX_THREADS];
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, (unsigned)conc_nthreads + 1);
  int at = 0;
  long budget_ms = 2000;
  for (int t = 0; t < conc_nthreads; t++) {
    if (!scratch[t] && !(scratch[t] = malloc(CONC_SCRATCH))) exit(4);
    th[t] = (struct conc_thread){ .k = k, .index = t, .vcpu = conc_vcpu[t], .reqs = conc_reqs + at,
                                  .n = conc_count[t], .resps = r + at, .data = data + at, .ts = ts + at,
                                  .barrier = &barrier, .scratch = scratch[t] };
    if (conc_vcpu[t] != CONC_VMM) kmm_ensure_guest(k);
    budget_ms += (long)conc_count[t] * (k->run_timeout_ms * 10 > 10000 ? k->run_timeout_ms * 10 : 10000);
    at += (int)conc_count[t];
  }
  for (int t = 0; t < conc_nthreads; t++)
    if (pthread_create(&pt[t], NULL, conc_thread_main, &th[t]) != 0) exit(4);
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int t = 0; t < conc_nthreads; t++) th[t].t0 = t0;
  pthread_barrier_wait(&barrier);
  for (int t = 0; t < conc_nthreads; t++) if (kmm_join_within(pt[t], &budget_ms) != 0) conc_stuck(&th[t]);
  pthread_barrier_destroy(&barrier);
}

static void print_seen(const struct kmm_resp *r, uint8_t *const *data, int64_t (*ts)[2]) {
  for (int j = 0; j < CONC_NREQ; j++) {
    char got[256];
    describe_response(&r[j], got, sizeof got);
    if (r[j].datalen && data[j]) {
      int n = snprintf(got, sizeof got, "dirty pages:");
      for (uint32_t p = 0; p < r[j].datalen * 8 && n < (int)sizeof got - 12; p++)
        if (data[j][p / 8] & (1u << (p % 8))) n += snprintf(got + n, sizeof got - n, " %u", p);
    }
    printf("  [%lld ns .. %lld ns] ", (long long)ts[j][0], (long long)ts[j][1]);
    put_text(&conc_calls[j]);
    printf(" -> %s\n", got);
  }
}

int main(int argc, char **argv) {
  static struct kmm k;
  static uint8_t data[1 << 20];
  long attempts = conc_attempts;
  if (argc > 2 || (argc == 2 && ((attempts = strtol(argv[1], NULL, 10)) < 1 || attempts > 100000000))) {
    fprintf(stderr, "error: usage: %s [ATTEMPTS], ATTEMPTS a positive integer\n", argv[0]);
    return 2;
  }
  print_header();
  print_case();
  fflush(stdout);
  if (kmm_init(&k) < 0) {
    perror("repro: /dev/kvm");
    return 77;
  }
  static long seen[CONC_NOUTCOMES_MAX];
  for (long a = 1; a <= attempts; a++) {
    if (run_setup(&k, data, sizeof data)) {
      printf("REPRODUCED on attempt %ld: the setup differs from the spec\n", a);
      return 1;
    }
    struct kmm_resp r[CONC_NREQ];
    uint8_t *rdata[CONC_NREQ] = { 0 };
    int64_t ts[CONC_NREQ][2];
    run_threads(&k, r, rdata, ts);
    int v = 0;
    while (v < conc_noutcomes && !vector_matches(v, r, rdata)) v++;
    if (v == conc_noutcomes) {
      printf("REPRODUCED on attempt %ld: no linearization allows these results\n", a);
      print_seen(r, rdata, ts);
      return 1;
    }
    seen[v]++;
    for (int j = 0; j < CONC_NREQ; j++) free(rdata[j]);
  }
  printf("NOT SEEN in %ld attempts: every attempt gave outcomes a linearization allows (", attempts);
  for (int v = 0; v < conc_noutcomes; v++) printf("%s#%d %ld", v ? ", " : "", v + 1, seen[v]);
  printf(")\n");
  return 0;
}
