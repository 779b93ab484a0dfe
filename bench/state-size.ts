// State size: the per-command cost with every invariant on, in a small state and a large one, in
// one run. The state is built without checks (spec and engine applied directly), then a fixed mix
// of commands runs through Session.run (all invariants). A ratio near 1 means the checks cost
// O(what the command changed), not O(state). Run: node dist/bench/state-size.js [--rounds N]
import { KVM_MEM_LOG_DIRTY_PAGES, PAGE_SIZE, SZ_2M } from '../model/abi.js';
import type { Backing, Command } from '../model/commands.js';
import { applyCommand } from '../model/spec.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { Session } from '../src/harness/session.js';
import { positiveIntArg } from './args.js';

const BIG_HVA = 0x1_0000_0000;
const BIG_GPA = 0x1_0000_0000;
/** A small second slot the dirty-log and flags commands work on (their own cost is O(that slot)). */
const SMALL_HVA = 0x8000_0000;
const SMALL_GPA = 0x4000_0000;
const SMALL_PAGES = 16;

type Raw = Exclude<Command, { kind: 'raceAccess' }>;

/** Apply to spec and engine without any invariant (the setup is not what is measured). */
function setup(session: Session, cmd: Raw): void {
  applyCommand(session.spec, cmd);
  session.engine.apply(cmd);
}

const access = (gpa: number, write: boolean, value = 0x5an): Raw => ({
  kind: 'guestAccess',
  vcpu: 0,
  gpa,
  len: 8,
  write,
  value,
});

function build(units: number, backing: Backing): { session: Session; unit: number } {
  const unit = backing === 'thp' ? SZ_2M : PAGE_SIZE;
  const session = new Session({ arch: 'x86', mutant: null, invariants: new Set(INVARIANT_IDS) });
  const size = units * unit;
  setup(session, { kind: 'mmap', hva: BIG_HVA, size, prot: 'rw', backing });
  setup(session, { kind: 'setMemslot', api: 'v1', slot: 0, as: 0, flags: 0, gpa: BIG_GPA, size, hva: BIG_HVA });
  const small = SMALL_PAGES * PAGE_SIZE;
  setup(session, { kind: 'mmap', hva: SMALL_HVA, size: small, prot: 'rw', backing: 'anon' });
  setup(session, {
    kind: 'setMemslot',
    api: 'v1',
    slot: 1,
    as: 0,
    flags: 0,
    gpa: SMALL_GPA,
    size: small,
    hva: SMALL_HVA,
  });
  for (let i = 0; i < units; i++) setup(session, access(BIG_GPA + i * unit, true, BigInt(i + 1)));
  for (let i = 0; i < SMALL_PAGES; i++) setup(session, access(SMALL_GPA + i * PAGE_SIZE, true));
  return { session, unit };
}

/** One round of the mix; `r` moves the addresses so rounds do not repeat one page. */
function mix(units: number, unit: number, r: number): Raw[] {
  const at = (k: number): number => BIG_GPA + ((r * 7 + k) % units) * unit;
  const hva = (k: number): number => BIG_HVA + ((r * 7 + k) % units) * unit;
  const small = SMALL_PAGES * PAGE_SIZE;
  const flags = r % 2 ? 0 : KVM_MEM_LOG_DIRTY_PAGES;
  return [
    access(at(0), true, BigInt(r + 7)),
    access(at(1), false),
    access(0x7000_0000, false), // no memslot: an MMIO exit
    { kind: 'mprotect', hva: hva(2), size: PAGE_SIZE, prot: 'r' },
    access(at(2) + 8, false),
    { kind: 'mprotect', hva: hva(2), size: PAGE_SIZE, prot: 'rw' },
    { kind: 'munmap', hva: hva(3), size: PAGE_SIZE },
    access(at(3), false), // now unmapped in the host
    { kind: 'hostWrite', hva: SMALL_HVA + (r % SMALL_PAGES) * PAGE_SIZE, len: 8, value: BigInt(r) },
    { kind: 'setMemslot', api: 'v1', slot: 1, as: 0, flags, gpa: SMALL_GPA, size: small, hva: SMALL_HVA },
    access(SMALL_GPA + (r % SMALL_PAGES) * PAGE_SIZE, true),
    { kind: 'getDirtyLog', slot: 1, as: 0 },
  ];
}

/** Microseconds per command over `rounds` rounds of the mix. */
function perCommandUs(units: number, backing: Backing, rounds: number): number {
  const { session, unit } = build(units, backing);
  // The setup bypassed the checks: one command takes in everything it changed (a full compare).
  session.run(access(0x7000_0000, false));
  let commands = 0;
  const started = performance.now();
  for (let r = 0; r < rounds; r++) {
    for (const cmd of mix(units, unit, r)) {
      session.run(cmd);
      commands++;
    }
  }
  const us = ((performance.now() - started) * 1000) / commands;
  session.finish();
  return us;
}

export async function measure(rounds = 4): Promise<Record<string, number>> {
  perCommandUs(16, 'anon', rounds); // warm-up: the first session pays for the JIT
  const pages16 = perCommandUs(16, 'anon', rounds);
  const pages16k = perCommandUs(16_384, 'anon', rounds);
  const thp16 = perCommandUs(16, 'thp', rounds);
  const thp1k = perCommandUs(1_024, 'thp', rounds);
  return {
    perCommandUsPages16: Math.round(pages16),
    perCommandUsPages16k: Math.round(pages16k),
    perCommandUsThp16: Math.round(thp16),
    perCommandUsThp1k: Math.round(thp1k),
    perCommandRatioPages16k: Number((pages16k / pages16).toFixed(2)),
    perCommandRatioThp1k: Number((thp1k / thp16).toFixed(2)),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const keys = await measure(positiveIntArg('rounds', 4));
  console.log(`4 KiB pages: ${keys.perCommandUsPages16} us/command at 16, ${keys.perCommandUsPages16k} at 16,384`);
  console.log(`THP blocks:  ${keys.perCommandUsThp16} us/command at 16, ${keys.perCommandUsThp1k} at 1,024`);
  console.log(`ratios (target <= 2): pages ${keys.perCommandRatioPages16k}, THP ${keys.perCommandRatioThp1k}`);
  console.log(JSON.stringify(keys));
}
