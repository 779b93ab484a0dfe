/*
 * repro-concurrent.c: the program of a concurrent case's C reproducer (src/kvm/export-c-concurrent.ts).
 * It runs the case's threads in a repeat-until-seen loop: each attempt in a fresh VM, the setup
 * sequentially (each step checked against the spec, as repro-main.c does), then one pthread per
 * thread released by a barrier (conc-threads.c, the code the harness runs), each call stamped with
 * CLOCK_MONOTONIC at invoke and respond. An attempt is judged as the harness's linearizability
 * checker judges a history: the exporter wrote the case's order graph (src/kvm/export-c-orders.ts:
 * every order of the threads' commands with the outcomes the spec allows there, in-flight allowances
 * marked with the command they must overlap), and the attempt is allowed iff some path of the graph
 * runs every command with the kernel's result, takes a command next only if no pending command
 * responded before it was invoked, and takes an in-flight edge only if the two calls overlapped.
 * The loop stops at the first attempt no such path allows. Not checked: the final memory (the
 * harness's engine campaign compares it; a kernel history is judged without it, as here).
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

/* One edge of the order graph: run request `req` with outcome `outcome`, to node `to`; an in-flight
 * allowance names the request it must have overlapped in real time (`overlap`, else -1). */
struct conc_edge {
  uint32_t req;
  uint32_t outcome;
  int32_t overlap;
  uint32_t to;
};

/*
 * The case: conc_nthreads threads, thread t on vCPU conc_vcpu[t] (CONC_VMM: a VMM thread) running
 * conc_count[t] requests of conc_reqs (thread after thread, CONC_NREQ in all) described by
 * conc_calls; the order graph: CONC_NNODES nodes (node n has done the requests in the bit mask
 * conc_node_done[n]; its edges are conc_edges[conc_node_first[n] .. conc_node_first[n + 1]]),
 * node 0 the start, conc_final every request done; conc_expect[CONC_NOUTCOMES] the outcomes the edges
 * name (for request conc_expect_req[o], described by conc_expect_text); conc_attempts the default
 * number of attempts.
 */
#include "repro-conc-data.h"

/* Real-time order as the harness reads it (src/kvm/concurrent.ts widens respond by 1 ns: a tie overlaps). */
static int conc_precedes(int64_t (*ts)[2], uint32_t a, uint32_t b) { return ts[a][1] + 1 < ts[b][0]; }
static int conc_overlap(int64_t (*ts)[2], uint32_t a, uint32_t b) {
  return !conc_precedes(ts, a, b) && !conc_precedes(ts, b, a);
}

struct conc_attempt {
  int64_t (*ts)[2];
  int ok[CONC_NOUTCOMES];          /* outcome o matches the kernel's result of its request */
  unsigned char failed[CONC_NNODES]; /* no path from this node fits (Wing & Gong's memo) */
};

/* Whether request j may be the next one after the done set: no pending request responded before it. */
static int may_come_next(const struct conc_attempt *a, uint64_t done, uint32_t j) {
  for (uint32_t k = 0; k < CONC_NREQ; k++)
    if (k != j && !((done >> k) & 1) && conc_precedes(a->ts, k, j)) return 0;
  return 1;
}

static int fits(struct conc_attempt *a, uint32_t node) {
  if (node == conc_final) return 1;
  if (a->failed[node]) return 0;
  for (uint32_t e = conc_node_first[node]; e < conc_node_first[node + 1]; e++) {
    const struct conc_edge *x = &conc_edges[e];
    if (!a->ok[x->outcome] || !may_come_next(a, conc_node_done[node], x->req)) continue;
    if (x->overlap >= 0 && !conc_overlap(a->ts, x->req, (uint32_t)x->overlap)) continue;
    if (fits(a, x->to)) return 1;
  }
  a->failed[node] = 1;
  return 0;
}

/* Whether some order the spec allows, respecting real time, gives the attempt's results. */
static int attempt_allowed(struct conc_attempt *a, const struct kmm_resp *r, uint8_t *const *data) {
  static const uint8_t none[1];
  for (int o = 0; o < CONC_NOUTCOMES; o++) {
    char why[256];
    uint32_t j = conc_expect_req[o];
    a->ok[o] = matches(&conc_expect[o], &r[j], data[j] ? data[j] : none, why, sizeof why);
  }
  memset(a->failed, 0, sizeof a->failed);
  return fits(a, 0);
}

static void print_case(void) {
  int at = 0;
  for (int t = 0; t < conc_nthreads; t++) {
    if (conc_vcpu[t] == CONC_VMM) printf("  thread %d (VMM):\n", t);
    else printf("  thread %d (vCPU %llu):\n", t, (unsigned long long)conc_vcpu[t]);
    for (uint32_t i = 0; i < conc_count[t]; i++, at++) {
      put_line("    ", &conc_calls[at]);
      for (int o = 0; o < CONC_NOUTCOMES; o++)
        if (conc_expect_req[o] == (uint32_t)at) put_line("        allowed: ", &conc_expect_text[o]);
    }
  }
  printf("  order graph: %d nodes, %u edges\n", CONC_NNODES, conc_node_first[CONC_NNODES]);
}

/* Whether two calls of different threads overlapped in real time (counted, for the summary). */
static int any_overlap(int64_t (*ts)[2]) {
  for (uint32_t a = 0; a < CONC_NREQ; a++)
    for (uint32_t b = a + 1; b < CONC_NREQ; b++)
      if (conc_overlap(ts, a, b)) return 1;
  return 0;
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
  static struct conc_attempt judge;
  long overlapping = 0;
  for (long a = 1; a <= attempts; a++) {
    if (run_setup(&k, data, sizeof data)) {
      printf("REPRODUCED on attempt %ld: the setup differs from the spec\n", a);
      return 1;
    }
    struct kmm_resp r[CONC_NREQ];
    uint8_t *rdata[CONC_NREQ] = { 0 };
    int64_t ts[CONC_NREQ][2];
    run_threads(&k, r, rdata, ts);
    judge.ts = ts;
    if (!attempt_allowed(&judge, r, rdata)) {
      printf("REPRODUCED on attempt %ld: no order the spec allows, respecting real time, gives these results\n", a);
      print_seen(r, rdata, ts);
      return 1;
    }
    overlapping += any_overlap(ts);
    for (int j = 0; j < CONC_NREQ; j++) free(rdata[j]);
  }
  printf("NOT SEEN in %ld attempts: each had an order the spec allows that respects its real-time order "
         "(%ld with calls of different threads overlapping)\n", attempts, overlapping);
  return 0;
}
