/*
 * repro-main.c: the program of every C reproducer `kvm-memmodel export --c` writes. It replays a
 * sequence of kvm-ops requests on a real /dev/kvm and checks each response against the outcome the
 * spec expects, printing where the kernel differs.
 *
 * The exporter (src/kvm/export-c.ts) writes one self-contained file: it puts kvm-ops.c and a
 * generated repro-data.h in place of the two #include lines below, and nothing else. The generated
 * header is data only (numbers and escaped string literals), so nothing a replay file says can
 * become code here. Built on its own (build.mjs does, as a check) it uses the default repro-data.h
 * next to it, which the exporter wrote for one KVM_CHECK_EXTENSION step.
 *
 * Build and run (as a user who may open /dev/kvm):  gcc -O2 -o repro repro.c && ./repro
 * Exit status: 0 every step matched the spec, 1 some step differed (printed), 77 no usable /dev/kvm.
 */
#include "kvm-ops.c"

enum { E_OK, E_ERR, E_HOSTDATA, E_SEGV, E_RUN, E_DIRTY };
enum { P_NONE, P_MMIO, P_FAULT };
/* Text with its length: a string from a replay may hold NUL bytes, and is printed whole. */
struct text {
  const char *s;
  size_t n;
};
#define TEXT(lit) { lit, sizeof lit - 1 }
struct expect {
  int kind, has_value, err, rc, payload_kind;
  uint64_t value;
  uint32_t exit_reason;
  uint64_t p[4];
  const uint32_t *must, *may;
  int nmust, nmay;
};
struct step {
  struct kmm_req req;
  struct expect e;
  struct text call, expected;
};

/*
 * The data: repro_title, repro_config (the spec's configuration), repro_mutant (the engine mutant the
 * replay was found against, or empty), repro_messages[repro_nmessages] (the recorded failure) and
 * steps[NSTEPS].
 */
#include "repro-data.h"
#define NSTEPS ((int)(sizeof steps / sizeof steps[0]))

/*
 * A string from the replay, byte for byte into a pipe or file; on a terminal every byte outside
 * printable ASCII is shown as \ooo, so a recorded title cannot drive the terminal (escape codes).
 */
static void put_text(const struct text *t) {
  int tty = isatty(STDOUT_FILENO);
  for (size_t i = 0; i < t->n; i++) {
    unsigned char c = (unsigned char)t->s[i];
    if (tty && (c < 0x20 || c > 0x7e)) printf("\\%03o", c);
    else putchar(c);
  }
}

static void put_line(const char *label, const struct text *t) {
  fputs(label, stdout);
  put_text(t);
  putchar('\n');
}

static int in_list(const uint32_t *l, int n, uint32_t v) {
  for (int i = 0; i < n; i++)
    if (l[i] == v) return 1;
  return 0;
}

/* The kvm_run part of a response in the harness's words (formatOutcome, roughly). */
static void describe_run(const struct kmm_resp *r, char *out, size_t n) {
  int at = r->rc ? snprintf(out, n, "rc=-1 errno=%d (%s) exit=%u", r->err, strerror(r->err), r->exit_reason)
                 : snprintf(out, n, "rc=0 exit=%u", r->exit_reason);
  if (r->exit_reason == KVM_EXIT_MMIO)
    at += snprintf(out + at, n - at, " mmio{phys=0x%llx len=%u write=%u data=0x%llx}",
                   (unsigned long long)r->payload[0], (unsigned)(uint32_t)r->payload[2],
                   (unsigned)((r->payload[2] >> 32) & 0xff), (unsigned long long)r->payload[1]);
  if (r->exit_reason == 39)
    at += snprintf(out + at, n - at, " memory_fault{flags=0x%llx gpa=0x%llx size=0x%llx}",
                   (unsigned long long)r->payload[0], (unsigned long long)r->payload[1],
                   (unsigned long long)r->payload[2]);
  if (r->has_value) snprintf(out + at, n - at, " rax=0x%llx", (unsigned long long)r->value);
}

/* The response in the harness's words. */
static void describe_response(const struct kmm_resp *r, char *out, size_t n) {
  switch (r->status) {
  case ST_OK:
    if (r->has_value) snprintf(out, n, "data 0x%llx", (unsigned long long)r->value);
    else snprintf(out, n, "ok (rc %lld)", (long long)r->rc);
    return;
  case ST_ERR: snprintf(out, n, "-%s (errno %d)", strerror(r->err), r->err); return;
  case ST_SEGV: snprintf(out, n, "SIGSEGV"); return;
  case ST_REFUSED: snprintf(out, n, "refused by the helper (reason %u, kvm-ops.c KMM_REFUSE_*)", r->detail); return;
  case ST_HARNESS:
    snprintf(out, n, "harness problem %u (value 0x%llx, errno %d)", r->detail, (unsigned long long)r->value, r->err);
    return;
  default: describe_run(r, out, n);
  }
}

/* Whether a KVM_RUN response is what the spec expects (outcomeMismatch's run case). */
static int run_matches(const struct expect *e, const struct kmm_resp *r) {
  if (r->status != ST_RUN || r->rc != e->rc || (e->rc && r->err != e->err) || r->exit_reason != e->exit_reason)
    return 0;
  if (e->has_value != (int)r->has_value || (e->has_value && r->value != e->value)) return 0;
  if (e->payload_kind == P_MMIO) {
    uint32_t len = (uint32_t)r->payload[2];
    uint32_t is_write = (uint32_t)((r->payload[2] >> 32) & 0xff);
    uint64_t mask = len >= 8 ? ~0ULL : ((1ULL << (8 * len)) - 1);
    if (r->payload[0] != e->p[0] || len != e->p[2] || is_write != e->p[3]) return 0;
    if (is_write && (r->payload[1] & mask) != e->p[1]) return 0;
  }
  if (e->payload_kind == P_FAULT &&
      (r->payload[0] != e->p[0] || r->payload[1] != e->p[1] || r->payload[2] != e->p[2]))
    return 0;
  return 1;
}

/* Whether a dirty bitmap holds every page the spec says must be dirty and no page it does not allow. */
static int dirty_matches(const struct expect *e, const struct kmm_resp *r, const uint8_t *data, char *why, size_t n) {
  for (int i = 0; i < e->nmust; i++) {
    uint32_t p = e->must[i];
    if (p / 8 >= r->datalen || !(data[p / 8] & (1u << (p % 8)))) {
      snprintf(why, n, "page %u not reported dirty", p);
      return 0;
    }
  }
  for (uint32_t p = 0; p < r->datalen * 8; p++) {
    if ((data[p / 8] & (1u << (p % 8))) && !in_list(e->must, e->nmust, p) && !in_list(e->may, e->nmay, p)) {
      snprintf(why, n, "page %u reported dirty, which the spec does not allow", p);
      return 0;
    }
  }
  return 1;
}

/* Whether the kernel's response is what the spec expects (the harness's outcomeMismatch, in C). */
static int matches(const struct expect *e, const struct kmm_resp *r, const uint8_t *data, char *why, size_t n) {
  int ok = 0;
  switch (e->kind) {
  case E_OK: ok = r->status == ST_OK && (!e->has_value || (uint64_t)r->rc == e->value); break;
  case E_ERR: ok = r->status == ST_ERR && r->err == e->err; break;
  case E_HOSTDATA: ok = r->status == ST_OK && r->value == e->value; break;
  case E_SEGV: ok = r->status == ST_SEGV; break;
  case E_RUN: ok = run_matches(e, r); break;
  case E_DIRTY:
    if (r->status == ST_OK) return dirty_matches(e, r, data, why, n);
    break;
  }
  if (!ok) describe_response(r, why, n);
  return ok;
}

/* What the program checks, before anything runs (so it is printed even without /dev/kvm). */
static void print_header(void) {
  put_line("", &repro_title);
  put_line("  expectations: the spec, x86, ", &repro_config);
  if (repro_mutant.n) {
    put_line("  found against engine mutant ", &repro_mutant);
    puts("  (the spec's expectations do not depend on it, and the kernel never runs it)");
  }
  for (size_t i = 0; i < repro_nmessages; i++) put_line("  recorded: ", &repro_messages[i]);
}

/* repro-concurrent.c includes this file for its checks and has a main of its own. */
#ifndef REPRO_NO_MAIN
int main(void) {
  static struct kmm k;
  static uint8_t data[1 << 20];
  struct kmm_resp r;
  print_header();
  fflush(stdout);
  if (kmm_init(&k) < 0) {
    perror("repro: /dev/kvm");
    return 77;
  }
  struct kmm_req reset = { .op = OP_RESET };
  if (kmm_dispatch(&k, &reset, &r, data, sizeof data) < 0) {
    fprintf(stderr, "repro: KVM_CREATE_VM: %s\n", strerror(r.err));
    return 77;
  }
  int differ = 0;
  for (int i = 0; i < NSTEPS; i++) {
    char why[256] = "";
    kmm_dispatch(&k, &steps[i].req, &r, data, sizeof data);
    int ok = matches(&steps[i].e, &r, data, why, sizeof why);
    printf("%3d. ", i + 1);
    put_line("", &steps[i].call);
    put_line("     spec:   ", &steps[i].expected);
    printf("     kernel: %s\n", ok ? "as the spec says" : why);
    if (!ok) {
      differ++;
      printf("     ^^^ DIFFERS from the spec\n");
    }
  }
  if (differ) printf("REPRODUCED: %d of %d steps differ from the spec\n", differ, NSTEPS);
  else printf("OK: all %d steps match the spec\n", NSTEPS);
  return differ ? 1 : 0;
}
#endif
