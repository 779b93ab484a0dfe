// Concurrent cases (issue 10 item 2): the usual setup prefix, then N threads of one to four
// commands each and a schedule (which runnable thread steps next). Thread commands are templates
// like a sequential run's, resolved against the spec state after the setup (resolveThreads), so
// they hit its mapped slots, aliases, logged slots and guest_memfd. The schedule is a plain
// fc.array, which fast-check shrinks toward [] (the sequential order thread 0, thread 1, ...).
import fc from 'fast-check';
import { NR_VCPUS } from '../model/abi.js';
import type { ThreadCommand, ThreadRole } from '../model/history.js';
import { seriesOn, type ModelConfig } from '../model/series.js';
import type { SpecState } from '../model/state.js';
import { NO_LIMITS, setupArbitraryFor, templateArbitraries, type GeneratorLimits } from './generators.js';
import { resolveTemplate, type Template } from './templates.js';

/** A concurrent case before its thread templates are resolved (what fast-check generates and shrinks). */
export interface ConcurrentTemplate {
  readonly setup: Template[];
  readonly roles: ThreadRole[];
  readonly threads: Template[][];
  readonly schedule: number[];
}

export const MIN_CASE_THREADS = 2;
/** Commands per thread: short, so the interleavings of a case stay few enough to check exhaustively. */
const MAX_PER_THREAD = 4;
/** Scheduling decisions the generator draws; past them the lowest runnable thread steps (history.ts). */
const MAX_SCHEDULE_DRAWN = 64;

/**
 * Roles from the thread count: thread t < min(N - 1, NR_VCPUS) runs vCPU t, the rest are VMM
 * threads, so every case has at least one VMM thread (the one racing the vCPUs) and at most one
 * thread per vCPU (vcpu->mutex serializes KVM_RUN).
 */
export function rolesFor(n: number): ThreadRole[] {
  const vcpus = Math.min(n - 1, NR_VCPUS);
  return Array.from({ length: n }, (_, t): ThreadRole => (t < vcpus ? { kind: 'vcpu', vcpu: t } : { kind: 'vmm' }));
}

/** Templates that resolve to a guest access (vCPU threads only) or that a thread may not run at all. */
const VCPU_TEMPLATES = new Set<Template['t']>(['access', 'privateAccess']);
const NOT_IN_THREADS = new Set<Template['t']>(['race', 'demandPaging']);

function vmmTemplate(t: Template): boolean {
  if (VCPU_TEMPLATES.has(t.t) || NOT_IN_THREADS.has(t.t)) return false;
  return t.t !== 'cmd' || !['guestAccess', 'raceAccess', 'demandPaging'].includes(t.cmd.kind);
}

const value = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });

/** A vCPU thread's access; the runner overwrites `vcpu` with the thread's own (resolveThreads). */
function vcpuTemplate(config: ModelConfig): fc.Arbitrary<Template> {
  const shared = fc.record({
    t: fc.constant('access' as const),
    slot: fc.nat({ max: 3 }),
    page: fc.nat({ max: 6 }),
    offset: fc.constantFrom(0, 8, 0x800, 0xff8, 0xffc),
    len: fc.constantFrom(1, 2, 4, 8),
    write: fc.boolean(),
    value,
    vcpu: fc.constant(0),
  });
  if (!seriesOn(config, 'gmem-private')) return shared;
  const priv = fc.record({
    t: fc.constant('privateAccess' as const),
    slot: fc.nat({ max: 3 }),
    page: fc.nat({ max: 5 }),
    offset: fc.constantFrom(0, 8, 0xff8),
    write: fc.boolean(),
    value,
    vcpu: fc.constant(0),
  });
  return fc.oneof({ arbitrary: shared, weight: 3 }, { arbitrary: priv, weight: 2 });
}

/** Every template kind a sequential run generates for a VMM (the vCPUs' and the windows' left out). */
function vmmTemplateArbitrary(config: ModelConfig, limits: GeneratorLimits): fc.Arbitrary<Template> {
  const all = templateArbitraries(config, { ...limits, races: false, upstreamEpisodes: false });
  return fc.oneof(...all).filter(vmmTemplate);
}

/** A concurrent case of `threads` threads (2..8) under a configuration; deterministic from fast-check's seed. */
export function concurrentArbitraryFor(
  config: ModelConfig,
  threads: number,
  limits: GeneratorLimits = NO_LIMITS,
): fc.Arbitrary<ConcurrentTemplate> {
  if (threads < MIN_CASE_THREADS) throw new Error(`harness bug: a concurrent case needs 2 threads, not ${threads}`);
  const roles = rolesFor(threads);
  const vcpu = vcpuTemplate(config);
  const vmm = vmmTemplateArbitrary(config, limits);
  if (seriesOn(config, 'userfault')) return userfaultCaseArbitrary(config, limits, roles, vcpu, vmm);
  const list = (role: ThreadRole) =>
    fc.array(role.kind === 'vcpu' ? vcpu : vmm, { minLength: 1, maxLength: MAX_PER_THREAD });
  return fc.record({
    setup: setupArbitraryFor(config, limits),
    roles: fc.constant(roles),
    threads: fc.tuple(...roles.map(list)),
    schedule: fc.array(fc.nat({ max: 255 }), { maxLength: MAX_SCHEDULE_DRAWN }),
  });
}

/**
 * The page picks that name the same page through both templates.ts' pageIndex (accesses, host
 * calls) and series-templates.ts' pageIn (userfault bits): first, second, last, middle.
 */
const FOCUS_PAGES: readonly { access: number; bits: number }[] = [
  { access: 0, bits: 0 },
  { access: 1, bits: 1 },
  { access: 2, bits: 2 },
  { access: 4, bits: 3 },
];

/**
 * Under the userfault series a case has a focus page that the threads contend for, S0's protocol
 * (seed 000): the setup may arm the focus slot (every bit set, then USERFAULT on, which zaps it);
 * a VMM thread may resolve the page (write its contents, then clear its bit: the release orders
 * the two, store-buffer.ts); a vCPU may read or write the bytes the VMM writes. Independent
 * templates name one page of one slot together too rarely (2 cases in 1,000 had a write-then-clear
 * pair, none on an armed slot with an access to the page).
 */
function userfaultCaseArbitrary(
  config: ModelConfig,
  limits: GeneratorLimits,
  roles: ThreadRole[],
  vcpu: fc.Arbitrary<Template>,
  vmm: fc.Arbitrary<Template>,
): fc.Arbitrary<ConcurrentTemplate> {
  const focus = fc.record({ slot: fc.nat({ max: 3 }), page: fc.constantFrom(...FOCUS_PAGES) });
  return focus.chain(({ slot, page }) => {
    const bits = (set: boolean, numPages: number): Template => ({
      t: 'userfault',
      op: 'bits',
      slot,
      page: page.bits,
      numPages,
      set,
    });
    const arm: Template[] = [
      { t: 'userfault', op: 'bits', slot, page: 0, numPages: 0, set: true },
      { t: 'userfault', op: 'enable', slot, page: 0, numPages: 0, set: true },
    ];
    // hostWrite writes 8 bytes at page offset 8 * (pages % 8): pages 1 is offset 8.
    const resolve = value.map((v): Template[] => [
      { t: 'host', op: 'hostWrite', slot, page: page.access, pages: 1, prot: 'rw', value: v | 1n },
      bits(false, 1),
    ]);
    const focusedAccess = fc.record({
      t: fc.constant('access' as const),
      slot: fc.constant(slot),
      page: fc.constant(page.access),
      offset: fc.constant(8),
      len: fc.constantFrom(1, 8),
      write: fc.boolean(),
      value,
      vcpu: fc.constant(0),
    });
    const vcpuUnit = fc.oneof(vcpu, focusedAccess).map((t) => [t]);
    const vmmUnit = fc.oneof({ arbitrary: vmm.map((t) => [t]), weight: 2 }, { arbitrary: resolve, weight: 1 });
    const list = (role: ThreadRole) =>
      fc
        .array(role.kind === 'vcpu' ? vcpuUnit : vmmUnit, { minLength: 1, maxLength: MAX_PER_THREAD })
        .map((units) => units.flat().slice(0, MAX_PER_THREAD + 1)); // a resolve unit last may add one
    return fc.record({
      setup: fc
        .tuple(setupArbitraryFor(config, limits), fc.boolean())
        .map(([setup, armed]) => (armed ? [...setup, ...arm] : setup)),
      roles: fc.constant(roles),
      threads: fc.tuple(...roles.map(list)),
      schedule: fc.array(fc.nat({ max: 255 }), { maxLength: MAX_SCHEDULE_DRAWN }),
    });
  });
}

/**
 * The threads' concrete commands, each resolved against `spec` (the state after the setup; not
 * mutated): a vCPU thread's accesses run on its own vCPU, and a VMM template that resolves to a
 * command a thread may not run is a generator bug, not something to run silently.
 */
export function resolveThreads(spec: SpecState, roles: readonly ThreadRole[], threads: readonly Template[][]) {
  return threads.map((list, t): ThreadCommand[] =>
    list.map((template): ThreadCommand => {
      const cmd = resolveTemplate(spec, template);
      const role = roles[t]!;
      if (role.kind === 'vcpu') {
        if (cmd.kind !== 'guestAccess') throw new Error(`harness bug: vCPU template resolved to ${cmd.kind}`);
        return { ...cmd, vcpu: role.vcpu };
      }
      if (cmd.kind === 'guestAccess' || cmd.kind === 'raceAccess' || cmd.kind === 'demandPaging')
        throw new Error(`harness bug: VMM template resolved to ${cmd.kind}`);
      return cmd;
    }),
  );
}
