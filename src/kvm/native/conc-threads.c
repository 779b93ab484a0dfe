/*
 * conc-threads.c: the threads of a concurrent case (issue 10 item 5), shared by the batch helper
 * (concurrent.c) and the C reproducers of concurrent cases (repro-concurrent.c). Included after
 * kvm-ops.c. One pthread per thread of the case, released together by a barrier: a vCPU thread runs
 * guest accesses on its own vCPU fd (KVM_RUN is per vCPU: vcpu->mutex), a VMM thread everything
 * else a thread may do. Every request is timed with CLOCK_MONOTONIC just before kmm_dispatch and
 * just after it returned, in ns since the barrier; within a thread each invocation is read at least
 * 2 ns after the previous response, so the harness can widen every response by 1 ns (ties between
 * threads become overlap, never a false real-time order) and keep each thread's own order strict.
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

static void conc_stuck(const struct conc_thread *t) {
  const struct kmm_req *q = &t->reqs[t->at];
  fprintf(stderr, "kvm-helper: concurrent case: thread %d did not finish within the case's budget "
          "(stuck in its request %u, op %u)\n", t->index, t->at, q->op);
  fflush(stderr);
  _exit(KMM_EXIT_STUCK); /* exit_group: the other threads go too, whatever they are blocked in */
}
