// The three-way differential's speed (issue 11 target 6): one fixed set of sequences (the campaign's
// arbitraries at a seed: x86, upstream, the kernel's generator limits), run through spec + engine and
// through spec + engine + the real kernel in the same process, interleaved chunk by chunk so drift on
// a shared machine hits both sides alike. Both sides run the same concrete commands: the sequences are
// resolved once (a recording pass on the kernel, which also warms the JIT and the helper), and the
// commands the kernel backend leaves out are left out of both. The spec runs under this machine's
// platform profile (pvm-6.18), as the kvm tests do.
// KVM_MEMMODEL_BASELINE_HELPER=PATH adds a third side, the same sequences on another build of the
// helper (one that speaks this protocol: to measure a helper change in one run); its figure is
// printed, not returned.
// Run: node dist/bench/three-way.js [--runs N --seed N]
import fc from 'fast-check';
import { positiveIntArg } from './args.js';
import type { Command } from '../model/commands.js';
import { makeConfig } from '../model/series.js';
import { setupArbitraryFor, templateArbitraryFor } from '../properties/generators.js';
import { INVARIANT_IDS } from '../properties/invariants.js';
import { DEFAULT_MAX_COMMANDS } from '../src/harness/budgets.js';
import { kernelLimits } from '../src/harness/runner.js';
import { InvariantViolation, Session, type SessionConfig } from '../src/harness/session.js';
import { KvmBackend } from '../src/kvm/backend.js';
import { loadProfile } from '../src/kvm/platform.js';

const PLATFORM = 'pvm-6.18';
const CHUNK = 25;

interface Side {
  ms: number;
  violations: number;
}

/** Run one sequence of concrete commands in a fresh session; a violation is counted, not thrown. */
function runOne(config: SessionConfig, cmds: readonly Command[], side: Side): void {
  const t0 = performance.now();
  const session = new Session(config);
  try {
    for (const cmd of cmds) session.run(cmd);
    session.finish();
  } catch (e) {
    if (!(e instanceof InvariantViolation)) throw e;
    side.violations++;
  }
  side.ms += performance.now() - t0;
}

function baselineBackend(): KvmBackend | null {
  const path = process.env.KVM_MEMMODEL_BASELINE_HELPER;
  if (!path) return null;
  const ours = process.env.KVM_MEMMODEL_HELPER;
  process.env.KVM_MEMMODEL_HELPER = path; // read when the backend starts its helper
  try {
    const opened = KvmBackend.open();
    if ('skipped' in opened) throw new Error(`the baseline helper cannot run: ${opened.skipped}`);
    return opened;
  } finally {
    if (ours === undefined) delete process.env.KVM_MEMMODEL_HELPER;
    else process.env.KVM_MEMMODEL_HELPER = ours;
  }
}

export async function measure(
  runs = positiveIntArg('runs', 400),
  seed = positiveIntArg('seed', 11),
): Promise<Record<string, number>> {
  const backend = KvmBackend.open();
  if ('skipped' in backend) {
    console.log(`SKIPPED three-way benchmark: ${backend.skipped}`);
    return {};
  }
  try {
    const profile = loadProfile(PLATFORM);
    const model = makeConfig(
      [],
      {},
      profile.deviations.map((d) => d.id),
    );
    const invariants = new Set(INVARIANT_IDS);
    const limits = kernelLimits(backend);
    const arb = fc.tuple(
      setupArbitraryFor(model, limits),
      fc.array(templateArbitraryFor(model, limits), { maxLength: DEFAULT_MAX_COMMANDS, size: 'max' }),
    );
    const base = { arch: 'x86' as const, mutant: null, invariants, model };
    const threeWay: SessionConfig = { ...base, kernel: { backend, profile } };
    // Resolve the templates once, leaving out what the kernel cannot run (Session.step does).
    const sequences: Command[][] = fc.sample(arb, { seed, numRuns: runs }).map(([setup, templates]) => {
      const session = new Session(threeWay);
      try {
        for (const t of [...setup, ...templates]) session.step(t);
        session.finish();
      } catch (e) {
        if (!(e instanceof InvariantViolation)) throw e;
      }
      return session.steps.map((s) => s.cmd);
    });
    const model2: Side = { ms: 0, violations: 0 };
    const three: Side = { ms: 0, violations: 0 };
    const baseline = baselineBackend();
    const old: Side = { ms: 0, violations: 0 };
    const oldConfig: SessionConfig | null = baseline && { ...base, kernel: { backend: baseline, profile } };
    for (let at = 0; at < sequences.length; at += CHUNK) {
      const chunk = sequences.slice(at, at + CHUNK);
      for (const cmds of chunk) runOne(base, cmds, model2);
      for (const cmds of chunk) runOne(threeWay, cmds, three);
      if (oldConfig) for (const cmds of chunk) runOne(oldConfig, cmds, old);
    }
    baseline?.close();
    const commands = sequences.reduce((n, s) => n + s.length, 0);
    const modelSeqPerSec = sequences.length / (model2.ms / 1000);
    const threeWaySeqPerSec = sequences.length / (three.ms / 1000);
    console.log(`three-way differential, ${sequences.length} sequences (${commands} commands, seed ${seed}, x86):`);
    console.log(
      `  spec + engine           ${Math.round(modelSeqPerSec)} sequences/s (${model2.violations} violations)`,
    );
    console.log(
      `  spec + engine + kernel  ${Math.round(threeWaySeqPerSec)} sequences/s (${three.violations} violations)` +
        `, ${(modelSeqPerSec / threeWaySeqPerSec).toFixed(2)}x slower; helper restarts ${backend.restarts}`,
    );
    if (baseline) {
      const perSec = sequences.length / (old.ms / 1000);
      console.log(
        `  the same on the baseline helper ${Math.round(perSec)} sequences/s (${old.violations} violations)` +
          `: this helper is ${(threeWaySeqPerSec / perSec).toFixed(2)}x as fast`,
      );
    }
    return { threeWaySeqPerSec, modelSeqPerSec };
  } finally {
    backend.close();
  }
}

if (process.argv[1]?.endsWith('three-way.js')) {
  const keys = await measure();
  console.log(JSON.stringify(keys));
}
