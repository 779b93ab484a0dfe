/*
 * worker.c (the batch helper only): a thread that works while the harness computes. Between
 * sequences it makes the next VM (kmm_prepare) and closes the finished sequence's VM (its fds and
 * the harness memory), so neither is on the path of a batch.
 *
 * The main thread hands over a finished VM (wk_retire, after answering a SEQUENCE_END batch) and
 * goes back to reading requests. Before an OP_RESET it waits until the worker has made the spare
 * (wk_wait_spare), so that the reset adopts it or, if making one failed, makes its VM itself; the
 * old VM's fds may still be closing then. The host window is the main thread's alone: the reset
 * clears it (kmm_close_vm), as without a worker, and until then a handed-over sequence's mappings
 * stay, unreachable (without a VM every request but a reset is EBADF). The worker touches only the
 * VM it was handed and k->spare until it is declared made; k->cpuid is read-only once the main
 * thread has fetched it, before the worker starts.
 */
#include <pthread.h>

struct wk_old_vm {
  int vm;
  int vcpu[NR_VCPUS];
  struct kvm_run *run[NR_VCPUS];
  int gmem[MAX_GMEMS];
  int ngmem;
  uint8_t *harness;
};

static pthread_mutex_t wk_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wk_cond = PTHREAD_COND_INITIALIZER;
static struct wk_old_vm wk_old;
static int wk_has_old;       /* a VM handed over, not yet torn down */
static int wk_busy;          /* the worker is tearing down or preparing */
static int wk_wanted;        /* work is waiting for the worker */
static int wk_prepared;      /* this round's kmm_prepare is done: k->spare is the worker's no more */

static void wk_close_old(const struct wk_old_vm *o, size_t run_size) {
  for (int i = 0; i < NR_VCPUS; i++) {
    if (o->run[i]) munmap(o->run[i], run_size);
    if (o->vcpu[i] >= 0) close(o->vcpu[i]);
  }
  for (int i = 0; i < o->ngmem; i++) if (o->gmem[i] >= 0) close(o->gmem[i]);
  if (o->vm >= 0) close(o->vm);
  if (o->harness) munmap(o->harness, HARNESS_SIZE);
}

static void *wk_main(void *arg) {
  struct kmm *k = arg;
  pthread_mutex_lock(&wk_lock);
  for (;;) {
    while (!wk_wanted) pthread_cond_wait(&wk_cond, &wk_lock);
    wk_wanted = 0;
    wk_busy = 1;
    wk_prepared = 0;
    struct wk_old_vm old = wk_old;
    int has_old = wk_has_old;
    wk_has_old = 0;
    pthread_cond_broadcast(&wk_cond);
    pthread_mutex_unlock(&wk_lock);
    /*
     * The spare first, then the old VM's fds, whose last close (kvm_destroy_vm) is the slow part and
     * may go on while the next sequence runs.
     */
    kmm_prepare(k);
    pthread_mutex_lock(&wk_lock);
    wk_prepared = 1;
    pthread_cond_broadcast(&wk_cond);
    pthread_mutex_unlock(&wk_lock);
    if (has_old) wk_close_old(&old, k->run_size);
    pthread_mutex_lock(&wk_lock);
    wk_busy = 0;
    pthread_cond_broadcast(&wk_cond);
  }
  return NULL;
}

/* Start the worker (signals stay with the main thread: the guest timers and SIGINT are its own). */
static int wk_start(struct kmm *k) {
  kmm_supported_cpuid(k);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pthread_t t;
  int rc = pthread_create(&t, NULL, wk_main, k);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) return -1;
  pthread_detach(t);
  return 0;
}

/* Wake the worker: tear down the VM handed over, if any, then make a spare if there is none. */
static void wk_kick(void) {
  pthread_mutex_lock(&wk_lock);
  wk_wanted = 1;
  pthread_cond_broadcast(&wk_cond);
  pthread_mutex_unlock(&wk_lock);
}

/* Hand the current VM, its gmem fds and harness memory over, leaving k as kmm_close_vm would. */
static void wk_retire(struct kmm *k) {
  pthread_mutex_lock(&wk_lock);
  while (wk_has_old) pthread_cond_wait(&wk_cond, &wk_lock); /* the previous one is not taken yet */
  wk_old.vm = k->vm;
  for (int i = 0; i < NR_VCPUS; i++) { wk_old.vcpu[i] = k->vcpu[i]; wk_old.run[i] = k->run[i]; }
  memcpy(wk_old.gmem, k->gmem, sizeof k->gmem);
  wk_old.ngmem = k->ngmem;
  wk_old.harness = k->harness;
  wk_has_old = 1;
  pthread_mutex_unlock(&wk_lock);
  k->vm = -1;
  for (int i = 0; i < NR_VCPUS; i++) { k->vcpu[i] = -1; k->run[i] = NULL; }
  k->ngmem = 0;
  k->harness = NULL;
  k->harness_slot = k->vcpus_ready = 0;
  memset(k->slots, 0, sizeof k->slots);
}

/* Until k->spare is the main thread's: the worker is idle or has done this round's kmm_prepare. */
static void wk_wait_spare(void) {
  pthread_mutex_lock(&wk_lock);
  while (wk_wanted || (wk_busy && !wk_prepared)) pthread_cond_wait(&wk_cond, &wk_lock);
  pthread_mutex_unlock(&wk_lock);
}
