// differential: the spec and a backend agree on every observable result (DESIGN.md, "Observable
// equality"): return value or errno, exit_reason and the payload fields valid for it, data read
// back, dirty bitmaps (within what the spec allows), and the contents of host and guest_memfd memory.
import { P, match } from 'ts-pattern';
import { KVM_EXIT_MMIO, hex } from '../model/abi.js';
import { pagesEqual, type Memory } from '../model/memory.js';
import { bigintAsHex, formatOutcome, isMemoryFaultReason, type Outcome } from '../model/outcomes.js';

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

/** Pages whose contents differ, described for a report (label names the address space). */
export function memoryMismatch(label: string, expected: Memory, actual: Memory, pageBase = 0): string[] {
  const out: string[] = [];
  for (const page of new Set([...expected.keys(), ...actual.keys()])) {
    if (pagesEqual(expected.get(page), actual.get(page))) continue;
    const describe = (m: Memory): string => {
      const data = m.get(page);
      if (!data || data.size === 0) return 'zeros';
      return [...data]
        .sort((x, y) => x[0] - y[0])
        .slice(0, 4)
        .map(([o, b]) => `+${hex(o)}=${hex(b)}`)
        .join(' ');
    };
    out.push(
      `${label} page ${hex((page + pageBase) * 4096)}: spec has ${describe(expected)}, backend has ${describe(actual)}`,
    );
    if (out.length >= 3) break;
  }
  return out;
}

/**
 * Which host pages are populated (zero page or a page of their own): observable through fast-only
 * GUP (exit-on-missing) and userfaultfd, so spec and engine must agree on it there.
 */
export function presenceMismatch(
  expected: { present: ReadonlyMap<number, string>; gigantic: ReadonlySet<number> },
  actual: { present: ReadonlyMap<number, string>; gigantic: ReadonlySet<number> },
): string[] {
  const out: string[] = [];
  for (const g of new Set([...expected.gigantic, ...actual.gigantic])) {
    if (expected.gigantic.has(g) !== actual.gigantic.has(g))
      out.push(
        `host 1 GiB page at ${hex(g * 4096)}: spec ${expected.gigantic.has(g) ? 'populated' : 'empty'}, backend ${actual.gigantic.has(g) ? 'populated' : 'empty'}`,
      );
  }
  for (const page of new Set([...expected.present.keys(), ...actual.present.keys()])) {
    const [e, a] = [expected.present.get(page), actual.present.get(page)];
    if (e !== a)
      out.push(
        `host page ${hex(page * 4096)}: spec says ${e ?? 'not populated'}, backend says ${a ?? 'not populated'}`,
      );
    if (out.length >= 3) break;
  }
  return out;
}
