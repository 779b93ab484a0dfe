// The VMM address-space rules the spec (and the engine's simulated host) follow.
import { expect, test } from 'vitest';
import { SZ_1G } from '../model/abi.js';
import {
  applyHostPlan,
  newHostMm,
  planMadviseDontneed,
  planMmap,
  planMprotect,
  planMunmap,
  hostRead,
  hostWrite,
} from '../model/host-mm.js';

const H = 0x1000000000;
const mm = () => {
  const m = newHostMm();
  applyHostPlan(m, planMmap(m.vmas, { kind: 'mmap', hva: H, size: 0x4000, prot: 'rw', backing: 'anon' }));
  return m;
};

test('mprotect stops at the first hole with ENOMEM but keeps what it changed', () => {
  const m = mm();
  applyHostPlan(m, planMunmap(m.vmas, { kind: 'munmap', hva: H + 0x2000, size: 0x1000 }));
  expect(applyHostPlan(m, planMprotect(m.vmas, { kind: 'mprotect', hva: H, size: 0x4000, prot: 'r' }))).toEqual({
    kind: 'err',
    errno: 'ENOMEM',
  });
  expect(m.vmas.map((v) => [v.start - H, v.end - H, v.prot])).toEqual([
    [0, 0x2000, 'r'],
    [0x3000, 0x4000, 'rw'],
  ]);
});

test('MADV_DONTNEED zaps mapped parts, reports ENOMEM for holes, and the memory reads zero again', () => {
  const m = mm();
  hostWrite(m, { kind: 'hostWrite', hva: H, len: 8, value: 42n });
  applyHostPlan(m, planMunmap(m.vmas, { kind: 'munmap', hva: H + 0x2000, size: 0x1000 }));
  expect(applyHostPlan(m, planMadviseDontneed(m.vmas, { kind: 'madviseDontneed', hva: H, size: 0x4000 }))).toEqual({
    kind: 'err',
    errno: 'ENOMEM',
  });
  expect(hostRead(m, { kind: 'hostRead', hva: H, len: 8 })).toEqual({ kind: 'hostData', value: 0n });
});

test('hugetlb ranges split only at 1 GiB boundaries; DONTNEED rounds the end down', () => {
  const m = newHostMm();
  const G = 0x4000000000;
  expect(
    applyHostPlan(
      m,
      planMmap(m.vmas, { kind: 'mmap', hva: G + 0x1000, size: SZ_1G, prot: 'rw', backing: 'hugetlb1g' }),
    ),
  ).toEqual({ kind: 'err', errno: 'EINVAL' });
  expect(
    applyHostPlan(m, planMmap(m.vmas, { kind: 'mmap', hva: G, size: SZ_1G, prot: 'rw', backing: 'hugetlb1g' })),
  ).toEqual({ kind: 'ok' });
  expect(applyHostPlan(m, planMunmap(m.vmas, { kind: 'munmap', hva: G, size: 0x1000 }))).toEqual({
    kind: 'err',
    errno: 'EINVAL',
  });
  expect(applyHostPlan(m, planMprotect(m.vmas, { kind: 'mprotect', hva: G, size: 0x1000, prot: 'r' }))).toEqual({
    kind: 'err',
    errno: 'EINVAL',
  });
  hostWrite(m, { kind: 'hostWrite', hva: G, len: 8, value: 1n });
  expect(applyHostPlan(m, planMadviseDontneed(m.vmas, { kind: 'madviseDontneed', hva: G, size: 0x1000 }))).toEqual({
    kind: 'ok',
  });
  expect(hostRead(m, { kind: 'hostRead', hva: G, len: 8 })).toEqual({ kind: 'hostData', value: 1n });
});

test('the VMM touching memory it may not touch gets SIGSEGV and changes nothing', () => {
  const m = mm();
  applyHostPlan(m, planMprotect(m.vmas, { kind: 'mprotect', hva: H, size: 0x1000, prot: 'r' }));
  expect(hostWrite(m, { kind: 'hostWrite', hva: H, len: 8, value: 1n })).toEqual({ kind: 'segv' });
  expect(hostRead(m, { kind: 'hostRead', hva: H + 0x8000, len: 8 })).toEqual({ kind: 'segv' });
});
