// What a VMM can observe of an outcome, and when two outcomes differ (DESIGN.md, "Observable
// equality"): which kvm_run payload fields are valid, the comparison, and the one-line formats. The
// vocabulary every backend and the checks share: the session's differential, the kvm platform
// verdicts and the C export. It knows the memfault-2023 exit number (series-abi.ts), so upstream
// outcomes.ts does not have to.
import { P, match } from 'ts-pattern';
import { KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, hex } from './abi.js';
import { bigintAsHex, type KvmRunState, type Outcome } from './outcomes.js';
import { KVM_EXIT_MEMORY_FAULT_2023 } from './series-abi.js';

/** KVM_EXIT_MEMORY_FAULT as merged (39) or as posted in 2023 (38, memfault-2023 series only). */
export const isMemoryFaultReason = (reason: number): boolean =>
  reason === KVM_EXIT_MEMORY_FAULT || reason === KVM_EXIT_MEMORY_FAULT_2023;

export function formatPayload(run: KvmRunState): string {
  return match(run.payload)
    .with({ kind: 'none' }, () => 'union untouched')
    .with({ kind: 'mmio' }, (p) => {
      const data = p.isWrite ? ` data=${hex(p.data)}` : '';
      return `mmio{phys=${hex(p.physAddr)} len=${p.len} write=${p.isWrite ? 1 : 0}${data}}`;
    })
    .with({ kind: 'memoryFault' }, (p) => `memory_fault{flags=${hex(p.flags)} gpa=${hex(p.gpa)} size=${hex(p.size)}}`)
    .exhaustive();
}

export function formatOutcome(o: Outcome): string {
  return match(o)
    .with({ kind: 'ok' }, (x) => (x.value === undefined ? 'ok' : `ok ${x.value}`))
    .with({ kind: 'err' }, (x) => `-${x.errno}`)
    .with({ kind: 'hostData' }, (x) => `data ${hex(x.value)}`)
    .with({ kind: 'segv' }, () => 'SIGSEGV')
    .with({ kind: 'run' }, (x) => {
      const rc = x.rc === 0 ? 'rc=0' : `rc=-1 errno=${x.errno}`;
      const reason = exitReasonName(x.run.exitReason);
      const valid = x.run.exitReason === KVM_EXIT_MMIO || isMemoryFaultReason(x.run.exitReason);
      const payload = valid ? ` ${formatPayload(x.run)}` : '';
      const value = x.value === undefined ? '' : ` rax=${hex(x.value)}`;
      return `${rc} exit=${reason}${payload}${value}`;
    })
    .with({ kind: 'dirtyLog' }, (x) => {
      const may = x.mayAlsoBeDirty && x.mayAlsoBeDirty.length > 0 ? ` (may also: [${x.mayAlsoBeDirty.join(',')}])` : '';
      return `dirty [${x.dirty.join(',')}]${may}`;
    })
    .with({ kind: 'race' }, (x) => `access: ${formatOutcome(x.access)} | host: ${formatOutcome(x.host)}`)
    .with({ kind: 'episode' }, (x) => {
      const reads = x.values
        .map((v, i) => `vcpu${i}:[${v.map((b) => (b === null ? 'w' : hex(b))).join(',')}]`)
        .join(' ');
      return x.completed ? `all vCPUs finished ${reads}` : `STUCK: ${x.stuck ?? 'no progress'}`;
    })
    .exhaustive();
}

const EXIT_NAMES: Record<number, string> = {
  0: 'UNKNOWN',
  5: 'HLT',
  6: 'MMIO',
  38: 'MEMORY_FAULT(38, 2023)',
  39: 'MEMORY_FAULT',
};
export const exitReasonName = (reason: number): string => EXIT_NAMES[reason] ?? String(reason);

/**
 * Whether the kvm_run union of a KVM_RUN outcome is meaningful (api.rst): an MMIO exit that
 * returned 0, or a memory-fault exit that returned 0 or failed with EFAULT/EHWPOISON.
 */
export function payloadIsValid(o: Extract<Outcome, { kind: 'run' }>): boolean {
  const reason = o.run.exitReason;
  return (
    (reason === KVM_EXIT_MMIO && o.rc === 0) ||
    (isMemoryFaultReason(reason) && (o.rc === 0 || o.errno === 'EFAULT' || o.errno === 'EHWPOISON'))
  );
}

/** Why `actual` is not what the spec allows, or null when it is. */
export function outcomeMismatch(expected: Outcome, actual: Outcome): string | null {
  const differ = (): string => `spec says ${formatOutcome(expected)}, backend says ${formatOutcome(actual)}`;
  if (expected.kind !== actual.kind) return differ();
  return match(expected)
    .with({ kind: P.union('ok', 'err', 'hostData', 'segv') }, (e) =>
      JSON.stringify(e, bigintAsHex) === JSON.stringify(actual, bigintAsHex) ? null : differ(),
    )
    .with({ kind: 'run' }, (e) => {
      const a = actual as typeof e;
      if (a.rc !== e.rc || a.errno !== e.errno || a.run.exitReason !== e.run.exitReason || a.value !== e.value)
        return differ();
      return payloadIsValid(e) &&
        JSON.stringify(a.run.payload, bigintAsHex) !== JSON.stringify(e.run.payload, bigintAsHex)
        ? differ()
        : null;
    })
    .with({ kind: 'dirtyLog' }, (e) => {
      const a = actual as typeof e;
      const reported = new Set(a.dirty);
      const allowed = new Set([...e.dirty, ...(e.mayAlsoBeDirty ?? [])]);
      const missing = e.dirty.filter((p) => !reported.has(p));
      const extra = a.dirty.filter((p) => !allowed.has(p));
      if (missing.length === 0 && extra.length === 0) return null;
      return `${differ()} (missing [${missing.join(',')}], unexpected [${extra.join(',')}])`;
    })
    .with({ kind: 'episode' }, (e) => {
      const a = actual as typeof e;
      return a.completed === e.completed &&
        JSON.stringify(a.values, bigintAsHex) === JSON.stringify(e.values, bigintAsHex)
        ? null
        : differ();
    })
    .with({ kind: 'race' }, (e) => {
      const a = actual as typeof e;
      return outcomeMismatch(e.access, a.access) || outcomeMismatch(e.host, a.host) ? differ() : null;
    })
    .exhaustive();
}
