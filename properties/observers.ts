// Invariants a VMM can check from what it observes: the KVM_EXIT_MEMORY_FAULT contract, dirty
// logging completeness, and READONLY memslots. They apply to every backend's outcomes (the spec's
// too, as a sanity check of the spec itself).
import {
  KVM_EXIT_HLT,
  KVM_MEM_LOG_DIRTY_PAGES,
  KVM_MEM_READONLY,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  KVM_MEMORY_EXIT_FLAG_PRIVATE,
  PAGE_SIZE,
  hex,
} from '../model/abi.js';
import {
  KVM_MEMFAULT_VALID_REASONS,
  KVM_MEMORY_EXIT_FLAG_USERFAULT,
  memoryFaultExitReason,
} from '../model/series-abi.js';
import { seriesOn } from '../model/series.js';
import type { Command, GuestAccess } from '../model/commands.js';
import { findSlot } from '../model/memslots.js';
import { isMemoryFaultReason } from '../model/observable.js';
import { bigintAsHex, copyRun, type KvmRunState, type Outcome } from '../model/outcomes.js';
import type { SpecState } from '../model/state.js';
import type { PreContext, StepContext } from './context.js';

const sameRun = (a: KvmRunState, b: KvmRunState): boolean =>
  JSON.stringify(a, bigintAsHex) === JSON.stringify(b, bigintAsHex);

/** The access and its KVM_RUN outcome, also out of a race. */
export function accessesOf(cmd: Command, outcome: Outcome): { access: GuestAccess; outcome: Outcome }[] {
  if (cmd.kind === 'guestAccess') return [{ access: cmd, outcome }];
  if (cmd.kind === 'raceAccess' && outcome.kind === 'race') return [{ access: cmd.access, outcome: outcome.access }];
  return [];
}

/**
 * memfault-contract (UPSTREAM.md; INV-14, INV-15, INV-17, INV-20):
 *  - KVM_EXIT_MEMORY_FAULT accompanies rc -1 with errno EFAULT or EHWPOISON (or rc 0, where the
 *    memfault-2023 option OQ-1 says so), never another errno when this call wrote it;
 *  - with that combination the payload is a memory_fault whose [gpa, gpa+size) covers part of the
 *    faulting access (so a payload left over from another access is caught), with only the flags
 *    the configuration defines: PRIVATE exactly for a private access, USERFAULT under userfault,
 *    the 2023 reason bits only with their option;
 *  - on x86 every -EFAULT from a guest access is annotated (no false negatives), unless the 2023
 *    opt-in design (OQ-2) is chosen, which INV-17 rejects.
 */
export function checkMemfaultContract(
  state: SpecState,
  access: GuestAccess,
  outcome: Outcome,
  before: KvmRunState,
): string[] {
  if (outcome.kind !== 'run') return [];
  const out: string[] = [];
  const { run } = outcome;
  const config = state.config;
  const v2023 = seriesOn(config, 'memfault-2023');
  const isMf = run.exitReason === memoryFaultExitReason(config);
  const writtenNow = isMf && !sameRun(run, before);
  const zeroAllowed = v2023 && config.options.memfaultReturn === 'zero';
  if (isMf && outcome.rc === 0 && !zeroAllowed) out.push('exit_reason is MEMORY_FAULT but KVM_RUN returned 0');
  if (writtenNow && outcome.rc === -1 && outcome.errno !== 'EFAULT' && outcome.errno !== 'EHWPOISON') {
    out.push(`KVM_RUN wrote a memory_fault exit but failed with errno ${outcome.errno}, not EFAULT/EHWPOISON`);
  }
  const valid =
    isMf && ((outcome.rc === 0 && zeroAllowed) || outcome.errno === 'EFAULT' || outcome.errno === 'EHWPOISON');
  if (valid) {
    const p = run.payload;
    if (p.kind !== 'memoryFault') out.push(`exit_reason MEMORY_FAULT but the union last held ${p.kind}`);
    else {
      const covers = p.size > 0 && p.gpa < access.gpa + access.len && access.gpa < p.gpa + p.size;
      if (!covers)
        out.push(
          `memory_fault {gpa ${hex(p.gpa)}, size ${hex(p.size)}} does not cover the access at ${hex(access.gpa)} ` +
            `(len ${access.len})`,
        );
      const allowed =
        KVM_MEMORY_EXIT_FLAG_PRIVATE |
        (seriesOn(config, 'userfault') ? KVM_MEMORY_EXIT_FLAG_USERFAULT : 0) |
        (v2023 && config.options.memfaultReasonFlags ? KVM_MEMFAULT_VALID_REASONS : 0);
      if (p.flags & ~allowed)
        out.push(`memory_fault.flags ${hex(p.flags)} has bits this configuration does not define`);
      if (((p.flags & KVM_MEMORY_EXIT_FLAG_PRIVATE) !== 0) !== (access.private === true)) {
        out.push(
          `memory_fault.flags ${hex(p.flags)}: PRIVATE must be set exactly for a private access (this one is ` +
            `${access.private ? 'private' : 'shared'})`,
        );
      }
    }
  }
  const optIn = v2023 && config.options.memfaultOptIn;
  if (state.arch === 'x86' && !optIn && outcome.rc === -1 && outcome.errno === 'EFAULT' && !isMf) {
    out.push('x86 KVM_RUN failed with EFAULT without a KVM_EXIT_MEMORY_FAULT annotation');
  }
  return out;
}

/**
 * dirty-no-lost-write (INV-22): every page a completed guest write touched in a logged slot is in
 * the next KVM_GET_DIRTY_LOG (classic) or stays reported until KVM_CLEAR_DIRTY_LOG (manual).
 */
export class DirtyWriteTracker {
  /** `${as}:${id}` -> slot-relative pages written since they were last harvested. */
  private readonly written = new Map<string, Set<number>>();

  /** Call before the command is applied, with the spec state as it was. */
  observe(before: SpecState, cmd: Command, outcome: Outcome): string[] {
    const key = (as: number, id: number): string => `${as}:${id}`;
    if (cmd.kind === 'setMemslot') {
      // A move or flags change that keeps logging keeps the bitmap (kvm_prepare_memory_region).
      const old = before.slots.find((s) => s.as === cmd.as && s.id === cmd.slot);
      const keepsBitmap = !!old?.dirtyLog && cmd.size > 0 && (cmd.flags & KVM_MEM_LOG_DIRTY_PAGES) !== 0;
      if (outcome.kind === 'ok' && !keepsBitmap) this.written.delete(key(cmd.as, cmd.slot));
      return [];
    }
    if (
      cmd.kind === 'guestAccess' &&
      cmd.write &&
      outcome.kind === 'run' &&
      outcome.rc === 0 &&
      outcome.run.exitReason === KVM_EXIT_HLT
    ) {
      for (let addr = cmd.gpa; addr < cmd.gpa + cmd.len; addr = (Math.floor(addr / PAGE_SIZE) + 1) * PAGE_SIZE) {
        const gfn = Math.floor(addr / PAGE_SIZE);
        const slot = findSlot(before, 0, gfn);
        if (!slot?.dirtyLog) continue;
        const k = key(slot.as, slot.id);
        if (!this.written.has(k)) this.written.set(k, new Set());
        this.written.get(k)!.add(gfn - slot.baseGfn);
      }
      return [];
    }
    if (cmd.kind === 'getDirtyLog' && outcome.kind === 'dirtyLog') {
      const k = key(cmd.as, cmd.slot);
      const pending = this.written.get(k) ?? new Set<number>();
      const reported = new Set(outcome.dirty);
      const lost = [...pending].filter((p) => !reported.has(p)).sort((a, b) => a - b);
      if (!(before.manualDirtyLog & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)) this.written.delete(k);
      return lost.length
        ? [
            `slot ${k}: guest wrote pages [${lost.join(',')}] since the last harvest but KVM_GET_DIRTY_LOG does not ` +
              `report them`,
          ]
        : [];
    }
    if (cmd.kind === 'clearDirtyLog' && outcome.kind === 'ok') {
      const pending = this.written.get(key(cmd.as, cmd.slot));
      for (let p = cmd.firstPage; p < cmd.firstPage + cmd.numPages; p++) pending?.delete(p);
    }
    return [];
  }
}

/**
 * readonly-no-write (INV-39): the hva bytes a guest write to a READONLY slot targets, before the
 * write. Plain accesses only: in a race the host command may legitimately change those bytes
 * (the differential covers races).
 */
export function readonlyTargets(spec: SpecState, cmd: Command): { hva: number; gpa: number }[] {
  const access = cmd.kind === 'guestAccess' ? cmd : null;
  if (!access?.write) return [];
  const out: { hva: number; gpa: number }[] = [];
  for (let i = 0; i < access.len; i++) {
    const gpa = access.gpa + i;
    const slot = findSlot(spec, 0, Math.floor(gpa / PAGE_SIZE));
    if (slot && slot.flags & KVM_MEM_READONLY) out.push({ gpa, hva: slot.hva + gpa - slot.baseGfn * PAGE_SIZE });
  }
  return out;
}

/** kvm_run of every vCPU before the command, as each backend left it (memfault-contract's snapshot). */
export interface RunsBefore {
  readonly spec: readonly KvmRunState[];
  readonly engine: readonly KvmRunState[];
}

export const runsBefore = (pre: PreContext): RunsBefore => ({
  spec: pre.spec.vcpus.map(copyRun),
  engine: pre.engine.kvm.runs.map(copyRun),
});

/** memfault-contract after one command: the contract on both backends, and no stale engine payload. */
export function checkMemfaultStep(ctx: StepContext, before: RunsBefore): string[] {
  const out: string[] = [];
  for (const [label, outcome, runs] of [
    ['spec', ctx.specOutcome, before.spec],
    ['engine', ctx.engineOutcome, before.engine],
  ] as const) {
    for (const a of accessesOf(ctx.cmd, outcome)) {
      const found = checkMemfaultContract(ctx.spec, a.access, a.outcome, runs[a.access.vcpu]!);
      out.push(...found.map((m) => `${label}: ${m}`));
    }
  }
  const kvm = ctx.engine.kvm;
  for (const a of accessesOf(ctx.cmd, ctx.engineOutcome)) {
    const o = a.outcome;
    const claimsPayload =
      o.kind === 'run' &&
      (o.rc === 0 || o.errno === 'EFAULT') &&
      isMemoryFaultReason(o.run.exitReason) &&
      o.run.payload.kind === 'memoryFault';
    if (claimsPayload && kvm.payloadWrittenInRun[a.access.vcpu] !== kvm.runSerial)
      out.push('engine: memory_fault payload was written by an earlier KVM_RUN');
  }
  return out;
}

/** The bytes a guest write to a READONLY slot targets, as they were before it (readonly-no-write). */
export type ReadonlyWatch = readonly { hva: number; gpa: number; byte: number | undefined }[];

export const readonlySnapshot = (pre: PreContext): ReadonlyWatch =>
  readonlyTargets(pre.spec, pre.cmd).map((t) => ({ ...t, byte: pre.engine.kvm.host.readBytes(t.hva, 1)[0] }));

/** readonly-no-write (INV-39): none of the watched bytes changed. */
export function checkReadonlyNoWrite(ctx: StepContext, watch: ReadonlyWatch): string[] {
  const changed = watch.filter((w) => ctx.engine.kvm.host.readBytes(w.hva, 1)[0] !== w.byte);
  return changed.slice(0, 3).map((w) => `guest write to READONLY gpa ${hex(w.gpa)} changed hva ${hex(w.hva)}`);
}
