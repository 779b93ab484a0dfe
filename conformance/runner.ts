// The conformance suite: each table case (conformance/cases.ts) runs against the spec and, where
// /dev/kvm exists, the real kernel. A kernel that fails a selftest assertion passes the case only
// if a deviation recorded in the platform profile explains every result of the case (the spec with
// the deviation applied predicts what the kernel did); the verdict names the deviation.
import { match } from 'ts-pattern';
import { KVM_EXIT_MMIO, hex } from '../model/abi.js';
import { formatCommand } from '../model/commands.js';
import { formatOutcome, isMemoryFaultReason } from '../model/observable.js';
import type { Outcome } from '../model/outcomes.js';
import type { DeviationId } from '../model/platform.js';
import { makeConfig, type ModelConfig } from '../model/series.js';
import { applyCommand, type SequentialCommand } from '../model/spec.js';
import { newSpecState } from '../model/state.js';
import type { ConformanceCase, Expect } from './cases.js';
import type { KvmBackend } from '../src/kvm/backend.js';
import type { PlatformProfile } from '../src/kvm/platform.js';
import { kernelMismatch } from '../src/kvm/platform.js';
import type { KernelResult } from '../src/kvm/protocol.js';

/** Why `got` does not satisfy the selftest's assertion, or null. */
export function expectMismatch(expect: Expect, got: KernelResult): string | null {
  const said = got.kind === 'harness' ? `harness: ${got.message}` : formatOutcome(got);
  const fail = (what: string): string => `expected ${what}, got ${said}`;
  if ('ok' in expect) {
    if (got.kind !== 'ok') return fail('success');
    return expect.value !== undefined && got.value !== expect.value ? fail(`value ${expect.value}`) : null;
  }
  if ('errno' in expect) return got.kind === 'err' && got.errno === expect.errno ? null : fail(`-${expect.errno}`);
  if ('hostData' in expect)
    return got.kind === 'hostData' && got.value === expect.hostData ? null : fail(`data ${hex(expect.hostData)}`);
  if ('dirty' in expect) {
    if (got.kind !== 'dirtyLog') return fail(`dirty [${expect.dirty.join(',')}]`);
    const want = new Set(expect.dirty);
    const allowed = new Set([...(got.mayAlsoBeDirty ?? [])]);
    const ok =
      expect.dirty.every((p) => got.dirty.includes(p)) && got.dirty.every((p) => want.has(p) || allowed.has(p));
    return ok ? null : fail(`dirty [${expect.dirty.join(',')}]`);
  }
  const r = expect.run;
  const want = `rc=${r.rc}${r.errno ? ` errno=${r.errno}` : ''} exit ${r.exitReason}`;
  if (
    got.kind !== 'run' ||
    got.rc !== r.rc ||
    (r.errno && got.errno !== r.errno) ||
    got.run.exitReason !== r.exitReason
  )
    return fail(want);
  if (r.value !== undefined && got.value !== r.value) return fail(`${want} rax=${hex(r.value)}`);
  const p = got.run.payload;
  if (
    r.mmio &&
    got.run.exitReason === KVM_EXIT_MMIO &&
    (p.kind !== 'mmio' || p.physAddr !== r.mmio.physAddr || p.isWrite !== r.mmio.isWrite)
  )
    return fail(`${want} at ${hex(r.mmio.physAddr)}`);
  if (r.memoryFault && isMemoryFaultReason(got.run.exitReason)) {
    const m = r.memoryFault;
    if (p.kind !== 'memoryFault' || p.flags !== m.flags || p.gpa !== m.gpa || p.size !== m.size)
      return fail(`${want} memory_fault{flags=${hex(m.flags)} gpa=${hex(m.gpa)} size=${hex(m.size)}}`);
  }
  return null;
}

/** The spec's outcome for every step of the case under `model`. */
export function specOutcomes(c: ConformanceCase, model: ModelConfig): Outcome[] {
  const state = newSpecState('x86', model);
  return c.steps.map((s) => applyCommand(state, s.cmd as SequentialCommand));
}

/** Assertion failures of a result list, as "step N (call): why". */
export function failures(c: ConformanceCase, results: readonly KernelResult[]): string[] {
  return c.steps.flatMap((s, i) => {
    const why = s.expect && results[i] ? expectMismatch(s.expect, results[i]) : null;
    return why ? [`step ${i + 1} (${formatCommand(s.cmd)}): ${why}`] : [];
  });
}

export type CaseVerdict =
  | { kind: 'agrees' }
  | { kind: 'skipped'; why: string }
  | { kind: 'deviation'; ids: DeviationId[]; failures: string[] }
  | { kind: 'fails'; failures: string[] };

const predicts = (c: ConformanceCase, model: ModelConfig, results: readonly KernelResult[]): boolean => {
  const predicted = specOutcomes(c, model);
  return c.steps.every((_step, i) => !kernelMismatch(predicted[i]!, results[i]!).mismatch);
};

export function runOnKernel(c: ConformanceCase, backend: KvmBackend, profile: PlatformProfile | null): CaseVerdict {
  if (c.series?.length)
    return {
      kind: 'skipped',
      why:
        `needs the ${c.series.join(', ')} series (model-only; ` +
        `KVM_CAP_MEMORY_ATTRIBUTES is ${backend.probe.caps.get(233) ?? 0} here)`,
    };
  const unrunnable = c.steps.find((s) => backend.leftOut(s.cmd));
  if (unrunnable) return { kind: 'skipped', why: `${formatCommand(unrunnable.cmd)} cannot run on the kernel` };
  const run = backend.run(c.steps.map((s) => s.cmd));
  if (run.died) return { kind: 'fails', failures: [`the helper ${run.died.how} at step ${run.died.at + 1}`] };
  const found = failures(c, run.results);
  if (found.length === 0) return { kind: 'agrees' };
  if (profile) {
    const single = profile.deviations
      .map((d) => d.id)
      .filter((id) => predicts(c, makeConfig([], {}, [id]), run.results));
    if (single.length) return { kind: 'deviation', ids: single.slice(0, 1), failures: found };
    const all = profile.deviations.map((d) => d.id);
    if (predicts(c, makeConfig([], {}, all), run.results)) return { kind: 'deviation', ids: all, failures: found };
  }
  return { kind: 'fails', failures: found };
}

export function formatVerdict(v: CaseVerdict): string {
  return match(v)
    .with({ kind: 'agrees' }, () => 'kernel agrees')
    .with({ kind: 'skipped' }, (x) => `kernel skipped: ${x.why}`)
    .with(
      { kind: 'deviation' },
      (x) => `kernel differs, explained by recorded deviation ${x.ids.join(' + ')}: ${x.failures.join('; ')}`,
    )
    .with({ kind: 'fails' }, (x) => `KERNEL FAILS: ${x.failures.join('; ')}`)
    .exhaustive();
}
