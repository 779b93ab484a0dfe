// `kvm-memmodel export --c FILE REPLAY`: one standalone C program that replays a sequence on a real
// kernel and checks every step against what the spec expects, printing where reality differs. It
// embeds src/kvm/native/kvm-ops.c verbatim, so it runs exactly the code the kvm backend ran; it needs only
// gcc, the libc and the distribution's <linux/kvm.h>.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { constants as osConstants } from 'node:os';
import { match } from 'ts-pattern';
import { KVM_EXIT_MMIO } from '../../model/abi.js';
import { formatCommand, type Command } from '../../model/commands.js';
import { formatOutcome, isMemoryFaultReason, type Outcome } from '../../model/outcomes.js';
import { describeConfig, type ModelConfig } from '../../model/series.js';
import { applyCommand, specAlternatives } from '../../model/spec.js';
import { newSpecState } from '../../model/state.js';
import { InputError } from '../harness/replay.js';
import { LEFT_OUT } from './backend.js';
import { packageRoot } from './helper.js';
import { encodeCommand } from './protocol.js';

const cString = (s: string): string => JSON.stringify(s).replace(/\?/g, '\\?');
const u64 = (v: number | bigint): string => `0x${BigInt.asUintN(64, BigInt(v)).toString(16)}ULL`;
const errnoNumber = (name: string): number => (name === 'EHWPOISON' ? 133 : (osConstants.errno as Record<string, number>)[name] ?? -1);

/** The spec's expected outcome for each command (x86, upstream or the replay's platform). */
function expectations(commands: readonly Command[], model: ModelConfig): Outcome[] {
  const state = newSpecState('x86', model);
  return commands.map((cmd, i) => {
    if (cmd.kind === 'raceAccess' || specAlternatives(state, cmd)) throw new InputError(`step ${i + 1} (${formatCommand(cmd)}) has more than one allowed outcome; a C reproducer checks one`);
    return applyCommand(state, cmd);
  });
}

function expectInit(o: Outcome): string {
  return match(o)
    .with({ kind: 'ok' }, (x) => `{ .kind = E_OK, .has_value = ${x.value === undefined ? 0 : 1}, .value = ${x.value ?? 0} }`)
    .with({ kind: 'err' }, (x) => `{ .kind = E_ERR, .err = ${errnoNumber(x.errno)} }`)
    .with({ kind: 'hostData' }, (x) => `{ .kind = E_HOSTDATA, .value = ${u64(x.value)} }`)
    .with({ kind: 'segv' }, () => '{ .kind = E_SEGV }')
    .with({ kind: 'run' }, (x) => {
      const reason = x.run.exitReason;
      const mmio = reason === KVM_EXIT_MMIO && x.rc === 0 && x.run.payload.kind === 'mmio';
      const fault = isMemoryFaultReason(reason) && x.run.payload.kind === 'memoryFault' && (x.rc === 0 || x.errno === 'EFAULT' || x.errno === 'EHWPOISON');
      const p = x.run.payload;
      const payload = mmio && p.kind === 'mmio'
        ? `.payload_kind = P_MMIO, .p = { ${u64(p.physAddr)}, ${u64(p.data)}, ${p.len}, ${p.isWrite ? 1 : 0} }`
        : fault && p.kind === 'memoryFault' ? `.payload_kind = P_FAULT, .p = { ${u64(p.flags)}, ${u64(p.gpa)}, ${u64(p.size)}, 0 }` : '.payload_kind = P_NONE';
      const value = x.value === undefined ? '.has_value = 0' : `.has_value = 1, .value = ${u64(x.value)}`;
      return `{ .kind = E_RUN, .rc = ${x.rc}, .err = ${x.errno ? errnoNumber(x.errno) : 0}, .exit_reason = ${reason}, ${value}, ${payload} }`;
    })
    .with({ kind: 'dirtyLog' }, () => '{ .kind = E_DIRTY }')
    .with({ kind: 'race' }, { kind: 'episode' }, () => {
      throw new InputError('a race or demand-paging outcome cannot be checked by a C reproducer');
    })
    .exhaustive();
}

const pageList = (name: string, pages: readonly number[]): string =>
  `static const uint32_t ${name}[] = { ${pages.length ? pages.join(', ') : '0'} };`;

/** The C source of the reproducer for `commands`, checked against the spec under `model`. */
export function exportC(commands: readonly Command[], model: ModelConfig, title: string): string {
  const leftOut = commands.map((c) => [c, encodeCommand(c)] as const).find(([c, r]) => r === null || c.kind === 'demandPaging');
  if (leftOut) {
    const why = leftOut[0].kind === 'raceAccess' ? LEFT_OUT.race : leftOut[0].kind === 'demandPaging' ? 'C reproducers of demand-paging episodes are not written yet (the kvm backend runs them)' : LEFT_OUT.series;
    throw new InputError(`the replay contains ${formatCommand(leftOut[0])}, which a C reproducer cannot run: ${why}`);
  }
  const expected = expectations(commands, model);
  const lists: string[] = [];
  const steps = commands.map((cmd, i) => {
    const req = encodeCommand(cmd)![0]!;
    const args = req.args.map(u64).join(', ');
    const o = expected[i]!;
    let dirty = '';
    if (o.kind === 'dirtyLog') {
      lists.push(pageList(`must_${i}`, o.dirty), pageList(`may_${i}`, o.mayAlsoBeDirty ?? []));
      dirty = `, .must = must_${i}, .nmust = ${o.dirty.length}, .may = may_${i}, .nmay = ${(o.mayAlsoBeDirty ?? []).length}`;
    }
    const init = expectInit(o).replace(/ }$/, `${dirty} }`);
    return `  { { ${req.op}, ${req.a32}, { ${args} } },\n    ${init},\n    ${cString(formatCommand(cmd))}, ${cString(formatOutcome(o))} },`;
  });
  const ops = readFileSync(join(packageRoot(), 'src', 'kvm', 'native', 'kvm-ops.c'), 'utf8');
  return `/*
 * ${title.replace(/\*\//g, '* /')}
 * Generated by kvm-memmodel export --c. Expectations: the spec, x86, ${describeConfig(model)}.
 * Build and run (as a user who may open /dev/kvm):  gcc -O2 -o repro repro.c && ./repro
 * Exit status: 0 every step matched the spec, 1 some step differed (printed), 77 no usable /dev/kvm.
 */
/* ---- src/kvm/native/kvm-ops.c, verbatim ---- */
${ops}
/* ---- the sequence and the spec's expected outcomes ---- */
enum { E_OK, E_ERR, E_HOSTDATA, E_SEGV, E_RUN, E_DIRTY };
enum { P_NONE, P_MMIO, P_FAULT };
struct expect {
  int kind, has_value, err, rc, payload_kind;
  uint64_t value;
  uint32_t exit_reason;
  uint64_t p[4];
  const uint32_t *must, *may;
  int nmust, nmay;
};
struct step { struct kmm_req req; struct expect e; const char *call, *expected; };
${lists.join('\n')}
static const struct step steps[] = {
${steps.join('\n')}
};
#define NSTEPS ((int)(sizeof steps / sizeof steps[0]))

static int in_list(const uint32_t *l, int n, uint32_t v) { for (int i = 0; i < n; i++) if (l[i] == v) return 1; return 0; }

/* The response in the harness's words (formatOutcome, roughly). */
static void describe_response(const struct kmm_resp *r, char *out, size_t n) {
  switch (r->status) {
  case ST_OK: snprintf(out, n, r->has_value ? "data 0x%llx" : "ok (rc %lld)", r->has_value ? (unsigned long long)r->value : (unsigned long long)r->rc); return;
  case ST_ERR: snprintf(out, n, "-%s (errno %d)", strerror(r->err), r->err); return;
  case ST_SEGV: snprintf(out, n, "SIGSEGV"); return;
  case ST_HARNESS: snprintf(out, n, "harness problem %u (value 0x%llx, errno %d)", r->detail, (unsigned long long)r->value, r->err); return;
  default: break;
  }
  int at = r->rc ? snprintf(out, n, "rc=-1 errno=%d (%s) exit=%u", r->err, strerror(r->err), r->exit_reason)
                 : snprintf(out, n, "rc=0 exit=%u", r->exit_reason);
  if (r->exit_reason == KVM_EXIT_MMIO)
    at += snprintf(out + at, n - at, " mmio{phys=0x%llx len=%u write=%u data=0x%llx}", (unsigned long long)r->payload[0],
                   (unsigned)(uint32_t)r->payload[2], (unsigned)((r->payload[2] >> 32) & 0xff), (unsigned long long)r->payload[1]);
  if (r->exit_reason == 39)
    at += snprintf(out + at, n - at, " memory_fault{flags=0x%llx gpa=0x%llx size=0x%llx}", (unsigned long long)r->payload[0],
                   (unsigned long long)r->payload[1], (unsigned long long)r->payload[2]);
  if (r->has_value) snprintf(out + at, n - at, " rax=0x%llx", (unsigned long long)r->value);
}

/* Whether the kernel's response is what the spec expects (the harness's outcomeMismatch, in C). */
static int matches(const struct expect *e, const struct kmm_resp *r, const uint8_t *data, char *why, size_t n) {
  switch (e->kind) {
  case E_OK:
    if (r->status != ST_OK) break;
    if (e->has_value && (uint64_t)r->rc != e->value) break;
    return 1;
  case E_ERR: if (r->status == ST_ERR && r->err == e->err) return 1; break;
  case E_HOSTDATA: if (r->status == ST_OK && r->value == e->value) return 1; break;
  case E_SEGV: if (r->status == ST_SEGV) return 1; break;
  case E_RUN: {
    if (r->status != ST_RUN || r->rc != e->rc || (e->rc && r->err != e->err) || r->exit_reason != e->exit_reason) break;
    if (e->has_value != (int)r->has_value || (e->has_value && r->value != e->value)) break;
    if (e->payload_kind == P_MMIO) {
      uint32_t len = (uint32_t)r->payload[2];
      uint32_t is_write = (uint32_t)((r->payload[2] >> 32) & 0xff);
      uint64_t mask = len >= 8 ? ~0ULL : ((1ULL << (8 * len)) - 1);
      if (r->payload[0] != e->p[0] || len != e->p[2] || is_write != e->p[3]) break;
      if (is_write && (r->payload[1] & mask) != e->p[1]) break;
    }
    if (e->payload_kind == P_FAULT && (r->payload[0] != e->p[0] || r->payload[1] != e->p[1] || r->payload[2] != e->p[2])) break;
    return 1;
  }
  case E_DIRTY: {
    if (r->status != ST_OK) break;
    for (int i = 0; i < e->nmust; i++) {
      uint32_t p = e->must[i];
      if (p / 8 >= r->datalen || !(data[p / 8] & (1u << (p % 8)))) { snprintf(why, n, "page %u not reported dirty", p); return 0; }
    }
    for (uint32_t p = 0; p < r->datalen * 8; p++) {
      if ((data[p / 8] & (1u << (p % 8))) && !in_list(e->must, e->nmust, p) && !in_list(e->may, e->nmay, p)) {
        snprintf(why, n, "page %u reported dirty, which the spec does not allow", p); return 0;
      }
    }
    return 1;
  }
  }
  describe_response(r, why, n);
  return 0;
}

int main(void) {
  static struct kmm k;
  static uint8_t data[1 << 20];
  struct kmm_resp r;
  if (kmm_init(&k) < 0) { perror("repro: /dev/kvm"); return 77; }
  struct kmm_req reset = { .op = OP_RESET };
  if (kmm_dispatch(&k, &reset, &r, data, sizeof data) < 0) { fprintf(stderr, "repro: KVM_CREATE_VM: %s\\n", strerror(r.err)); return 77; }
  int differ = 0;
  for (int i = 0; i < NSTEPS; i++) {
    char why[256] = "";
    kmm_dispatch(&k, &steps[i].req, &r, data, sizeof data);
    int ok = matches(&steps[i].e, &r, data, why, sizeof why);
    printf("%3d. %s\\n     spec:   %s\\n     kernel: %s\\n", i + 1, steps[i].call, steps[i].expected, ok ? "as the spec says" : why);
    if (!ok) { differ++; printf("     ^^^ DIFFERS from the spec\\n"); }
  }
  if (differ) printf("REPRODUCED: %d of %d steps differ from the spec\\n", differ, NSTEPS);
  else printf("OK: all %d steps match the spec\\n", NSTEPS);
  return differ ? 1 : 0;
}
`;
}

export const exportTitle = (file: string, invariant: string): string => `kvm-memmodel reproducer for ${file} (recorded failure: ${invariant})`;
