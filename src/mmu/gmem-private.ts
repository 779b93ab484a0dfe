// gmem-private in the engine (S1, seed 001): private faults served from guest_memfd, 2 MiB folios,
// and the RMP. As Sean proposes (OQ-10 'allocation', favoured), a folio is assigned private in the
// RMP when gmem allocates it, at folio granularity, and converted back when it is freed; faults and
// zaps never touch the RMP (INV-32), and a 4 KiB mapping never shrinks a 2 MiB entry (INV-33). A
// private mapping's level is clamped to the folio and to the RMP entry (INV-34). Isaku's RFC
// ('fault') converts 4 KiB pages in the fault path instead, and lowers max_level to match.
// Every RMP update goes through rmpAssign/rmpRevert/rmpSmash, which log it as an MmuEvent with the
// entry's prior state; rmp-follows-allocation judges those events and the RMP left behind, knowing
// nothing of mutants. The private fault itself is in private-fault.ts. Mutation points: attributes-skip-zap
// and rmp-convert-at-fault (BUG-22: convertAtAllocation here, the fault's conversion in private-fault.ts);
// private-max-level-unclamped (BUG-23) in private-fault.ts.
import { PAGE_SIZE, isAligned } from '../../model/abi.js';
import type { SetMemoryAttributes } from '../../model/commands.js';
import type { Outcome } from '../../model/outcomes.js';
import { KVM_MEMORY_ATTRIBUTE_PRIVATE } from '../../model/series-abi.js';
import { seriesOn } from '../../model/series.js';
import type { EngineGmem, Kvm } from './kvm.js';
import { kvmUnmapRange } from './unmap.js';
import { defineMutant } from './mutants.js';

export const RMP_CONVERT_AT_FAULT = defineMutant({
  name: 'rmp-convert-at-fault',
  description:
    'gmem pages become private in the RMP at fault (4K) instead of at allocation, ' +
    'and every freed page is converted back',
  source: 'BUG-22 (Isaku RFC v4 07/10)',
  arches: ['x86'],
  series: ['gmem-private'],
  killedBy: ['rmp-follows-allocation'],
});

export const ATTRIBUTES_SKIP_ZAP = defineMutant({
  name: 'attributes-skip-zap',
  description: 'KVM_SET_MEMORY_ATTRIBUTES changes private/shared without zapping the range',
  source: 'own (kvm_vm_set_mem_attributes without kvm_handle_gfn_range)',
  arches: ['x86'],
  series: ['gmem-private'],
  killedBy: ['leaf-justified', 'differential'],
});

/** Pages of a 2 MiB gmem folio. */
export const FOLIO_PAGES = 512;

/** Whether any gfn in [first, first + count) is private; loops over whichever is smaller. */
export function anyPrivateIn(kvm: Kvm, first: number, count: number): number | undefined {
  if (count <= kvm.privateGfns.size) {
    for (let g = first; g < first + count; g++) if (kvm.privateGfns.has(g)) return g;
    return undefined;
  }
  for (const g of kvm.privateGfns) if (g >= first && g < first + count) return g;
  return undefined;
}

export const privateMemoryOn = (kvm: Kvm): boolean => seriesOn(kvm.config, 'gmem-private') && kvm.arch === 'x86';

export const convertAtAllocation = (kvm: Kvm): boolean =>
  kvm.config.options.rmpConversion === 'allocation' && !kvm.mutation.on(RMP_CONVERT_AT_FAULT);

/** Allocate the folio holding file page `index`: 2 MiB when the whole aligned chunk is a hole inside the file. */
export function allocFolio(kvm: Kvm, file: EngineGmem, index: number): void {
  const first = index - (index % FOLIO_PAGES);
  const huge =
    privateMemoryOn(kvm) &&
    (first + FOLIO_PAGES) * PAGE_SIZE <= file.size &&
    Array.from({ length: FOLIO_PAGES }, (_, i) => first + i).every((i) => !file.pages.has(i));
  if (!huge) {
    const pfn = kvm.phys.alloc();
    file.pages.set(index, pfn);
    file.orders.set(index, 0);
    if (privateMemoryOn(kvm) && convertAtAllocation(kvm)) rmpAssign(kvm, pfn, 3);
    return;
  }
  const base = kvm.phys.allocContiguous(FOLIO_PAGES);
  for (let i = 0; i < FOLIO_PAGES; i++) {
    file.pages.set(first + i, base + i);
    file.orders.set(first + i, 9);
    if (convertAtAllocation(kvm)) rmpAssign(kvm, base + i, 2);
  }
}

/** RMPUPDATE to assigned (private) at a level. */
export function rmpAssign(kvm: Kvm, pfn: number, level: 2 | 3): void {
  kvm.ops.mark({ t: 'rmp', op: 'assign', pfn, level, wasAssigned: kvm.rmp.get(pfn)?.assigned === true });
  kvm.rmp.set(pfn, { assigned: true, level });
}

/** RMPUPDATE back to shared. */
function rmpRevert(kvm: Kvm, pfn: number): void {
  kvm.ops.mark({ t: 'rmp', op: 'revert', pfn, wasAssigned: kvm.rmp.get(pfn)?.assigned === true });
  kvm.rmp.delete(pfn);
}

/** PSMASH: a 2 MiB entry becomes 4 KiB entries (this pfn's part of it). */
function rmpSmash(kvm: Kvm, pfn: number): void {
  const entry = kvm.rmp.get(pfn);
  if (!entry) return;
  kvm.ops.mark({ t: 'rmp', op: 'smash', pfn, wasAssigned: entry.assigned });
  entry.level = 3;
}

/** A gmem page is freed: back to shared. The rest of a 2 MiB RMP entry is smashed to 4 KiB entries. */
export function onGmemFree(kvm: Kvm, file: EngineGmem, index: number, pfn: number): void {
  if (!privateMemoryOn(kvm)) return;
  const entry = kvm.rmp.get(pfn);
  if (entry?.level === 2) {
    const first = index - (index % FOLIO_PAGES);
    for (let i = first; i < first + FOLIO_PAGES; i++) {
      const other = file.pages.get(i);
      if (other !== undefined) rmpSmash(kvm, other);
    }
  }
  if (entry?.assigned) rmpRevert(kvm, pfn);
}

/** KVM_SET_MEMORY_ATTRIBUTES: validate, zap and flush the range, then record the attribute. */
export function kvmSetMemoryAttributes(kvm: Kvm, cmd: SetMemoryAttributes): Outcome {
  if (!privateMemoryOn(kvm)) return { kind: 'err', errno: 'EINVAL' };
  if (cmd.flags || cmd.attributes & ~KVM_MEMORY_ATTRIBUTE_PRIVATE) return { kind: 'err', errno: 'EINVAL' };
  if (!cmd.size || cmd.gpa + cmd.size < cmd.gpa || !isAligned(cmd.gpa, PAGE_SIZE) || !isAligned(cmd.size, PAGE_SIZE))
    return { kind: 'err', errno: 'EINVAL' };
  if (!kvm.mutation.on(ATTRIBUTES_SKIP_ZAP)) kvmUnmapRange(kvm, cmd.gpa, cmd.gpa + cmd.size, 'memory-attributes');
  const priv = (cmd.attributes & KVM_MEMORY_ATTRIBUTE_PRIVATE) !== 0;
  for (let gfn = cmd.gpa / PAGE_SIZE; gfn < (cmd.gpa + cmd.size) / PAGE_SIZE; gfn++) {
    if (priv) kvm.privateGfns.add(gfn);
    else kvm.privateGfns.delete(gfn);
  }
  return { kind: 'ok' };
}
