/*
 * kvm-ops.c: the operations of the kvm-memmodel harness on a real /dev/kvm, one request in, one
 * response out. Shared verbatim by the batch helper (helper-main.c) and by every C reproducer that
 * `kvm-memmodel export --c` writes, so a reproducer runs exactly the code the harness ran.
 *
 * Only the libc and Debian's (6.1) <linux/kvm.h> are needed; newer uAPI (REGION2, guest_memfd,
 * memory_fault, CLEAR_DIRTY_LOG numbers) is defined here from ../shared/UPSTREAM.md.
 *
 * The guest: one harness memslot at HARNESS_GPA (created lazily, on the first guest access, so it
 * is never in the way of slot-count tests) holds identity page tables with 2 MiB pages for the
 * first 4 GiB, a GDT, an IDT whose every vector halts with the vector in RCX, and one stub per
 * access size: `movzx/mov rax,[rbx]; hlt` and `mov [rbx],rax; hlt`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ---- uAPI newer than Debian's 6.1 header (values: UPSTREAM.md) ---- */
struct kmm_region2 {
  uint32_t slot, flags;
  uint64_t guest_phys_addr, memory_size, userspace_addr, guest_memfd_offset;
  uint32_t guest_memfd, pad1;
  uint64_t pad2[14];
};
struct kmm_create_gmem { uint64_t size, flags, reserved[6]; };
struct kmm_mem_attrs { uint64_t address, size, attributes, flags; };
#define KMM_SET_USER_MEMORY_REGION2 0x40a0ae49UL
#define KMM_CREATE_GUEST_MEMFD 0xc040aed4UL
#define KMM_CLEAR_DIRTY_LOG 0xc018aec0UL
#define KMM_SET_MEMORY_ATTRIBUTES 0x4020aed2UL
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MAP_HUGE_1GB
#define MAP_HUGE_1GB (30 << 26)
#endif

/* ---- the wire format (src/kvm/protocol.ts mirrors it) ---- */
enum kmm_op {
  OP_RESET = 0, OP_SET_REGION = 1, OP_MMAP = 2, OP_MUNMAP = 3, OP_MPROTECT = 4, OP_MADV_DONTNEED = 5,
  OP_MADV_POPULATE = 6, OP_HOST_WRITE = 7, OP_HOST_READ = 8, OP_GMEM_CREATE = 9, OP_GMEM_PUNCH = 10,
  OP_GUEST_ACCESS = 11, OP_GET_DIRTY_LOG = 12, OP_CLEAR_DIRTY_LOG = 13, OP_CHECK_EXTENSION = 14,
  OP_ENABLE_CAP = 15, OP_SET_MEMORY_ATTRIBUTES = 16, OP_DEMAND_PAGING = 17, OP_EPISODE_PAGE = 18,
  /* A concurrent case (concurrent.c, the batch helper only): a section header, and one marker per thread. */
  OP_CONC_BEGIN = 19, OP_CONC_THREAD = 20,
  /* Debug operations for the helper's own tests (no command encodes them): a guest that never halts,
   * a helper crash, a #UD, a read of the harness's own guest code (which OP_GUEST_ACCESS refuses). */
  OP_GUEST_SPIN = 100, OP_CRASH = 101, OP_GUEST_UD2 = 102, OP_GUEST_PEEK = 103,
};
struct kmm_req { uint32_t op, a32; uint64_t a[8]; };
enum kmm_status { ST_OK = 0, ST_ERR = 1, ST_SEGV = 2, ST_RUN = 3, ST_HARNESS = 4, ST_REFUSED = 5 };
struct kmm_resp {
  uint32_t status;        /* enum kmm_status */
  int32_t err;            /* errno for ST_ERR and a failed KVM_RUN */
  int64_t rc;             /* the call's return value (handle index for gmem_create) */
  uint32_t exit_reason;   /* ST_RUN: kvm_run.exit_reason after the visible KVM_RUN */
  uint32_t has_value;     /* ST_RUN: a read completed; ST_OK: value is the data read */
  uint64_t payload[4];    /* ST_RUN: kvm_run union words 0..3 as the visible KVM_RUN left them */
  uint64_t value;
  uint32_t datalen;       /* bytes of data that follow (dirty bitmaps) */
  uint32_t detail;        /* ST_HARNESS: what went wrong (a guest exception vector, a setup step); ST_REFUSED: why */
};
#define KMM_HARNESS_SETUP 1
#define KMM_HARNESS_EXCEPTION 2
#define KMM_HARNESS_TIMEOUT 3
#define KMM_HARNESS_EXIT 4
#define KMM_HARNESS_STALLED 5
/* ST_REFUSED details: the request touches what the helper keeps for itself and was not performed. */
#define KMM_REFUSE_WINDOW 1    /* host memory outside [HVA_WINDOW_START, HVA_WINDOW_END) */
#define KMM_REFUSE_SLOT 2      /* a memslot op on HARNESS_SLOT */
#define KMM_REFUSE_GPA 3       /* a memslot or attribute range overlapping the harness gpa range */
#define KMM_REFUSE_GUEST 4     /* a guest access into the harness's own guest pages */
#define KMM_REFUSE_LENGTH 5    /* a host access of 0 or more than 8 bytes (the helper copies through a u64) */
#define KMM_REFUSE_SLOT_HVA 6  /* a memslot whose host range lies outside the window */
#define KMM_REFUSE_THREAD 7    /* in a concurrent case: a request this thread's role may not make */

#define HARNESS_SLOT 32000u
#define HARNESS_GPA 0xF0000000ULL
#define HARNESS_SIZE 0x200000ULL
#define HVA_WINDOW_START 0x1000000000ULL
#define HVA_WINDOW_END 0x8000000000ULL
#define MAX_GMEMS 64
#define MAX_SLOTS 64
#define NR_VCPUS 2

/* Guest layout inside the harness slot. */
#define G_PML4 0x0000
#define G_PDPT 0x1000
#define G_PD 0x2000 /* four pages: 0..4 GiB */
#define G_GDT 0x6000
#define G_IDT 0x7000
#define G_STUBS 0x8000
#define G_VECTORS 0x9000
#define G_STACK 0x10000
#define STUB_SIZE 16
#define STUB_READ(len) (G_STUBS + STUB_SIZE * (len == 1 ? 0 : len == 2 ? 1 : len == 4 ? 2 : 3))
#define STUB_WRITE(len) (STUB_READ(len) + 4 * STUB_SIZE)
#define STUB_SPIN (G_STUBS + 8 * STUB_SIZE)
#define STUB_UD2 (G_STUBS + 9 * STUB_SIZE)

struct kmm_slot { int used; uint32_t id; uint64_t npages, gpa, hva; };
#define EPISODE_MAX_PAGES 64
#define KMM_CPUID_ENTRIES 256
struct kmm {
  int kvm, vm;
  int vcpu[NR_VCPUS];
  struct kvm_run *run[NR_VCPUS];
  size_t run_size;
  uint8_t *harness;          /* host memory of the harness slot (built), or NULL */
  int harness_slot;          /* the harness slot is registered (on the first guest access of a sequence) */
  int vcpus_ready;           /* the vCPUs have the guest's SREGS and CPUID */
  int gmem[MAX_GMEMS];
  int ngmem;
  struct kmm_slot slots[MAX_SLOTS];
  unsigned run_timeout_ms;
  int mutant_drop_readonly;  /* kvm-memmodel mutant: the adaptor loses KVM_MEM_READONLY */
  /* The page lists of the next demand-paging episode (OP_EPISODE_PAGE appends, the episode clears). */
  uint32_t episode_pages[NR_VCPUS][EPISODE_MAX_PAGES];
  int episode_npages[NR_VCPUS];
  /*
   * KVM_GET_SUPPORTED_CPUID, asked once per process (0: not yet, 1: got it, -1: the ioctl failed):
   * it describes the host and KVM module, never a VM, and costs ~0.4 ms a call on this machine.
   */
  int cpuid_state;
  /* A VM made ahead of time (kmm_prepare), adopted by the next OP_RESET; spare.vm < 0: none. */
  struct kmm_spare {
    int vm;
    int vcpu[NR_VCPUS];
    struct kvm_run *run[NR_VCPUS];
    uint8_t *harness;
  } spare;
  struct { struct kvm_cpuid2 c; struct kvm_cpuid_entry2 e[KMM_CPUID_ENTRIES]; } cpuid;
};

/*
 * The helper's own bookkeeping (k->slots, k->gmem) is shared by the threads of a concurrent case: this
 * lock guards only that bookkeeping, never a kernel call, so it orders nothing the kernel does.
 */
static pthread_mutex_t kmm_book = PTHREAD_MUTEX_INITIALIZER;

static int kmm_fail(struct kmm_resp *r) { r->status = ST_ERR; r->err = errno; r->rc = -1; return -1; }
static int kmm_result(struct kmm_resp *r, long rc) {
  if (rc < 0) return kmm_fail(r);
  r->status = ST_OK; r->rc = rc; return 0;
}

/* ---- host memory access that survives SIGSEGV/SIGBUS ---- */
/* Per thread: a SIGSEGV is delivered to the thread that faulted, and a concurrent case (concurrent.c)
 * has several threads touching host memory at once. */
static __thread sigjmp_buf kmm_fault_jmp;
static __thread volatile sig_atomic_t kmm_fault_armed;
static void kmm_fault_handler(int sig) {
  if (kmm_fault_armed) siglongjmp(kmm_fault_jmp, sig);
  signal(sig, SIG_DFL);
  raise(sig);
}
/* Which guest-run timer expired (KMM_TIMER_*); pthread_kill's SIGALRM (a stuck episode) sets nothing. */
#define KMM_TIMER_GUEST 1
#define KMM_TIMER_WALL 2
/* Per thread: each vCPU thread of a concurrent case has its own timers (SIGEV_THREAD_ID). */
static __thread volatile sig_atomic_t kmm_timer_fired;
static void kmm_alarm_handler(int sig, siginfo_t *si, void *uc) {
  (void)sig; (void)uc;
  if (si->si_code == SI_TIMER) kmm_timer_fired = si->si_value.sival_int;
}

static void kmm_install_handlers(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = kmm_fault_handler;
  sa.sa_flags = SA_NODEFER;
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
  sa.sa_handler = NULL;
  sa.sa_sigaction = kmm_alarm_handler;
  sa.sa_flags = SA_SIGINFO; /* no SA_RESTART: KVM_RUN returns EINTR with exit_reason KVM_EXIT_INTR */
  sigaction(SIGALRM, &sa, NULL);
}

static int kmm_host_copy(void *dst, const void *src, size_t len) {
  if (sigsetjmp(kmm_fault_jmp, 1)) { kmm_fault_armed = 0; return -1; }
  kmm_fault_armed = 1;
  volatile uint8_t *d = dst;
  const volatile uint8_t *s = src;
  for (size_t i = 0; i < len; i++) d[i] = s[i];
  kmm_fault_armed = 0;
  return 0;
}

/* ---- VM lifetime ---- */
static void kmm_close_vm(struct kmm *k) {
  for (int i = 0; i < NR_VCPUS; i++) {
    if (k->run[i]) munmap(k->run[i], k->run_size);
    if (k->vcpu[i] >= 0) close(k->vcpu[i]);
    k->run[i] = NULL; k->vcpu[i] = -1;
  }
  for (int i = 0; i < k->ngmem; i++) if (k->gmem[i] >= 0) close(k->gmem[i]);
  k->ngmem = 0;
  if (k->vm >= 0) close(k->vm);
  k->vm = -1;
  if (k->harness) munmap(k->harness, HARNESS_SIZE);
  k->harness = NULL;
  k->harness_slot = k->vcpus_ready = 0;
  memset(k->slots, 0, sizeof k->slots);
  /* Everything the sequence mapped lives in the window; unmapping a hole is harmless. */
  munmap((void *)HVA_WINDOW_START, HVA_WINDOW_END - HVA_WINDOW_START);
}

static int kmm_init(struct kmm *k) {
  memset(k, 0, sizeof *k);
  k->vm = k->spare.vm = -1;
  for (int i = 0; i < NR_VCPUS; i++) k->vcpu[i] = k->spare.vcpu[i] = -1;
  k->run_timeout_ms = 2000;
  k->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (k->kvm < 0) return -1;
  k->run_size = (size_t)ioctl(k->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  kmm_install_handlers();
  return 0;
}

static int kmm_setup_vcpu(struct kmm *k, int fd);
static void kmm_build_guest(uint8_t *g);

/*
 * A fresh VM with its vCPUs (one VM per sequence). The batch helper may have made it ahead of time
 * (kmm_prepare): then it is adopted as it is, a VM no request has seen yet.
 */
static int kmm_reset(struct kmm *k, struct kmm_resp *r) {
  kmm_close_vm(k);
  if (k->spare.vm >= 0) {
    k->vm = k->spare.vm;
    for (int i = 0; i < NR_VCPUS; i++) { k->vcpu[i] = k->spare.vcpu[i]; k->run[i] = k->spare.run[i]; }
    k->harness = k->spare.harness;
    k->vcpus_ready = 1;
    k->spare.vm = -1;
    for (int i = 0; i < NR_VCPUS; i++) { k->spare.vcpu[i] = -1; k->spare.run[i] = NULL; }
    k->spare.harness = NULL;
    return kmm_result(r, 0);
  }
  k->vm = ioctl(k->kvm, KVM_CREATE_VM, 0);
  if (k->vm < 0) return kmm_fail(r);
  for (int i = 0; i < NR_VCPUS; i++) {
    k->vcpu[i] = ioctl(k->vm, KVM_CREATE_VCPU, i);
    if (k->vcpu[i] < 0) return kmm_fail(r);
    k->run[i] = mmap(NULL, k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, k->vcpu[i], 0);
    if (k->run[i] == MAP_FAILED) { k->run[i] = NULL; return kmm_fail(r); }
  }
  return kmm_result(r, 0);
}

/*
 * Make the next sequence's VM while the harness is busy elsewhere (the batch helper calls it between
 * batches): KVM_CREATE_VM, the vCPUs with their kvm_run, the guest's SREGS and CPUID, and the guest
 * code built in its own fresh memory. Nothing a request can observe is done here: no memslot (the
 * harness slot is still registered on the sequence's first guest access, as without a spare), no
 * KVM_RUN, no capability; registers and CPUID are seen only by a guest, which runs after that first
 * access's set-up. A step that fails leaves no spare, and the reset makes its VM itself (and reports
 * the failure).
 */
/* Used by the batch helper only (a reproducer runs one sequence). */
__attribute__((unused)) static void kmm_prepare(struct kmm *k) {
  struct kmm_spare *s = &k->spare;
  if (s->vm >= 0) return;
  int vm = ioctl(k->kvm, KVM_CREATE_VM, 0);
  if (vm < 0) return;
  int vcpu[NR_VCPUS];
  struct kvm_run *run[NR_VCPUS];
  int made = 0, ok = 1;
  for (; made < NR_VCPUS && ok; made++) {
    vcpu[made] = ioctl(vm, KVM_CREATE_VCPU, made);
    run[made] = vcpu[made] < 0 ? MAP_FAILED
                               : mmap(NULL, k->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu[made], 0);
    ok = run[made] != MAP_FAILED && kmm_setup_vcpu(k, vcpu[made]) == 0;
  }
  uint8_t *g = ok ? mmap(NULL, HARNESS_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : MAP_FAILED;
  if (g == MAP_FAILED) {
    for (int i = 0; i < made; i++) {
      if (run[i] != MAP_FAILED) munmap(run[i], k->run_size);
      if (vcpu[i] >= 0) close(vcpu[i]);
    }
    close(vm);
    return;
  }
  kmm_build_guest(g);
  s->vm = vm;
  for (int i = 0; i < NR_VCPUS; i++) { s->vcpu[i] = vcpu[i]; s->run[i] = run[i]; }
  s->harness = g;
}

static struct kmm_slot *kmm_slot_find(struct kmm *k, uint32_t id) {
  for (int i = 0; i < MAX_SLOTS; i++) if (k->slots[i].used && k->slots[i].id == id) return &k->slots[i];
  return NULL;
}
static void kmm_slot_note(struct kmm *k, uint32_t id, uint64_t size, uint64_t gpa, uint64_t hva) {
  struct kmm_slot *s = kmm_slot_find(k, id);
  if (size == 0) { if (s) s->used = 0; return; }
  if (!s) for (int i = 0; i < MAX_SLOTS && !s; i++) if (!k->slots[i].used) s = &k->slots[i];
  if (!s) return;
  s->used = 1; s->id = id; s->npages = size / 4096; s->gpa = gpa; s->hva = hva;
}

/* a32 = 1: KVM_SET_USER_MEMORY_REGION, 2: ..._REGION2. a[0] slot|as<<16, a[1] flags, a[2] gpa,
 * a[3] size, a[4] hva, a[5] gmem handle (-1: none), a[6] gmem offset. */
static int kmm_set_region(struct kmm *k, const struct kmm_req *q, struct kmm_resp *r) {
  uint32_t flags = (uint32_t)q->a[1];
  if (k->mutant_drop_readonly) flags &= ~KVM_MEM_READONLY;
  long rc;
  if (q->a32 == 1) {
    struct kvm_userspace_memory_region m = { (uint32_t)q->a[0], flags, q->a[2], q->a[3], q->a[4] };
    rc = ioctl(k->vm, KVM_SET_USER_MEMORY_REGION, &m);
  } else {
    struct kmm_region2 m;
    memset(&m, 0, sizeof m);
    m.slot = (uint32_t)q->a[0]; m.flags = flags; m.guest_phys_addr = q->a[2]; m.memory_size = q->a[3];
    m.userspace_addr = q->a[4]; m.guest_memfd_offset = q->a[6];
    int64_t handle = (int64_t)q->a[5];
    /* A handle that names no guest_memfd of this VM (or none) is passed as an fd that is not open. */
    pthread_mutex_lock(&kmm_book);
    m.guest_memfd = handle >= 0 && handle < k->ngmem ? (uint32_t)k->gmem[handle] : 0x7fffffffu;
    pthread_mutex_unlock(&kmm_book);
    rc = ioctl(k->vm, KMM_SET_USER_MEMORY_REGION2, &m);
  }
  if (rc == 0) {
    pthread_mutex_lock(&kmm_book);
    kmm_slot_note(k, (uint32_t)q->a[0], q->a[3], q->a[2], q->a[4]);
    pthread_mutex_unlock(&kmm_book);
  }
  return kmm_result(r, rc);
}

static int kmm_prot(uint64_t p) { return p == 0 ? PROT_NONE : p == 1 ? PROT_READ : PROT_READ | PROT_WRITE; }

/* a[0] hva, a[1] size, a[2] prot (0 none, 1 r, 2 rw), a[3] backing (0 anon, 1 thp, 2 hugetlb 1 GiB). */
static int kmm_mmap(const struct kmm_req *q, struct kmm_resp *r) {
  int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
  if (q->a[3] == 2) flags |= MAP_HUGETLB | MAP_HUGE_1GB;
  void *p = mmap((void *)q->a[0], q->a[1], kmm_prot(q->a[2]), flags, -1, 0);
  if (p == MAP_FAILED) return kmm_fail(r);
  if (q->a[3] == 1) madvise(p, q->a[1], MADV_HUGEPAGE);
  return kmm_result(r, 0);
}

/* ---- guest ---- */
static void kmm_put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static void kmm_build_guest(uint8_t *g) {
  const uint64_t base = HARNESS_GPA;
  kmm_put64(g + G_PML4, (base + G_PDPT) | 3);
  for (int i = 0; i < 4; i++) {
    kmm_put64(g + G_PDPT + 8 * i, (base + G_PD + 0x1000 * i) | 3);
    for (int j = 0; j < 512; j++) kmm_put64(g + G_PD + 0x1000 * i + 8 * j, ((uint64_t)(i * 512 + j) << 21) | 0x83);
  }
  kmm_put64(g + G_GDT + 8, 0x00209a0000000000ULL);  /* 64-bit code, DPL 0 */
  kmm_put64(g + G_GDT + 16, 0x0000920000000000ULL); /* data */
  static const uint8_t stubs[10][STUB_SIZE] = {
    { 0x0f, 0xb6, 0x03, 0xf4 },       /* movzx eax, byte [rbx]; hlt */
    { 0x0f, 0xb7, 0x03, 0xf4 },       /* movzx eax, word [rbx]; hlt */
    { 0x8b, 0x03, 0xf4 },             /* mov eax, [rbx]; hlt */
    { 0x48, 0x8b, 0x03, 0xf4 },       /* mov rax, [rbx]; hlt */
    { 0x88, 0x03, 0xf4 },             /* mov [rbx], al; hlt */
    { 0x66, 0x89, 0x03, 0xf4 },       /* mov [rbx], ax; hlt */
    { 0x89, 0x03, 0xf4 },             /* mov [rbx], eax; hlt */
    { 0x48, 0x89, 0x03, 0xf4 },       /* mov [rbx], rax; hlt */
    { 0xeb, 0xfe },                   /* jmp . (a guest that never returns) */
    { 0x0f, 0x0b },                   /* ud2 */
  };
  memcpy(g + G_STUBS, stubs, sizeof stubs);
  for (int v = 0; v < 256; v++) {
    uint8_t *s = g + G_VECTORS + 8 * v; /* mov ecx, v; hlt */
    s[0] = 0xb9; s[1] = (uint8_t)v; s[2] = s[3] = s[4] = 0; s[5] = 0xf4;
    uint64_t off = base + G_VECTORS + 8 * v;
    uint8_t *gate = g + G_IDT + 16 * v;
    memset(gate, 0, 16);
    gate[0] = off & 0xff; gate[1] = (off >> 8) & 0xff; gate[2] = 8; gate[5] = 0x8e;
    gate[6] = (off >> 16) & 0xff; gate[7] = (off >> 24) & 0xff;
    uint32_t hi = (uint32_t)(off >> 32); memcpy(gate + 8, &hi, 4);
  }
}

/* KVM_GET_SUPPORTED_CPUID into k->cpuid on the first call; whether it is there. */
static int kmm_supported_cpuid(struct kmm *k) {
  if (k->cpuid_state == 0) {
    memset(&k->cpuid, 0, sizeof k->cpuid);
    k->cpuid.c.nent = KMM_CPUID_ENTRIES;
    k->cpuid_state = ioctl(k->kvm, KVM_GET_SUPPORTED_CPUID, &k->cpuid) == 0 ? 1 : -1;
  }
  return k->cpuid_state > 0;
}

static int kmm_setup_vcpu(struct kmm *k, int fd) {
  struct kvm_sregs s;
  if (ioctl(fd, KVM_GET_SREGS, &s) < 0) return -1;
  struct kvm_segment code = { .base = 0, .limit = 0xffffffff, .selector = 8, .type = 11, .present = 1, .dpl = 0,
                              .db = 0, .s = 1, .l = 1, .g = 1 };
  struct kvm_segment data = code;
  data.selector = 16; data.type = 3; data.l = 0; data.db = 1;
  s.cs = code; s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.gdt.base = HARNESS_GPA + G_GDT; s.gdt.limit = 23;
  s.idt.base = HARNESS_GPA + G_IDT; s.idt.limit = 4095;
  s.cr3 = HARNESS_GPA + G_PML4;
  s.cr4 = 0x20;           /* PAE */
  s.cr0 = 0x80000011;     /* PG | ET | PE */
  s.efer = 0x500;         /* LME | LMA */
  if (ioctl(fd, KVM_SET_SREGS, &s) < 0) return -1;
  /* The guest's CPUID as KVM supports it (MAXPHYADDR and friends). */
  if (kmm_supported_cpuid(k)) ioctl(fd, KVM_SET_CPUID2, &k->cpuid);
  return 0;
}

/*
 * The harness slot, made on the first guest access of a sequence (tried once: a failure is reported
 * by that access, later ones run as they can). A VM made ahead of time (kmm_prepare) brings its guest
 * memory built and its vCPUs set up; only the memslot is left to register.
 */
static int kmm_ensure_guest(struct kmm *k) {
  if (k->harness_slot) return 0;
  k->harness_slot = 1;
  if (!k->harness) {
    void *p = mmap(NULL, HARNESS_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -1;
    k->harness = p;
    kmm_build_guest(k->harness);
  }
  struct kvm_userspace_memory_region m = { HARNESS_SLOT, 0, HARNESS_GPA, HARNESS_SIZE, (uint64_t)k->harness };
  if (ioctl(k->vm, KVM_SET_USER_MEMORY_REGION, &m) < 0) return -1;
  if (!k->vcpus_ready)
    for (int i = 0; i < NR_VCPUS; i++) if (kmm_setup_vcpu(k, k->vcpu[i]) < 0) return -1;
  k->vcpus_ready = 1;
  return 0;
}

/*
 * The guest timeout is guest time: a timer on the calling thread's CPU clock (KVM accounts a vCPU
 * thread's guest time as its CPU time), so a helper that is stopped (SIGSTOP, Ctrl-Z) or descheduled
 * does not age it. A stop or any other signal makes KVM_RUN return EINTR (KVM_EXIT_INTR); with no
 * timer expired that is not a timeout, and the vCPU simply runs on, as a VMM's run loop would.
 * A wall-clock backstop (10x the timeout, at least 10 s) catches a KVM_RUN that blocks in the
 * kernel without using CPU; it is reported as its own harness problem.
 */
#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif
static __thread timer_t kmm_timers[2];
static __thread pid_t kmm_timers_tid;

static int kmm_arm_timers(unsigned timeout_ms) {
  pid_t tid = (pid_t)syscall(SYS_gettid);
  if (kmm_timers_tid != tid) {
    static const clockid_t clocks[2] = { CLOCK_THREAD_CPUTIME_ID, CLOCK_MONOTONIC };
    for (int i = 0; i < 2; i++) {
      struct sigevent ev;
      memset(&ev, 0, sizeof ev);
      ev.sigev_notify = SIGEV_THREAD_ID;
      ev.sigev_signo = SIGALRM;
      ev.sigev_value.sival_int = i == 0 ? KMM_TIMER_GUEST : KMM_TIMER_WALL;
      ev.sigev_notify_thread_id = tid;
      if (timer_create(clocks[i], &ev, &kmm_timers[i]) < 0) return -1;
    }
    kmm_timers_tid = tid;
  }
  unsigned wall_ms = timeout_ms * 10 > 10000 ? timeout_ms * 10 : 10000;
  const unsigned ms[2] = { timeout_ms, wall_ms };
  kmm_timer_fired = 0;
  for (int i = 0; i < 2; i++) {
    struct itimerspec t = { { 0, 0 }, { ms[i] / 1000, (long)(ms[i] % 1000) * 1000000 } };
    if (timer_settime(kmm_timers[i], 0, &t, NULL) < 0) return -1;
  }
  return 0;
}

static void kmm_disarm_timers(void) {
  struct itimerspec off = { { 0, 0 }, { 0, 0 } };
  for (int i = 0; i < 2; i++) timer_settime(kmm_timers[i], 0, &off, NULL);
}

/* KVM_RUN until the guest exits for a reason of its own or a timer expires (kmm_timer_fired says which). */
static int kmm_kvm_run(struct kmm *k, int v, unsigned timeout_ms) {
  if (kmm_arm_timers(timeout_ms) < 0) return -1;
  int rc, saved;
  do {
    rc = ioctl(k->vcpu[v], KVM_RUN, 0);
    saved = errno;
    /* immediate_exit makes every KVM_RUN return EINTR: that one is the caller's, never retried. */
  } while (rc < 0 && saved == EINTR && !kmm_timer_fired && !k->run[v]->immediate_exit);
  kmm_disarm_timers();
  errno = saved;
  return rc;
}

/*
 * Complete an instruction the kernel left pending at an MMIO exit (the data for a read is zero),
 * then put back the exit_reason and union the visible exit left: the real kvm_run keeps them
 * until the next exit, and the spec compares a stale exit_reason too.
 */
static void kmm_complete_pending(struct kmm *k, int v) {
  struct kvm_run *run = k->run[v];
  uint8_t saved[256]; uint32_t reason = run->exit_reason;
  memcpy(saved, (uint8_t *)run + 32, sizeof saved);
  for (int i = 0; i < 16 && run->exit_reason == KVM_EXIT_MMIO; i++) {
    if (!run->mmio.is_write) memset(run->mmio.data, 0, sizeof run->mmio.data);
    run->immediate_exit = 1;
    int rc = kmm_kvm_run(k, v, k->run_timeout_ms);
    run->immediate_exit = 0;
    if (rc < 0) break;
  }
  run->exit_reason = reason;
  memcpy((uint8_t *)run + 32, saved, sizeof saved);
}

/* a[0] vcpu, a[1] gpa, a[2] len, a[3] write, a[4] value; a32: 0 access, OP_GUEST_SPIN/UD2 stubs. */
static int kmm_guest_access(struct kmm *k, const struct kmm_req *q, struct kmm_resp *r, uint64_t stub) {
  int v = (int)q->a[0];
  if (v < 0 || v >= NR_VCPUS) { errno = EINVAL; return kmm_fail(r); }
  if (kmm_ensure_guest(k) < 0) { r->status = ST_HARNESS; r->detail = KMM_HARNESS_SETUP; r->err = errno; return -1; }
  unsigned len = (unsigned)q->a[2];
  if (!stub) stub = q->a[3] ? STUB_WRITE(len) : STUB_READ(len);
  struct kvm_regs regs;
  memset(&regs, 0, sizeof regs);
  regs.rip = HARNESS_GPA + stub;
  regs.rbx = q->a[1];
  regs.rax = q->a[3] ? q->a[4] : 0;
  regs.rcx = 0xffff;
  regs.rsp = HARNESS_GPA + G_STACK;
  regs.rflags = 2;
  if (ioctl(k->vcpu[v], KVM_SET_REGS, &regs) < 0) return kmm_fail(r);
  struct kvm_run *run = k->run[v];
  int rc = kmm_kvm_run(k, v, k->run_timeout_ms);
  r->status = ST_RUN;
  r->rc = rc < 0 ? -1 : 0;
  r->err = rc < 0 ? errno : 0;
  r->exit_reason = run->exit_reason;
  memcpy(r->payload, (uint8_t *)run + 32, sizeof r->payload);
  if (rc < 0 && r->err == EINTR && run->exit_reason == KVM_EXIT_INTR) {
    r->status = ST_HARNESS;
    r->detail = kmm_timer_fired == KMM_TIMER_WALL ? KMM_HARNESS_STALLED : KMM_HARNESS_TIMEOUT;
    return -1;
  }
  if (rc == 0 && run->exit_reason == KVM_EXIT_MMIO) kmm_complete_pending(k, v);
  if (rc == 0 && run->exit_reason == KVM_EXIT_HLT) {
    if (ioctl(k->vcpu[v], KVM_GET_REGS, &regs) < 0) return kmm_fail(r);
    if (regs.rip >= HARNESS_GPA + G_VECTORS && regs.rip < HARNESS_GPA + G_VECTORS + 256 * 8) {
      r->status = ST_HARNESS; r->detail = KMM_HARNESS_EXCEPTION; r->value = regs.rcx;
      return -1;
    }
    if (!q->a[3]) { r->has_value = 1; r->value = regs.rax; }
  } else if (rc == 0 && run->exit_reason != KVM_EXIT_MMIO) {
    r->status = ST_HARNESS; r->detail = KMM_HARNESS_EXIT; r->value = run->exit_reason;
    return -1;
  }
  return 0;
}

/* ---- dirty log ---- */
static int kmm_get_dirty_log(struct kmm *k, const struct kmm_req *q, struct kmm_resp *r, uint8_t *data, size_t cap) {
  pthread_mutex_lock(&kmm_book);
  struct kmm_slot *s = kmm_slot_find(k, (uint32_t)q->a[0]);
  size_t bytes = s ? ((s->npages + 63) / 64) * 8 : 8;
  pthread_mutex_unlock(&kmm_book);
  if (bytes > cap) { errno = ENOMEM; return kmm_fail(r); }
  memset(data, 0, bytes);
  struct kvm_dirty_log log;
  memset(&log, 0, sizeof log);
  log.slot = (uint32_t)q->a[0];
  log.dirty_bitmap = data;
  if (ioctl(k->vm, KVM_GET_DIRTY_LOG, &log) < 0) return kmm_fail(r);
  r->datalen = (uint32_t)bytes;
  return kmm_result(r, 0);
}

static int kmm_clear_dirty_log(struct kmm *k, const struct kmm_req *q, struct kmm_resp *r, uint8_t *scratch,
                               size_t cap) {
  struct { uint32_t slot, num_pages; uint64_t first_page; void *bitmap; } c;
  size_t bytes = ((q->a[2] + 63) / 64) * 8 + 8;
  if (bytes > cap) { errno = ENOMEM; return kmm_fail(r); }
  memset(scratch, 0xff, bytes);
  c.slot = (uint32_t)q->a[0]; c.num_pages = (uint32_t)q->a[2]; c.first_page = q->a[1]; c.bitmap = scratch;
  return kmm_result(r, ioctl(k->vm, KMM_CLEAR_DIRTY_LOG, &c));
}

/* ---- userfaultfd demand paging (demand_paging_test.c, the exit-on-missing episode) ---- */
struct kmm_episode {
  struct kmm *k;
  int uffd;
  volatile int stop;
  int stopfd;               /* an eventfd the episode signals at its end: readers leave their poll at once */
  volatile int abort_vcpus; /* the episode timed out: a vCPU's EINTR is final */
  uint64_t hva, gpa, npages;
  int write;
  uint64_t values[NR_VCPUS][EPISODE_MAX_PAGES];
  int done[NR_VCPUS];
  int failed[NR_VCPUS];
};
struct kmm_vcpu_arg { struct kmm_episode *e; int v; };

/* A reader thread: every missing page is resolved once with UFFDIO_COPY(DONTWAKE) of a 0xAB page, then woken. */
static void *kmm_uffd_reader(void *arg) {
  struct kmm_episode *e = arg;
  static uint8_t fill[4096];
  memset(fill, 0xab, sizeof fill);
  while (!e->stop) {
    struct pollfd p[2] = { { e->uffd, POLLIN, 0 }, { e->stopfd, POLLIN, 0 } };
    /* Woken by a fault or by the episode's end (stopfd); the 1 ms timeout is only a backstop. */
    if (poll(p, e->stopfd >= 0 ? 2 : 1, 1) <= 0 || !(p[0].revents & POLLIN)) continue;
    struct uffd_msg msg;
    if (read(e->uffd, &msg, sizeof msg) != sizeof msg) continue;
    if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
    uint64_t page = msg.arg.pagefault.address & ~0xfffULL;
    struct uffdio_copy copy = { .dst = page, .src = (uint64_t)fill, .len = 4096, .mode = UFFDIO_COPY_MODE_DONTWAKE };
    ioctl(e->uffd, UFFDIO_COPY, &copy); /* EEXIST: another reader resolved it first */
    struct uffdio_range wake = { .start = page, .len = 4096 };
    ioctl(e->uffd, UFFDIO_WAKE, &wake);
  }
  return NULL;
}

/* A vCPU thread: each page in order, 8 bytes at offset 8 * vcpu, read or written. */
static void *kmm_episode_vcpu(void *arg) {
  struct kmm_vcpu_arg *a = arg;
  struct kmm_episode *e = a->e;
  struct kmm *k = e->k;
  int v = a->v;
  for (int i = 0; i < k->episode_npages[v]; i++) {
    uint64_t page = k->episode_pages[v][i] % e->npages;
    struct kvm_regs regs;
    memset(&regs, 0, sizeof regs);
    regs.rip = HARNESS_GPA + (e->write ? STUB_WRITE(8) : STUB_READ(8));
    regs.rbx = e->gpa + page * 4096 + 8 * (uint64_t)v;
    regs.rax = e->write ? (uint64_t)(0x11 * (v + 1)) * 0x0101010101010101ULL : 0;
    regs.rsp = HARNESS_GPA + G_STACK;
    regs.rflags = 2;
    int rc = ioctl(k->vcpu[v], KVM_SET_REGS, &regs);
    /* A stop (SIGSTOP, Ctrl-Z) makes KVM_RUN return EINTR: run on unless the episode timed out. */
    if (rc == 0) do rc = ioctl(k->vcpu[v], KVM_RUN, 0); while (rc < 0 && errno == EINTR && !e->abort_vcpus);
    if (rc < 0 || k->run[v]->exit_reason != KVM_EXIT_HLT || ioctl(k->vcpu[v], KVM_GET_REGS, &regs) < 0) {
      e->failed[v] = 1;
      return NULL;
    }
    e->values[v][i] = regs.rax;
  }
  e->done[v] = 1;
  return NULL;
}

/* Join within `ms` milliseconds of wall time; 0 when joined. */
static int kmm_join_slice(pthread_t t, long ms) {
  struct timespec d;
  clock_gettime(CLOCK_REALTIME, &d);
  d.tv_nsec += ms * 1000000L;
  d.tv_sec += d.tv_nsec / 1000000000L;
  d.tv_nsec %= 1000000000L;
  return pthread_timedjoin_np(t, NULL, &d);
}

/*
 * Join while the episode's budget lasts. The budget is time the helper could run: it is spent in
 * 10 ms slices, and a slice that took far longer (the helper was stopped, SIGSTOP or Ctrl-Z) counts
 * as 50 ms only, so a stop/continue storm does not make an episode time out.
 */
static int kmm_join_within(pthread_t t, long *budget_ms) {
  for (;;) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (kmm_join_slice(t, 10) == 0) return 0;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
    *budget_ms -= ms > 50 ? 50 : ms;
    if (*budget_ms <= 0) return -1;
  }
}

/*
 * a[0] slot id (address space 0), a[1] write, a[2] readers. The slot's hva range is registered
 * with userfaultfd MISSING, the readers and one thread per vCPU with pages run, and everything is
 * torn down. data: per vCPU, per page, the u64 read (0 for writes); value: 1 if every vCPU finished.
 */
static int kmm_demand_paging(struct kmm *k, const struct kmm_req *q, struct kmm_resp *r, uint8_t *data, size_t cap) {
  if (kmm_ensure_guest(k) < 0) { r->status = ST_HARNESS; r->detail = KMM_HARNESS_SETUP; r->err = errno; return -1; }
  static struct kmm_episode e;
  memset(&e, 0, sizeof e);
  struct kmm_slot *slot = kmm_slot_find(k, (uint32_t)q->a[0]);
  if (!slot) { memset(k->episode_npages, 0, sizeof k->episode_npages); errno = EINVAL; return kmm_fail(r); }
  e.k = k; e.hva = slot->hva; e.gpa = slot->gpa; e.npages = slot->npages; e.write = (int)q->a[1];
  int readers = (int)q->a[2] < 1 ? 1 : (int)q->a[2] > 8 ? 8 : (int)q->a[2];
  e.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
  struct uffdio_api api = { .api = UFFD_API };
  struct uffdio_register reg = { .range = { e.hva, e.npages * 4096 }, .mode = UFFDIO_REGISTER_MODE_MISSING };
  if (e.uffd < 0 || ioctl(e.uffd, UFFDIO_API, &api) < 0 || ioctl(e.uffd, UFFDIO_REGISTER, &reg) < 0) {
    int saved = errno;
    if (e.uffd >= 0) close(e.uffd);
    memset(k->episode_npages, 0, sizeof k->episode_npages);
    errno = saved;
    return kmm_fail(r);
  }
  e.stopfd = eventfd(0, EFD_CLOEXEC); /* -1: the readers see the end by their 1 ms timeout */
  pthread_t rt[8], vt[NR_VCPUS];
  struct kmm_vcpu_arg va[NR_VCPUS];
  sigset_t block, old;
  sigemptyset(&block); sigaddset(&block, SIGALRM);
  pthread_sigmask(SIG_BLOCK, &block, &old); /* readers ignore the timeout signal */
  for (int i = 0; i < readers; i++) pthread_create(&rt[i], NULL, kmm_uffd_reader, &e);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  for (int v = 0; v < NR_VCPUS; v++) {
    va[v].e = &e;
    va[v].v = v;
    pthread_create(&vt[v], NULL, kmm_episode_vcpu, &va[v]);
  }
  long budget_ms = (long)k->run_timeout_ms + 1000;
  int completed = 1;
  for (int v = 0; v < NR_VCPUS; v++) {
    if (kmm_join_within(vt[v], &budget_ms) != 0) {
      e.abort_vcpus = 1;
      /* KVM_RUN (or the uffd wait inside it) returns EINTR; resent in case it landed before the ioctl. */
      do pthread_kill(vt[v], SIGALRM); while (kmm_join_slice(vt[v], 10) != 0);
    }
    if (!e.done[v]) completed = 0;
  }
  e.stop = 1;
  if (e.stopfd >= 0) { uint64_t one = 1; if (write(e.stopfd, &one, sizeof one) < 0) { /* the timeout backstop */ } }
  for (int i = 0; i < readers; i++) pthread_join(rt[i], NULL);
  ioctl(e.uffd, UFFDIO_UNREGISTER, &reg.range);
  close(e.uffd);
  if (e.stopfd >= 0) close(e.stopfd);
  size_t at = 0;
  for (int v = 0; v < NR_VCPUS; v++) {
    for (int i = 0; i < k->episode_npages[v] && at + 8 <= cap; i++, at += 8) memcpy(data + at, &e.values[v][i], 8);
  }
  memset(k->episode_npages, 0, sizeof k->episode_npages);
  r->datalen = (uint32_t)at;
  r->value = (uint64_t)completed;
  r->has_value = 1;
  return kmm_result(r, 0);
}

/*
 * ---- defence in depth: what the helper keeps for itself ----
 * The harness leaves out commands that touch the helper's own slot, guest pages or memory outside
 * the host window (backend.ts leftOut); a replay file or a harness bug must still not make this
 * root process mmap over its own code, unmap its stack or let a guest scribble on its page tables.
 * The check is made here, before any operation: a refused request is answered ST_REFUSED with the
 * reason in detail, and nothing is performed.
 */
static int kmm_in_window(uint64_t hva, uint64_t size) {
  uint64_t len = size ? size : 1;
  return hva >= HVA_WINDOW_START && hva < HVA_WINDOW_END && len <= HVA_WINDOW_END - hva;
}
static int kmm_overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  return alen && blen && a < b + blen && b < a + alen && a + alen > a;
}
/* The address-space and slot id in a[0] is KVM's u32 slot field: as << 16 | id (HARNESS_SLOT is in as 0). */
static int kmm_is_harness_slot(uint64_t field) { return (uint32_t)field == HARNESS_SLOT; }

static uint32_t kmm_refusal(const struct kmm_req *q) {
  switch (q->op) {
  case OP_MMAP: case OP_MUNMAP: case OP_MPROTECT: case OP_MADV_DONTNEED: case OP_MADV_POPULATE:
    return kmm_in_window(q->a[0], q->a[1]) ? 0 : KMM_REFUSE_WINDOW;
  case OP_HOST_WRITE: case OP_HOST_READ:
    if (q->a[1] < 1 || q->a[1] > 8) return KMM_REFUSE_LENGTH;
    return kmm_in_window(q->a[0], q->a[1]) ? 0 : KMM_REFUSE_WINDOW;
  case OP_SET_REGION:
    if (kmm_is_harness_slot(q->a[0])) return KMM_REFUSE_SLOT;
    if (kmm_overlaps(q->a[2], q->a[3], HARNESS_GPA, HARNESS_SIZE)) return KMM_REFUSE_GPA;
    /* An aligned host range outside the window would be accepted by the kernel (only access_ok is
     * checked) and give the guest the helper's own memory; an unaligned one is the kernel's EINVAL. */
    if (q->a[3] && (q->a[4] & 0xfff) == 0 && !kmm_in_window(q->a[4], q->a[3])) return KMM_REFUSE_SLOT_HVA;
    return 0;
  case OP_GET_DIRTY_LOG: case OP_CLEAR_DIRTY_LOG: case OP_DEMAND_PAGING:
    return kmm_is_harness_slot(q->a[0]) ? KMM_REFUSE_SLOT : 0;
  case OP_SET_MEMORY_ATTRIBUTES:
    return kmm_overlaps(q->a[0], q->a[1], HARNESS_GPA, HARNESS_SIZE) ? KMM_REFUSE_GPA : 0;
  case OP_GUEST_ACCESS:
    /* STUB_READ/STUB_WRITE run the 8-byte stub for any other length: the width checked below must be
     * the width the guest really uses, or a 0- or 3-byte request writes 8 bytes into our own pages. */
    if (q->a[2] != 1 && q->a[2] != 2 && q->a[2] != 4 && q->a[2] != 8) return KMM_REFUSE_LENGTH;
    return kmm_overlaps(q->a[1], q->a[2], HARNESS_GPA, HARNESS_SIZE) ? KMM_REFUSE_GUEST : 0;
  default: return 0;
  }
}

/* ---- one request ---- */
static int kmm_dispatch(struct kmm *k, const struct kmm_req *q, struct kmm_resp *r, uint8_t *data, size_t cap) {
  memset(r, 0, sizeof *r);
  uint32_t refused = kmm_refusal(q);
  if (refused) { r->status = ST_REFUSED; r->detail = refused; r->err = EPERM; r->rc = -1; return -1; }
  if (q->op != OP_RESET && q->op != OP_CRASH && k->vm < 0) { errno = EBADF; return kmm_fail(r); }
  switch (q->op) {
  case OP_RESET: return kmm_reset(k, r);
  case OP_SET_REGION: return kmm_set_region(k, q, r);
  case OP_MMAP: return kmm_mmap(q, r);
  case OP_MUNMAP: return kmm_result(r, munmap((void *)q->a[0], q->a[1]));
  case OP_MPROTECT: return kmm_result(r, mprotect((void *)q->a[0], q->a[1], kmm_prot(q->a[2])));
  case OP_MADV_DONTNEED: return kmm_result(r, madvise((void *)q->a[0], q->a[1], MADV_DONTNEED));
  case OP_MADV_POPULATE:
    return kmm_result(r, madvise((void *)q->a[0], q->a[1], q->a[2] ? MADV_POPULATE_WRITE : MADV_POPULATE_READ));
  case OP_HOST_WRITE: {
    uint64_t v = q->a[2];
    if (kmm_host_copy((void *)q->a[0], &v, q->a[1]) < 0) { r->status = ST_SEGV; return 0; }
    return kmm_result(r, 0);
  }
  case OP_HOST_READ: {
    uint64_t v = 0;
    if (kmm_host_copy(&v, (void *)q->a[0], q->a[1]) < 0) { r->status = ST_SEGV; return 0; }
    r->value = v; r->has_value = 1;
    return kmm_result(r, 0);
  }
  case OP_GMEM_CREATE: {
    struct kmm_create_gmem g;
    memset(&g, 0, sizeof g);
    g.size = q->a[0]; g.flags = q->a[1];
    int fd = ioctl(k->vm, KMM_CREATE_GUEST_MEMFD, &g);
    if (fd < 0) return kmm_fail(r);
    pthread_mutex_lock(&kmm_book);
    int handle = k->ngmem < MAX_GMEMS ? k->ngmem++ : -1;
    if (handle >= 0) k->gmem[handle] = fd;
    pthread_mutex_unlock(&kmm_book);
    if (handle < 0) { close(fd); errno = EMFILE; return kmm_fail(r); }
    return kmm_result(r, handle);
  }
  case OP_GMEM_PUNCH: {
    int64_t h = (int64_t)q->a[0];
    pthread_mutex_lock(&kmm_book);
    int fd = h >= 0 && h < k->ngmem ? k->gmem[h] : -1;
    pthread_mutex_unlock(&kmm_book);
    if (fd < 0) { errno = EBADF; return kmm_fail(r); }
    return kmm_result(r, fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)q->a[1], (off_t)q->a[2]));
  }
  case OP_GUEST_ACCESS: return kmm_guest_access(k, q, r, 0);
  case OP_GUEST_SPIN: return kmm_guest_access(k, q, r, STUB_SPIN);
  case OP_GUEST_UD2: return kmm_guest_access(k, q, r, STUB_UD2);
  case OP_GUEST_PEEK: return kmm_guest_access(k, q, r, 0);
  case OP_GET_DIRTY_LOG: return kmm_get_dirty_log(k, q, r, data, cap);
  case OP_CLEAR_DIRTY_LOG: return kmm_clear_dirty_log(k, q, r, data, cap);
  case OP_CHECK_EXTENSION: return kmm_result(r, ioctl(q->a32 ? k->kvm : k->vm, KVM_CHECK_EXTENSION, q->a[0]));
  case OP_ENABLE_CAP: {
    struct kvm_enable_cap c;
    memset(&c, 0, sizeof c);
    c.cap = (uint32_t)q->a[0]; c.flags = (uint32_t)q->a[1];
    for (int i = 0; i < 4; i++) c.args[i] = q->a[2 + i];
    return kmm_result(r, ioctl(k->vm, KVM_ENABLE_CAP, &c));
  }
  case OP_SET_MEMORY_ATTRIBUTES: {
    struct kmm_mem_attrs m = { q->a[0], q->a[1], q->a[2], q->a[3] };
    return kmm_result(r, ioctl(k->vm, KMM_SET_MEMORY_ATTRIBUTES, &m));
  }
  case OP_EPISODE_PAGE: {
    int v = (int)q->a[0];
    if (v < 0 || v >= NR_VCPUS || k->episode_npages[v] >= EPISODE_MAX_PAGES) { errno = EINVAL; return kmm_fail(r); }
    k->episode_pages[v][k->episode_npages[v]++] = (uint32_t)q->a[1];
    return kmm_result(r, 0);
  }
  case OP_DEMAND_PAGING: return kmm_demand_paging(k, q, r, data, cap);
  case OP_CRASH: { volatile int *nowhere = NULL; kmm_fault_armed = 0; signal(SIGSEGV, SIG_DFL); return *nowhere; }
  default: errno = ENOSYS; r->status = ST_ERR; r->err = ENOSYS; r->rc = -1; return -1;
  }
}
