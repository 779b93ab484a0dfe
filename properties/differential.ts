// differential: the spec and a backend agree on every observable result (DESIGN.md, "Observable
// equality"): return value or errno, exit_reason and the payload fields valid for it, data read
// back, dirty bitmaps (within what the spec allows), and the contents of host and guest_memfd memory.
import { KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, hex } from '../model/abi.js';
import { pagesEqual, type Memory } from '../model/memory.js';
import { formatOutcome, type Outcome } from '../model/outcomes.js';

/** Why `actual` is not what the spec allows, or null when it is. */
export function outcomeMismatch(expected: Outcome, actual: Outcome): string | null {
  const differ = (): string => `spec says ${formatOutcome(expected)}, backend says ${formatOutcome(actual)}`;
  if (expected.kind !== actual.kind) return differ();
  switch (expected.kind) {
    case 'ok':
    case 'err':
    case 'hostData':
    case 'segv':
      return JSON.stringify(expected, big) === JSON.stringify(actual, big) ? null : differ();
    case 'run': {
      const a = actual as typeof expected;
      if (a.rc !== expected.rc || a.errno !== expected.errno || a.run.exitReason !== expected.run.exitReason || a.value !== expected.value) return differ();
      const reason = expected.run.exitReason;
      const payloadValid = (reason === KVM_EXIT_MMIO && expected.rc === 0) ||
        (reason === KVM_EXIT_MEMORY_FAULT && expected.rc === -1 && (expected.errno === 'EFAULT' || expected.errno === 'EHWPOISON'));
      if (payloadValid && JSON.stringify(a.run.payload, big) !== JSON.stringify(expected.run.payload, big)) return differ();
      return null;
    }
    case 'dirtyLog': {
      const a = actual as typeof expected;
      const reported = new Set(a.dirty);
      const allowed = new Set([...expected.dirty, ...(expected.mayAlsoBeDirty ?? [])]);
      const missing = expected.dirty.filter((p) => !reported.has(p));
      const extra = a.dirty.filter((p) => !allowed.has(p));
      if (missing.length === 0 && extra.length === 0) return null;
      return `${differ()} (missing [${missing.join(',')}], unexpected [${extra.join(',')}])`;
    }
    case 'race': {
      const a = actual as typeof expected;
      const access = outcomeMismatch(expected.access, a.access);
      const host = outcomeMismatch(expected.host, a.host);
      return access || host ? differ() : null;
    }
  }
}

function big(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? `0x${v.toString(16)}` : v;
}

/** Pages whose contents differ, described for a report (label names the address space). */
export function memoryMismatch(label: string, expected: Memory, actual: Memory, pageBase = 0): string[] {
  const out: string[] = [];
  for (const page of new Set([...expected.keys(), ...actual.keys()])) {
    if (pagesEqual(expected.get(page), actual.get(page))) continue;
    const describe = (m: Memory): string => {
      const data = m.get(page);
      if (!data || data.size === 0) return 'zeros';
      return [...data].sort((x, y) => x[0] - y[0]).slice(0, 4).map(([o, b]) => `+${hex(o)}=${hex(b)}`).join(' ');
    };
    out.push(`${label} page ${hex((page + pageBase) * 4096)}: spec has ${describe(expected)}, backend has ${describe(actual)}`);
    if (out.length >= 3) break;
  }
  return out;
}
