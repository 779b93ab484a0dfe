// The peer selftests' assertions (conformance/cases.ts): the spec satisfies every one; the kernel,
// where /dev/kvm exists, satisfies each or differs only as a deviation recorded in this machine's
// platform profile predicts.
import { afterAll, describe, expect, test } from 'vitest';
import { CASES, NOT_ENCODED } from '../conformance/cases.js';
import { makeConfig } from '../model/series.js';
import { KvmBackend } from '../src/kvm/backend.js';
import { expectMismatch, failures, runOnKernel, specOutcomes } from '../conformance/runner.js';
import { probeMachine } from '../src/kvm/helper.js';
import { loadProfile } from '../src/kvm/platform.js';

describe('spec', () => {
  test.each(CASES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    expect(failures(c, specOutcomes(c, makeConfig(c.series ?? [])))).toEqual([]);
  });

  test('an assertion can fail: a wrong expectation is reported', () => {
    expect(expectMismatch({ errno: 'EEXIST' }, { kind: 'err', errno: 'EINVAL' })).toMatch(
      /expected -EEXIST, got -EINVAL/,
    );
    expect(expectMismatch({ dirty: [1] }, { kind: 'dirtyLog', dirty: [1, 2] })).toMatch(/expected dirty \[1\]/);
  });
});

test.each(NOT_ENCODED.map((n) => [n.source, n.why]))('not encoded: %s', (_source, why) => {
  expect(why.length).toBeGreaterThan(20);
});

const probe = probeMachine();
describe.skipIf(!probe.usable)(`kernel (${probe.usable ? 'present' : `skipped: ${probe.reason}`})`, () => {
  const opened = KvmBackend.open();
  const backend = 'skipped' in opened ? undefined : opened;
  const profile = loadProfile('pvm-6.18');
  afterAll(() => backend?.close());
  const kernelCases = CASES.filter((c) => !c.series?.length);
  test.each(kernelCases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const verdict = runOnKernel(c, backend!, profile);
    expect(verdict.kind === 'fails' ? verdict.failures : []).toEqual([]);
    expect(['agrees', 'deviation']).toContain(verdict.kind);
  });
  test('without a profile, the deviating cases fail', () => {
    const deviating = kernelCases.filter((c) => runOnKernel(c, backend!, profile).kind === 'deviation');
    expect(deviating.length).toBeGreaterThan(0);
    for (const c of deviating) expect(runOnKernel(c, backend!, null).kind).toBe('fails');
  });
});
