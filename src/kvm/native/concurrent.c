/*
 * concurrent.c: a concurrent case (issue 10 item 5) on real threads, in the VM the batch's setup left.
 * Included by helper-main.c after kvm-ops.c.
 *
 * Wire format, inside one batch (after the reset and the setup's requests, which ran sequentially):
 *   OP_CONC_BEGIN  a[0] threads, a[1] requests that follow (markers included), a[2] join budget (ms)
 *   then per thread t in order: OP_CONC_THREAD a[0] t, a[1] vCPU index (~0: a VMM thread),
 *   a[2] the thread's request count, followed by those requests.
 * The threads themselves (roles, timing) are conc-threads.c's.
 *
 * Nothing is answered until every thread has ended: the BEGIN response first (its data: two u64 per
 * following request, invoke and respond, 0 for markers), then each following request's response in
 * batch order. A thread still running when the join budget is spent is stuck: the helper says which
 * on stderr and exits with KMM_EXIT_STUCK (the harness reports a helper death, as for a crash).
 */
#include "conc-threads.c"

/* The section's markers are well formed: threads in order, counts adding up, each vCPU used once. */
static int conc_valid(const struct kmm_req *begin, uint32_t avail) {
  uint64_t nthreads = begin->a[0], total = begin->a[1];
  if (nthreads < 1 || nthreads > CONC_MAX_THREADS || total > avail) return 0;
  const struct kmm_req *q = begin + 1;
  uint64_t at = 0, seen = 0;
  for (uint64_t t = 0; t < nthreads; t++) {
    if (at >= total || q[at].op != OP_CONC_THREAD || q[at].a[0] != t || q[at].a[2] > total - at - 1) return 0;
    uint64_t vcpu = q[at].a[1];
    if (vcpu != CONC_VMM) {
      if (vcpu >= NR_VCPUS || (seen & (1ULL << vcpu))) return 0;
      seen |= 1ULL << vcpu;
    }
    at += 1 + q[at].a[2];
  }
  return at == total;
}

static int conc_write(const struct kmm_resp *r, const uint8_t *data) { return ans_add(r, data); }

/* A malformed section: BEGIN fails with EINVAL and every request it claims is refused, none performed. */
static long conc_reject(const struct kmm_req *begin, uint32_t avail) {
  uint64_t claimed = begin->a[1] < avail ? begin->a[1] : avail;
  struct kmm_resp r;
  memset(&r, 0, sizeof r);
  r.status = ST_ERR; r.err = EINVAL; r.rc = -1;
  if (conc_write(&r, NULL) < 0) return -1;
  r.status = ST_REFUSED; r.err = EPERM; r.detail = KMM_REFUSE_THREAD;
  for (uint64_t i = 0; i < claimed; i++) if (conc_write(&r, NULL) < 0) return -1;
  return (long)claimed + 1;
}

/*
 * Runs the section starting at `begin` (`avail` requests follow it in the batch) and adds all its
 * responses to the batch's answers. Returns how many requests it consumed (BEGIN included), or -1
 * when the answers cannot grow.
 */
static long conc_run(struct kmm *k, const struct kmm_req *begin, uint32_t avail, uint8_t *data, size_t cap) {
  if (!conc_valid(begin, avail) || 16ULL * begin->a[1] > cap) return conc_reject(begin, avail);
  uint32_t nthreads = (uint32_t)begin->a[0], total = (uint32_t)begin->a[1];
  static uint8_t *scratch[CONC_MAX_THREADS];
  struct kmm_resp *resps = calloc(total ? total : 1, sizeof *resps);
  uint8_t **rdata = calloc(total ? total : 1, sizeof *rdata);
  int64_t (*ts)[2] = calloc(total ? total : 1, sizeof *ts);
  struct conc_thread th[CONC_MAX_THREADS];
  if (!resps || !rdata || !ts) { fprintf(stderr, "kvm-helper: out of memory\n"); _exit(4); }
  int any_vcpu = 0;
  uint32_t at = 0;
  for (uint32_t t = 0; t < nthreads; t++) {
    const struct kmm_req *m = &begin[1 + at];
    resps[at].status = ST_OK; /* the marker's own answer */
    if (!scratch[t] && !(scratch[t] = malloc(CONC_SCRATCH))) {
      fprintf(stderr, "kvm-helper: out of memory\n");
      _exit(4);
    }
    th[t] = (struct conc_thread){ .k = k, .index = (int)t, .vcpu = m->a[1], .reqs = m + 1, .n = (uint32_t)m->a[2],
                                  .resps = resps + at + 1, .data = rdata + at + 1, .ts = ts + at + 1,
                                  .scratch = scratch[t] };
    if (m->a[1] != CONC_VMM) any_vcpu = 1;
    at += 1 + (uint32_t)m->a[2];
  }
  /* The guest exists before the threads start: kmm_ensure_guest is not made for concurrent callers. */
  if (any_vcpu && k->vm >= 0) kmm_ensure_guest(k);
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, nthreads + 1);
  struct timespec t0;
  pthread_t pt[CONC_MAX_THREADS];
  for (uint32_t t = 0; t < nthreads; t++) {
    th[t].barrier = &barrier;
    if (pthread_create(&pt[t], NULL, conc_thread_main, &th[t]) != 0) {
      fprintf(stderr, "kvm-helper: concurrent case: pthread_create failed\n");
      _exit(4);
    }
  }
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (uint32_t t = 0; t < nthreads; t++) th[t].t0 = t0; /* published to the threads by the barrier */
  pthread_barrier_wait(&barrier);
  long budget_ms = (long)begin->a[2] ? (long)begin->a[2] : 10000;
  for (uint32_t t = 0; t < nthreads; t++) if (kmm_join_within(pt[t], &budget_ms) != 0) conc_stuck(&th[t]);
  pthread_barrier_destroy(&barrier);
  struct kmm_resp head;
  memset(&head, 0, sizeof head);
  head.status = ST_OK;
  head.datalen = 16 * total;
  memcpy(data, ts, 16ULL * total);
  long rc = conc_write(&head, data) < 0 ? -1 : (long)total + 1;
  for (uint32_t i = 0; i < total && rc >= 0; i++) if (conc_write(&resps[i], rdata[i]) < 0) rc = -1;
  for (uint32_t i = 0; i < total; i++) free(rdata[i]);
  free(resps); free(rdata); free(ts);
  return rc;
}
