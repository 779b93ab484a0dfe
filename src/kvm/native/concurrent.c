/*
 * concurrent.c: a concurrent case (issue 10 item 5) on real threads, in the VM the batch's setup left.
 * Included by helper-main.c after kvm-ops.c.
 *
 * Wire format, inside one batch (after the reset and the setup's requests, which ran sequentially):
 *   OP_CONC_BEGIN  a[0] threads, a[1] requests that follow (markers included), a[2] join budget (ms)
 *   then per thread t in order: OP_CONC_THREAD a[0] t, a[1] vCPU index (~0: a VMM thread),
 *   a[2] the thread's request count, followed by those requests.
 * One pthread per thread, released together by a barrier. A vCPU thread runs guest accesses on its own
 * vCPU fd (KVM_RUN is per vCPU: vcpu->mutex), a VMM thread everything else a thread may do. Every
 * request is timed with CLOCK_MONOTONIC just before kmm_dispatch and just after it returned, in ns
 * since the barrier; within a thread each invocation is read at least 2 ns after the previous
 * response, so the harness can widen every response by 1 ns (ties between threads become overlap,
 * never a false real-time order) and keep each thread's own order strict.
 *
 * Nothing is answered until every thread has ended: the BEGIN response first (its data: two u64 per
 * following request, invoke and respond, 0 for markers), then each following request's response in
 * batch order. A thread still running when the join budget is spent is stuck: the helper says which
 * on stderr and exits with KMM_EXIT_STUCK (the harness reports a helper death, as for a crash).
 */
#define CONC_MAX_THREADS 8
#define CONC_VMM (~0ULL)
#define KMM_EXIT_STUCK 5
#define CONC_SCRATCH (1u << 20)

/* The helper's KVM_MEMMODEL_HELPER_CRASH_OP, honoured in the threads too (tests of deaths mid-case). */
static long kmm_crash_op = -1;

struct conc_thread {
  struct kmm *k;
  int index;
  uint64_t vcpu;              /* CONC_VMM or the vCPU this thread runs */
  const struct kmm_req *reqs; /* this thread's requests (after its marker) */
  uint32_t n;
  struct kmm_resp *resps;     /* one per request */
  uint8_t **data;             /* each response's data (malloc'd), or NULL */
  int64_t (*ts)[2];           /* each request's invoke and respond */
  pthread_barrier_t *barrier;
  struct timespec t0;         /* the barrier's release, read by the main thread just before it waits */
  volatile uint32_t at;       /* the request running (for the stuck message) */
  uint8_t *scratch;
};

/* A thread that armed guest timers (kvm-ops.c) deletes them before it ends: the threads are short-lived. */
static void kmm_release_timers(void) {
  if (!kmm_timers_tid) return;
  for (int i = 0; i < 2; i++) timer_delete(kmm_timers[i]);
  kmm_timers_tid = 0;
}

static int64_t conc_ns(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)(t.tv_sec - t0->tv_sec) * 1000000000LL + (t.tv_nsec - t0->tv_nsec);
}

/* Whether a thread of this role may make the request: guest accesses on its own vCPU, or VMM calls. */
static int conc_allowed(uint64_t vcpu, const struct kmm_req *q) {
  switch (q->op) {
  case OP_GUEST_ACCESS: case OP_GUEST_SPIN: case OP_GUEST_UD2: case OP_GUEST_PEEK:
    return vcpu != CONC_VMM && q->a[0] == vcpu;
  case OP_SET_REGION: case OP_MMAP: case OP_MUNMAP: case OP_MPROTECT: case OP_MADV_DONTNEED:
  case OP_MADV_POPULATE: case OP_HOST_WRITE: case OP_HOST_READ: case OP_GMEM_CREATE: case OP_GMEM_PUNCH:
  case OP_GET_DIRTY_LOG: case OP_CLEAR_DIRTY_LOG: case OP_CHECK_EXTENSION: case OP_ENABLE_CAP:
  case OP_SET_MEMORY_ATTRIBUTES: case OP_CRASH:
    return vcpu == CONC_VMM;
  default: return 0; /* a reset, a demand-paging episode (it has threads of its own), a nested section */
  }
}

static void *conc_thread_main(void *arg) {
  struct conc_thread *t = arg;
  pthread_barrier_wait(t->barrier);
  int64_t last = -2;
  for (uint32_t i = 0; i < t->n; i++) {
    const struct kmm_req *q = &t->reqs[i];
    struct kmm_resp *r = &t->resps[i];
    t->at = i;
    if (kmm_crash_op >= 0 && q->op == (uint32_t)kmm_crash_op) { signal(SIGSEGV, SIG_DFL); raise(SIGSEGV); }
    int64_t invoke;
    do invoke = conc_ns(&t->t0); while (invoke < last + 2);
    if (!conc_allowed(t->vcpu, q)) {
      memset(r, 0, sizeof *r);
      r->status = ST_REFUSED; r->detail = KMM_REFUSE_THREAD; r->err = EPERM; r->rc = -1;
    } else {
      kmm_dispatch(t->k, q, r, t->scratch, CONC_SCRATCH);
    }
    last = conc_ns(&t->t0);
    t->ts[i][0] = invoke;
    t->ts[i][1] = last;
    if (r->datalen) {
      t->data[i] = malloc(r->datalen);
      if (t->data[i]) memcpy(t->data[i], t->scratch, r->datalen);
      else r->datalen = 0;
    }
  }
  kmm_release_timers();
  return NULL;
}

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

static int conc_write(int out, const struct kmm_resp *r, const uint8_t *data) {
  if (write_full(out, r, sizeof *r) < 0) return -1;
  return r->datalen && data ? write_full(out, data, r->datalen) : 0;
}

/* A malformed section: BEGIN fails with EINVAL and every request it claims is refused, none performed. */
static long conc_reject(const struct kmm_req *begin, uint32_t avail, int out) {
  uint64_t claimed = begin->a[1] < avail ? begin->a[1] : avail;
  struct kmm_resp r;
  memset(&r, 0, sizeof r);
  r.status = ST_ERR; r.err = EINVAL; r.rc = -1;
  if (conc_write(out, &r, NULL) < 0) return -1;
  r.status = ST_REFUSED; r.err = EPERM; r.detail = KMM_REFUSE_THREAD;
  for (uint64_t i = 0; i < claimed; i++) if (conc_write(out, &r, NULL) < 0) return -1;
  return (long)claimed + 1;
}

static void conc_stuck(const struct conc_thread *t) {
  const struct kmm_req *q = &t->reqs[t->at];
  fprintf(stderr, "kvm-helper: concurrent case: thread %d did not finish within the case's budget "
          "(stuck in its request %u, op %u)\n", t->index, t->at, q->op);
  fflush(stderr);
  _exit(KMM_EXIT_STUCK); /* exit_group: the other threads go too, whatever they are blocked in */
}

/*
 * Runs the section starting at `begin` (`avail` requests follow it in the batch) and writes all its
 * responses. Returns how many requests it consumed (BEGIN included), or -1 when the pipe closed.
 */
static long conc_run(struct kmm *k, const struct kmm_req *begin, uint32_t avail, int out, uint8_t *data,
                     size_t cap) {
  if (!conc_valid(begin, avail) || 16ULL * begin->a[1] > cap) return conc_reject(begin, avail, out);
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
  long rc = conc_write(out, &head, data) < 0 ? -1 : (long)total + 1;
  for (uint32_t i = 0; i < total && rc >= 0; i++) if (conc_write(out, &resps[i], rdata[i]) < 0) rc = -1;
  for (uint32_t i = 0; i < total; i++) free(rdata[i]);
  free(resps); free(rdata); free(ts);
  return rc;
}
