// Invariants of the proposed series (SPEC-DIGEST 3), checked after every command on the engine and
// its event log. Each is vacuous while its series is off. One function per invariant; invariants.ts
// registers them with their statements and sources.
import { PAGE_SIZE, hex } from '../model/abi.js';
import {
  KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_UNLOCK,
  KVM_CAP_ARM_LOCK_USER_MEMORY_REGION,
  KVM_MEM_USERFAULT,
} from '../model/series-abi.js';
import type { MmuEvent } from '../src/mmu/ops.js';
import { leaves, levelSize, pagesPerLevel, translate } from '../src/mmu/pgtable.js';
import type { PreContext, StepContext } from './context.js';
import { formatFinding } from './findings.js';

const MAX = 3;
const limit = (out: string[]): string[] =>
  out.length > MAX ? [...out.slice(0, MAX), `... and ${out.length - MAX} more`] : out;

/** The spec's memslots before a command (id, flags, placement), for checks on what a change did. */
export type SlotsBefore = readonly { as: number; id: number; flags: number; baseGfn: number; npages: number }[];

/** Snapshot for the userfault invariants: only a memslot change needs the slots as they were. */
export const slotsBefore = (pre: PreContext): SlotsBefore =>
  pre.cmd.kind !== 'setMemslot'
    ? []
    : pre.spec.slots.map((s) => ({ as: s.as, id: s.id, flags: s.flags, baseGfn: s.baseGfn, npages: s.npages }));

/** The FLAGS_ONLY change this command made to a memslot, if any: flags before and after. */
function flagsChange(
  ctx: StepContext,
  slots: SlotsBefore,
): { before: number; after: number; start: number; end: number } | undefined {
  const cmd = ctx.cmd;
  if (cmd.kind !== 'setMemslot' || ctx.engineOutcome.kind !== 'ok' || cmd.size === 0) return undefined;
  const old = slots.find((s) => s.as === cmd.as && s.id === cmd.slot);
  if (!old || old.baseGfn * PAGE_SIZE !== cmd.gpa) return undefined;
  return { before: old.flags, after: cmd.flags, start: cmd.gpa, end: cmd.gpa + cmd.size };
}

/**
 * userfault-enable-zaps (INV-8): once a FLAGS_ONLY change turning USERFAULT on returns, the slot has no stage-2 leaf.
 */
export function checkUserfaultEnableZaps(ctx: StepContext, slots: SlotsBefore): string[] {
  const change = flagsChange(ctx, slots);
  if (!change || ctx.cmd.kind !== 'setMemslot' || ctx.cmd.as !== 0) return [];
  if (change.before & KVM_MEM_USERFAULT || !(change.after & KVM_MEM_USERFAULT)) return [];
  const left = [...leaves(ctx.engine.kvm.root)].filter(
    (l) => l.ipaBase < change.end && change.start < l.ipaBase + levelSize(l.leaf.level),
  );
  return limit(
    left.map(
      (l) =>
        `USERFAULT turned on for [${hex(change.start)}, ${hex(change.end)}) but ipa ${hex(l.ipaBase)} is still mapped`,
    ),
  );
}

/**
 * userfault-no-zap-on-disable (INV-10, OQ-7, BUG-18): with zapOnUserfaultDisable off, turning USERFAULT off changes no
 * stage-2 entry.
 */
export function checkUserfaultNoZapOnDisable(ctx: StepContext, slots: SlotsBefore): string[] {
  const change = flagsChange(ctx, slots);
  if (!change || ctx.spec.config.options.zapOnUserfaultDisable) return [];
  if (!(change.before & KVM_MEM_USERFAULT) || change.after & KVM_MEM_USERFAULT) return [];
  const zapped = ctx.events.filter((e) => e.t === 'pte' && e.old.kind === 'leaf' && e.new.kind === 'invalid').length;
  const cmos = ctx.events.filter((e) => e.t === 'cmo').length;
  return zapped
    ? [
        `turning USERFAULT off invalidated ${zapped} stage-2 leaves (${cmos} CMOs) although zapOnUserfaultDisable ` +
          `is off`,
      ]
    : [];
}

/**
 * rmp-follows-allocation (INV-32, INV-33): with conversion at allocation, every allocated
 * guest_memfd page is assigned in the RMP and nothing else is; a 2 MiB folio keeps its 2 MiB entry
 * until one of its pages is freed (a 4 KiB mapping never shrinks it). With conversion at fault,
 * every private mapping's pages are assigned and only allocated pages are. And the RMP updates the
 * command made (its event log) never assign an assigned page or revert one that is not assigned:
 * RMPUPDATE of a page in the wrong state is what the hardware faults on.
 */
export function checkRmp(ctx: StepContext): string[] {
  const kvm = ctx.engine.kvm;
  const out = rmpUpdateProblems(ctx.events);
  const allocated = new Map<number, { order: number; intact: boolean }>();
  for (const file of kvm.gmems) {
    // A 2 MiB folio is intact while all 512 of its file pages are still allocated.
    const livePerFolio = new Map<number, number>();
    for (const [index] of file.pages)
      if (file.orders.get(index) === 9)
        livePerFolio.set(index - (index % 512), (livePerFolio.get(index - (index % 512)) ?? 0) + 1);
    for (const [index, pfn] of file.pages) {
      const order = file.orders.get(index) ?? 0;
      allocated.set(pfn, { order, intact: order === 9 && livePerFolio.get(index - (index % 512)) === 512 });
    }
  }
  for (const [pfn, entry] of kvm.rmp) {
    if (entry.assigned && !allocated.has(pfn))
      out.push(`rmp: pfn ${pfn} is assigned private but guest_memfd does not hold it`);
  }
  if (kvm.config.options.rmpConversion === 'allocation') {
    for (const [pfn, page] of allocated) {
      const entry = kvm.rmp.get(pfn);
      if (!entry?.assigned)
        out.push(`rmp: guest_memfd pfn ${pfn} is allocated but not assigned private (RMP must follow allocation)`);
      else if (page.intact && entry.level !== 2)
        out.push(`rmp: pfn ${pfn} of an intact 2 MiB folio has a 4 KiB RMP entry (the RMP was shrunk)`);
    }
  } else {
    for (const { leaf } of leaves(kvm.root)) {
      if (!leaf.private) continue;
      for (let i = 0; i < pagesPerLevel(leaf.level); i++) {
        if (!kvm.rmp.get(leaf.pfn + i)?.assigned)
          out.push(`rmp: pfn ${leaf.pfn + i} is mapped private but not assigned`);
      }
    }
  }
  return limit(out);
}

/** Conversions the RMP's state did not allow, from the command's RMP events. */
function rmpUpdateProblems(events: readonly MmuEvent[]): string[] {
  const out: string[] = [];
  for (const ev of events) {
    if (ev.t !== 'rmp') continue;
    // A revert of an unassigned page cannot be logged: rmpRevert runs only for assigned entries.
    if (ev.op === 'assign' && ev.wasAssigned) out.push(`rmp: pfn ${ev.pfn} converted to private twice`);
  }
  return out;
}

/**
 * private-max-level (INV-34): a private leaf is no larger than its folio and than the RMP entry of every page under it.
 */
export function checkPrivateMaxLevel(ctx: StepContext): string[] {
  const kvm = ctx.engine.kvm;
  const out: string[] = [];
  for (const { leaf, ipaBase } of leaves(kvm.root)) {
    if (!leaf.private || leaf.level === 3) continue;
    for (let i = 0; i < pagesPerLevel(leaf.level); i++) {
      const rmpLevel = kvm.rmp.get(leaf.pfn + i)?.level ?? 3;
      if (rmpLevel > leaf.level) {
        out.push(
          `private ${levelSize(leaf.level) / 1024} KiB mapping at ipa ${hex(ipaBase)} covers pfn ${leaf.pfn + i}, ` +
            `whose RMP entry is 4 KiB`,
        );
        break;
      }
    }
  }
  return limit(out);
}

const isUnlock = (ctx: StepContext): boolean =>
  ctx.cmd.kind === 'enableCap' &&
  ctx.cmd.cap === KVM_CAP_ARM_LOCK_USER_MEMORY_REGION &&
  ctx.cmd.flags === KVM_ARM_LOCK_USER_MEMORY_REGION_FLAGS_UNLOCK &&
  ctx.engineOutcome.kind === 'ok';

/** lock-unlock-keeps-stage2 (INV-29): a successful unlock writes no stage-2 entry. */
export function checkUnlockKeepsStage2(ctx: StepContext): string[] {
  if (!isUnlock(ctx)) return [];
  const writes = ctx.events.filter((e) => e.t === 'pte').length;
  return writes ? [`unlock changed ${writes} stage-2 entries; it must only unpin`] : [];
}

/**
 * locked-means-mapped (INV-31): from a successful lock until unlock, every page of the slot is
 * mapped at stage 2 with at least the lock's permissions (write until dirty logging write-protects it),
 * unless the VMM itself changed the locked host range (out of scope, SPEC-DIGEST INV-31).
 */
export function checkLockedMeansMapped(ctx: StepContext): string[] {
  const out: string[] = [];
  for (const [id, lock] of ctx.spec.locked) {
    const slot = ctx.spec.slots.find((s) => s.as === 0 && s.id === id);
    if (!slot || !lock.intact) continue;
    const needWrite = lock.writeMapped;
    for (let gpa = slot.baseGfn * PAGE_SIZE; gpa < (slot.baseGfn + slot.npages) * PAGE_SIZE; ) {
      const t = translate(ctx.engine.kvm.root, gpa);
      if (!t || (needWrite && !t.leaf.perms.w)) {
        out.push(
          `locked slot ${id}: gpa ${hex(gpa)} is ` +
            `${t ? 'mapped read-only under a write lock' : 'not mapped at stage 2'}`,
        );
        break;
      }
      gpa = t.ipaBase + levelSize(t.leaf.level);
    }
  }
  return limit(out);
}

/** The unmap sections of the event log, each with its events. */
function unmapSections(
  events: readonly MmuEvent[],
): { start: number; end: number; path: string; events: MmuEvent[] }[] {
  const out: { start: number; end: number; path: string; events: MmuEvent[] }[] = [];
  let cur: (typeof out)[number] | null = null;
  for (const ev of events) {
    if (ev.t === 'unmap-start') cur = { start: ev.start, end: ev.end, path: ev.path, events: [] };
    else if (ev.t === 'unmap-end' && cur) {
      out.push(cur);
      cur = null;
    } else cur?.events.push(ev);
  }
  return out;
}

interface Removed {
  ipa: number;
  end: number;
  pfn: number;
  pages: number;
  phase: 'invalidated' | 'published' | 'flushing' | 'completed';
}

/**
 * One pass over an unmap's events. Each leaf made unreachable (invalidated itself, or cut off with
 * its table) moves through: invalidated -> published (a DSB) -> flushing (a covering TLBI issued
 * after that) -> completed (a DSB). Reports CMOs of a frame whose removal is not completed yet,
 * table pages freed while any removal is incomplete, and removals still incomplete at return.
 * Returns the removals for the CMO coverage check.
 */
function walkUnmap(events: readonly MmuEvent[], where: string, out: string[]): Removed[] {
  const all: Removed[] = [];
  let open: Removed[] = [];
  const openSmall = new Map<number, Removed>();
  const close = (r: Removed): void => {
    if (r.pages === 1 && openSmall.get(r.pfn) === r) openSmall.delete(r.pfn);
  };
  for (const ev of events) {
    if (ev.t === 'pte' && ev.new.kind === 'invalid' && ev.old.kind !== 'invalid') {
      const gone = ev.old.kind === 'leaf' ? [{ ipa: ev.ipa, level: ev.level, pfn: ev.old.pfn }] : (ev.detached ?? []);
      for (const g of gone) {
        const r: Removed = {
          ipa: g.ipa,
          end: g.ipa + levelSize(g.level),
          pfn: g.pfn,
          pages: pagesPerLevel(g.level),
          phase: 'invalidated',
        };
        // The TLBI must cover what the broken entry translated (a table entry: its whole range).
        if (ev.old.kind === 'table') [r.ipa, r.end] = [ev.ipa, ev.ipa + levelSize(ev.level)];
        all.push(r);
        open.push(r);
        if (r.pages === 1) openSmall.set(r.pfn, r);
      }
    } else if (ev.t === 'dsb') {
      for (const r of open) {
        if (r.phase === 'invalidated') r.phase = 'published';
        else if (r.phase === 'flushing') {
          r.phase = 'completed';
          close(r);
        }
      }
      open = open.filter((r) => r.phase !== 'completed');
    } else if (ev.t === 'tlbi') {
      for (const r of open)
        if (r.phase === 'published' && (ev.kind === 'vmid' || (ev.start <= r.ipa && ev.end >= r.end)))
          r.phase = 'flushing';
    } else if (ev.t === 'cmo') {
      const hit =
        ev.pages <= 512
          ? Array.from({ length: ev.pages }, (_, i) => openSmall.get(ev.pfn + i)).find((r) => r !== undefined)
          : open.find((r) => r.pfn < ev.pfn + ev.pages && ev.pfn < r.pfn + r.pages);
      const big = hit ?? open.find((r) => r.pages > 1 && r.pfn < ev.pfn + ev.pages && ev.pfn < r.pfn + r.pages);
      if (big)
        out.push(
          `${where}: CMO of pfn ${ev.pfn} before the TLBI for ipa ${hex(big.ipa)} completed (the guest can re-dirty ` +
            `the lines)`,
        );
    } else if (ev.t === 'free' && open.length) {
      out.push(`${where}: table ${ev.table} freed while a TLBI for the range was still pending`);
    }
  }
  for (const r of open.slice(0, 1))
    out.push(`${where}: ipa ${hex(r.ipa)} made unreachable but no TLBI issued after a DSB was completed before return`);
  return all;
}

/**
 * unmap-ordering (INV-3, INV-5): inside every unmap, each removed leaf is (1) invalidated and made
 * visible by a DSB, (2) covered by a TLBI issued after that and completed by a DSB, (3) cleaned by
 * CMOs only after that completion; no table page is freed while such an invalidation is still
 * pending; all before the unmap returns.
 */
export function checkUnmapOrdering(ctx: StepContext): string[] {
  const out: string[] = [];
  for (const section of unmapSections(ctx.events)) {
    walkUnmap(section.events, `${section.path} unmap of [${hex(section.start)}, ${hex(section.end)})`, out);
  }
  return limit([...new Set(out)]);
}

/** cmo-coverage (INV-4): without FEAT_S2FWB every leaf an unmap removes is cleaned to PoC before it returns. */
export function checkCmoCoverage(ctx: StepContext): string[] {
  if (ctx.spec.config.options.s2fwb) return [];
  const out: string[] = [];
  for (const section of unmapSections(ctx.events)) {
    // Cleaned frames as sorted, merged intervals; each removed leaf's frames must lie inside one.
    const cmos = section.events
      .filter((e): e is Extract<MmuEvent, { t: 'cmo' }> => e.t === 'cmo')
      .sort((a, b) => a.pfn - b.pfn);
    const merged: [number, number][] = [];
    for (const c of cmos) {
      const last = merged[merged.length - 1];
      if (last && c.pfn <= last[1]) last[1] = Math.max(last[1], c.pfn + c.pages);
      else merged.push([c.pfn, c.pfn + c.pages]);
    }
    const covered = (pfn: number, pages: number): boolean => {
      let lo = 0;
      let hi = merged.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        const [a, b] = merged[mid]!;
        if (pfn < a) hi = mid - 1;
        else if (pfn >= b) lo = mid + 1;
        else return pfn + pages <= b;
      }
      return false;
    };
    for (const r of walkUnmap(section.events, '', [])) {
      if (!covered(r.pfn, r.pages))
        out.push(
          `${section.path} unmap: ipa ${hex(r.ipa)} (pfn ${r.pfn}) removed without a clean+invalidate to PoC (no ` +
            `FEAT_S2FWB)`,
        );
    }
  }
  return limit(out);
}

/** tlbi-choice (INV-7): range TLBIs only with FEAT_TLBIRANGE. */
export function checkTlbiChoice(ctx: StepContext): string[] {
  if (ctx.spec.config.options.tlbiRange) return [];
  const bad = ctx.events.filter((e) => e.t === 'tlbi' && e.kind === 'range');
  return bad.length
    ? [`${bad.length} range TLBI(s) issued without FEAT_TLBIRANGE (must be per-IPA or a VMID flush)`]
    : [];
}

/** fast-equals-slow (INV-6): the engine's comparison of each fast unmap with the slow walker on a copy. */
export function checkFastEqualsSlow(ctx: StepContext): string[] {
  return limit(ctx.findings.map(formatFinding));
}

/** uffd-liveness (INV-21, INV-37): in a demand-paging episode the spec allows, every vCPU finishes. */
export function checkUffdLiveness(ctx: StepContext): string[] {
  const o = ctx.engineOutcome;
  if (ctx.specOutcome.kind !== 'episode' || o.kind !== 'episode' || o.completed) return [];
  return [`demand paging made no progress: ${o.stuck ?? 'stuck'}`];
}

/**
 * uffd-protocol (INV-36, INV-38): exactly one successful UFFDIO_COPY per missing page; readers leave only through their
 * pipe.
 */
export function checkUffdProtocol(ctx: StepContext): string[] {
  const report = ctx.cmd.kind === 'demandPaging' ? ctx.engine.lastEpisode : null;
  if (!report) return [];
  const out: string[] = [];
  for (const end of report.ends) {
    if (end.kind === 'reader-exit')
      out.push(
        `reader${end.reader}: exited on ${end.errno} for hva ${hex(end.hva)} ` +
          '(readers may exit only through their pipe, INV-38)',
      );
  }
  for (const [hva, n] of report.copies)
    if (n > 1) out.push(`hva ${hex(hva)}: ${n} UFFDIO_COPYs succeeded; exactly one may, the rest must get EEXIST`);
  return limit(out);
}
