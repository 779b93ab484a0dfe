/*
 * kvm-helper: serves batches of kvm-ops requests. Usage: kvm-helper [REQUEST_FIFO RESPONSE_FIFO
 * [ANSWERS_FD]] (stdin/stdout without arguments; ANSWERS_FD: answers.c's shared file).
 * `kvm-helper --probe` prints what this machine offers, one `key value` per line, and exits;
 * `--bench-raw N` times N accesses in a plain ioctl loop.
 *
 * A batch: header {u32 magic "KMMB", u32 count, u32 flags, u32 run_timeout_ms}, then count
 * struct kmm_req. The responses (struct kmm_resp, then datalen bytes each) are written in one write
 * when the whole batch is done; each is also kept in the answers file as soon as its request
 * finishes (answers.c), so when the helper dies the harness knows which request killed it. A header
 * that is not a batch is answered with {u32 "KMME", u32 what-was-read} and skipped: the helper
 * resynchronises on the next magic and goes on serving. A batch holds at most MAX_BATCH requests
 * (read whole before any response is written, so neither side can block writing while the other
 * does): longer sequences are sent as several batches (helper.ts).
 *
 * The helper works ahead while the harness computes (worker.c): a batch flagged SEQUENCE_END is the
 * last of its sequence, so once it is answered its VM and host memory are handed to a worker thread
 * to tear down, and the worker makes the next VM (kmm_prepare: VM, vCPUs set up, guest code built)
 * for the next OP_RESET to adopt. A helper that dies loses its spare with it; a new helper makes one
 * as soon as it starts.
 *
 * SIGINT is ignored: the harness owns interrupts (a Ctrl-C reaches the whole process group) and ends
 * the helper by closing the request pipe. For the harness's own tests of helper deaths,
 * KVM_MEMMODEL_HELPER_CRASH_OP=N makes the helper die of SIGSEGV whenever it is asked to run op N
 * (in a concurrent case's threads too). A concurrent case (OP_CONC_BEGIN) is concurrent.c's.
 */
#include "kvm-ops.c"
#include <time.h>

#define BATCH_MAGIC 0x424d4d4bu /* "KMMB" */
#define ERROR_MAGIC 0x454d4d4bu /* "KMME" */
#define MAX_BATCH 65536u
#define FLAG_MUTANT_DROP_READONLY 1u
#define FLAG_SEQUENCE_END 2u

static int read_full(int fd, void *buf, size_t len) {
  uint8_t *p = buf;
  while (len) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n; len -= (size_t)n;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  while (len) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n; len -= (size_t)n;
  }
  return 0;
}

#include "answers.c"
#include "concurrent.c"
#include "worker.c"

static long read_sysfs(const char *path) {
  FILE *f = fopen(path, "r");
  long v = -1;
  if (f) { if (fscanf(f, "%ld", &v) != 1) v = -1; fclose(f); }
  return v;
}

static int probe(void) {
  struct kmm k;
  if (kmm_init(&k) < 0) { printf("dev_kvm %s\n", strerror(errno)); return 1; }
  printf("dev_kvm ok\n");
  printf("api_version %d\n", ioctl(k.kvm, KVM_GET_API_VERSION, 0));
  struct kmm_resp r;
  if (kmm_reset(&k, &r) < 0) { printf("create_vm %s\n", strerror(r.err)); return 1; }
  static const int caps[] = { 10, 16, 31, 40, 118, 168, 231, 232, 233, 234, 235, 244 };
  for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
    printf("cap_%d %d\n", caps[i], ioctl(k.vm, KVM_CHECK_EXTENSION, caps[i]));
  printf("hugetlb_1g_free %ld\n", read_sysfs("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages"));
  int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  printf("userfaultfd %s\n", uffd >= 0 ? "ok" : strerror(errno));
  if (uffd >= 0) close(uffd);
  struct kmm_req q = { .op = OP_GUEST_PEEK, .a = { 0, HARNESS_GPA + G_STUBS, 8, 0, 0 } };
  kmm_dispatch(&k, &q, &r, NULL, 0);
  printf("guest %s\n", r.status == ST_RUN && r.exit_reason == KVM_EXIT_HLT && r.has_value ? "ok" : "broken");
  return 0;
}

/*
 * --bench-raw N: the per-access baseline for bench/kvm-helper.ts. N guest reads of RAM in a plain
 * loop of KVM_SET_REGS + KVM_RUN + KVM_GET_REGS, no requests, no pipes. Prints nanoseconds per access.
 */
static int bench_raw(long n) {
  struct kmm k;
  struct kmm_resp r;
  if (kmm_init(&k) < 0 || kmm_reset(&k, &r) < 0 || kmm_ensure_guest(&k) < 0) { perror("bench"); return 1; }
  void *mem = mmap((void *)HVA_WINDOW_START, 0x200000, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  struct kvm_userspace_memory_region m = { 0, 0, 0, 0x200000, (uint64_t)mem };
  if (mem == MAP_FAILED || ioctl(k.vm, KVM_SET_USER_MEMORY_REGION, &m) < 0) { perror("bench slot"); return 1; }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long i = 0; i < n; i++) {
    struct kvm_regs regs;
    memset(&regs, 0, sizeof regs);
    regs.rip = HARNESS_GPA + STUB_READ(8);
    regs.rbx = (uint64_t)(i % 512) * 4096;
    regs.rsp = HARNESS_GPA + G_STACK;
    regs.rflags = 2;
    if (ioctl(k.vcpu[0], KVM_SET_REGS, &regs) < 0 || ioctl(k.vcpu[0], KVM_RUN, 0) < 0 ||
        ioctl(k.vcpu[0], KVM_GET_REGS, &regs) < 0) {
      perror("bench run");
      return 1;
    }
    if (k.run[0]->exit_reason != KVM_EXIT_HLT) { fprintf(stderr, "bench: exit %u\n", k.run[0]->exit_reason); return 1; }
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("%.0f\n", ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--probe") == 0) return probe();
  if (argc == 3 && strcmp(argv[1], "--bench-raw") == 0) return bench_raw(atol(argv[2]));
  if (argc != 1 && argc != 3 && argc != 4) {
    fprintf(stderr, "usage: kvm-helper [REQUEST_FIFO RESPONSE_FIFO [ANSWERS_FD]] | --probe | --bench-raw N\n");
    return 2;
  }
  int in = 0, out = 1;
  if (ans_init(argc == 4 ? atoi(argv[3]) : -1) < 0) { perror("kvm-helper: answers file"); return 2; }
  if (argc >= 3) {
    in = open(argv[1], O_RDONLY | O_CLOEXEC);
    out = open(argv[2], O_WRONLY | O_CLOEXEC);
    if (in < 0 || out < 0) { perror("kvm-helper: open fifo"); return 2; }
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  const char *crash = getenv("KVM_MEMMODEL_HELPER_CRASH_OP");
  long crash_op = crash && *crash ? strtol(crash, NULL, 10) : -1;
  kmm_crash_op = crash_op;
  struct kmm k;
  if (kmm_init(&k) < 0) { perror("kvm-helper: /dev/kvm"); return 3; }
  size_t cap = 1u << 20;
  uint8_t *data = malloc(cap);
  struct kmm_req *reqs = malloc(sizeof *reqs * MAX_BATCH);
  if (!data || !reqs) return 4;
  if (wk_start(&k) < 0) { perror("kvm-helper: worker thread"); return 4; }
  wk_kick();
  for (;;) {
    uint32_t hdr[4];
    if (read_full(in, hdr, sizeof hdr) < 0) return 0; /* the harness closed the pipe */
    while (hdr[0] != BATCH_MAGIC || hdr[1] > MAX_BATCH) {
      uint32_t err[2] = { ERROR_MAGIC, hdr[0] };
      if (write_full(out, err, sizeof err) < 0) return 0;
      /* Resynchronise: slide the header window one byte at a time until it starts a batch. */
      memmove((uint8_t *)hdr, (uint8_t *)hdr + 1, sizeof hdr - 1);
      if (read_full(in, (uint8_t *)hdr + sizeof hdr - 1, 1) < 0) return 0;
      while (hdr[0] != BATCH_MAGIC) {
        memmove((uint8_t *)hdr, (uint8_t *)hdr + 1, sizeof hdr - 1);
        if (read_full(in, (uint8_t *)hdr + sizeof hdr - 1, 1) < 0) return 0;
      }
    }
    uint32_t count = hdr[1];
    k.mutant_drop_readonly = (hdr[2] & FLAG_MUTANT_DROP_READONLY) != 0;
    k.run_timeout_ms = hdr[3] ? hdr[3] : 2000;
    if (count && read_full(in, reqs, sizeof *reqs * count) < 0) return 0;
    int reset_seen = 0; /* a reset adopted the spare (or made its VM): the worker makes the next one */
    ans_begin();
    for (uint32_t i = 0; i < count; i++) {
      struct kmm_resp r;
      if (crash_op >= 0 && reqs[i].op == (uint32_t)crash_op) { signal(SIGSEGV, SIG_DFL); raise(SIGSEGV); }
      if (reqs[i].op == OP_RESET) { wk_wait_spare(); reset_seen = 1; }
      if (reqs[i].op == OP_CONC_BEGIN) {
        long used = conc_run(&k, &reqs[i], count - i - 1, data, cap);
        if (used < 0) { perror("kvm-helper: answers"); return 4; }
        i += (uint32_t)used - 1;
        continue;
      }
      kmm_dispatch(&k, &reqs[i], &r, data, cap);
      if (ans_add(&r, data) < 0) { perror("kvm-helper: answers"); return 4; }
    }
    if (ans_flush(out) < 0) return 0;
    /* Answered: the harness computes the next sequence now, and the helper gets ready for it. */
    if (hdr[2] & FLAG_SEQUENCE_END) wk_retire(&k);
    if ((hdr[2] & FLAG_SEQUENCE_END) || reset_seen) wk_kick();
  }
}
