// The engine at KVM's limits (issue 11 target 4), each figure from one run of this process:
//   - KVM_USER_MEM_SLOTS (32,764 on x86) slots created through the engine's
//     KVM_SET_USER_MEMORY_REGION path, in a shuffled gpa order (the spec's create is timed too);
//   - memslot lookups at that size, the engine's index against the spec's scan, interleaved;
//   - a munmap of 16,384 4 KiB pages whose translations sit in both vCPUs' TLBs (arm64 slow walker:
//     one TLBI per leaf);
//   - enabling dirty logging over a THP-backed slot whose every 2 MiB block is mapped: heap delta
//     and time.
// Run: node dist/bench/limits.js [--slots N --pages N --thp-gib N --seed S]
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { PAGE_SIZE, SZ_2M } from '../model/abi.js';
import type { Command, SetMemslot } from '../model/commands.js';
import { findSlot, setMemslot } from '../model/memslots.js';
import { newSpecState } from '../model/state.js';
import { Engine } from '../src/mmu/engine.js';
import { positiveIntArg } from './args.js';

const HVA = 0x100000000;

/** A deterministic shuffle (xorshift32) so the slots are not created in gpa order. */
function shuffled(n: number, seed: number): number[] {
  const out = Array.from({ length: n }, (_, i) => i);
  let x = seed >>> 0 || 1;
  for (let i = n - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    const j = (x >>> 0) % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Slot i: two pages at gfn 4i (gaps between slots, so a lookup can miss), hva ranges disjoint. */
const slotCmd = (id: number, gfnOf: number): SetMemslot => ({
  kind: 'setMemslot',
  api: 'v2',
  slot: id,
  as: 0,
  flags: 0,
  gpa: gfnOf * 4 * PAGE_SIZE,
  size: 2 * PAGE_SIZE,
  hva: HVA + gfnOf * 2 * PAGE_SIZE,
});

function apply(e: Engine, cmd: Command): void {
  const out = e.apply(cmd);
  e.kvm.ops.takeEvents();
  if (out.kind === 'err') throw new Error(`bench setup: ${cmd.kind} failed with ${out.errno}`);
}

export function measureSlots(n: number, seed: number): Record<string, number> {
  const order = shuffled(n, seed);
  const engine = new Engine('x86');
  let started = performance.now();
  for (let id = 0; id < n; id++) apply(engine, slotCmd(id, order[id]!));
  const engineSeconds = (performance.now() - started) / 1000;
  const spec = newSpecState('x86');
  started = performance.now();
  for (let id = 0; id < n; id++) setMemslot(spec, slotCmd(id, order[id]!));
  const specSeconds = (performance.now() - started) / 1000;

  // Lookups, interleaved in rounds; the engine does 100x as many per round to be timeable.
  const gfns = shuffled(4 * n, seed + 1).slice(0, 1000);
  let [engineMs, specMs, engineLookups, specLookups, hits] = [0, 0, 0, 0, 0];
  for (let round = 0; round < 5; round++) {
    started = performance.now();
    for (let k = 0; k < 100; k++) for (const g of gfns) if (engine.kvm.memslots.find(0, g)) hits++;
    engineMs += performance.now() - started;
    engineLookups += 100 * gfns.length;
    started = performance.now();
    for (const g of gfns) if (findSlot(spec, 0, g)) hits--;
    specMs += performance.now() - started;
    specLookups += gfns.length;
  }
  if (hits !== 99 * 5 * gfns.filter((g) => findSlot(spec, 0, g)).length)
    throw new Error('bench: the engine and the spec disagree on a lookup');
  const ratio = specMs / specLookups / (engineMs / engineLookups);
  return { slotsCreateSeconds: engineSeconds, slotsSpecCreateSeconds: specSeconds, slotsLookupRatio: ratio };
}

export function measureUnmapWarmTlb(pages: number): number {
  const e = new Engine('arm64');
  const size = pages * PAGE_SIZE;
  apply(e, { kind: 'mmap', hva: HVA, size, prot: 'rw', backing: 'anon' });
  apply(e, { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 0, gpa: 0, size, hva: HVA });
  for (let p = 0; p < pages; p++)
    for (const vcpu of [0, 1])
      apply(e, { kind: 'guestAccess', vcpu, gpa: p * PAGE_SIZE, len: 1, write: vcpu === 0, value: 1n });
  const started = performance.now();
  apply(e, { kind: 'munmap', hva: HVA, size });
  return performance.now() - started;
}

function gc(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

export function measureEnableLog(gib: number): { heapMB: number; ms: number; blocks: number } {
  const e = new Engine('arm64');
  const size = gib * 2 ** 30;
  const hva = 2 ** 40;
  apply(e, { kind: 'mmap', hva, size, prot: 'rw', backing: 'thp' });
  apply(e, { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 0, gpa: 2 ** 32, size, hva });
  for (let off = 0; off < size; off += SZ_2M)
    apply(e, { kind: 'guestAccess', vcpu: 0, gpa: 2 ** 32 + off, len: 1, write: true, value: 1n });
  const blocks = e.kvm.ops.stats.leavesMapped[2];
  gc();
  const before = process.memoryUsage().heapUsed;
  const started = performance.now();
  apply(e, { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 1, gpa: 2 ** 32, size, hva });
  const ms = performance.now() - started;
  const heapMB = (process.memoryUsage().heapUsed - before) / 1e6;
  return { heapMB, ms, blocks };
}

export async function measure(): Promise<Record<string, number>> {
  const seed = positiveIntArg('seed', 1);
  const slots = measureSlots(positiveIntArg('slots', 32764), seed);
  const unmapMs = measureUnmapWarmTlb(positiveIntArg('pages', 16384));
  const log = measureEnableLog(positiveIntArg('thp-gib', 4));
  return {
    slots32kCreateSeconds: slots.slotsCreateSeconds!,
    slots32kLookupRatio: slots.slotsLookupRatio!,
    slots32kSpecCreateSeconds: slots.slotsSpecCreateSeconds!,
    unmapWarmTlb16kMs: unmapMs,
    enableLogThpHeapMB: log.heapMB,
    enableLogThpMs: log.ms,
  };
}

if (process.argv[1]?.endsWith('limits.js')) {
  const keys = await measure();
  const n = positiveIntArg('slots', 32764);
  console.log('kvm-memmodel at KVM limits');
  console.log(
    `  ${n} memslots created through KVM_SET_USER_MEMORY_REGION: engine ${keys.slots32kCreateSeconds!.toFixed(2)} s,` +
      ` spec ${keys.slots32kSpecCreateSeconds!.toFixed(2)} s`,
  );
  console.log(`  lookup at that size: the engine's index is ${keys.slots32kLookupRatio!.toFixed(0)}x the spec's scan`);
  console.log(
    `  munmap of ${positiveIntArg('pages', 16384)} pages with warm TLBs (arm64 slow walker):` +
      ` ${keys.unmapWarmTlb16kMs!.toFixed(0)} ms`,
  );
  console.log(
    `  enabling dirty logging over a ${positiveIntArg('thp-gib', 4)} GiB THP slot of mapped 2 MiB blocks:` +
      ` heap ${keys.enableLogThpHeapMB!.toFixed(1)} MB, ${keys.enableLogThpMs!.toFixed(0)} ms`,
  );
  console.log(JSON.stringify(keys));
}
