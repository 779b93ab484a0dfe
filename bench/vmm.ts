// The vmm profile's cost (issue 11 target 5): mean µs per command of a campaign with real-VMM-sized
// runs (check --profile vmm), every invariant on, against the same for the small runs the default
// check is made of, in one process and interleaved round by round (x86 + arm64 each round), since
// absolute times drift on a shared machine.
// Run: node dist/bench/vmm.js [--rounds N --small-runs N --seed S]
import { INVARIANT_IDS } from '../properties/invariants.js';
import { runCampaign, type GeneratorProfile } from '../src/harness/runner.js';
import { positiveIntArg } from './args.js';

interface Tally {
  runs: number;
  commands: number;
  ms: number;
}

function campaign(profile: GeneratorProfile, seed: number, runs: number, into: Tally): void {
  const result = runCampaign({
    arches: ['x86', 'arm64'],
    seed,
    runs,
    maxCommands: 40,
    invariants: INVARIANT_IDS,
    mutant: null,
    profile,
  });
  if (!result.ok) {
    process.stderr.write(
      `error: a ${profile} campaign failed (${result.failure?.invariant}); numbers would be meaningless\n`,
    );
    process.exit(1);
  }
  into.runs += result.runs;
  into.commands += result.commands;
  into.ms += result.elapsedMs;
}

export async function measure(): Promise<Record<string, number>> {
  const rounds = positiveIntArg('rounds', 2);
  const smallRuns = positiveIntArg('small-runs', 250);
  const seed = positiveIntArg('seed', 1);
  const vmm: Tally = { runs: 0, commands: 0, ms: 0 };
  const small: Tally = { runs: 0, commands: 0, ms: 0 };
  for (let r = 0; r < rounds; r++) {
    campaign('small', seed + r, smallRuns, small);
    campaign('vmm', seed + r, 1, vmm);
  }
  const us = (t: Tally): number => (t.ms * 1000) / t.commands;
  return {
    vmmProfileCommandUs: us(vmm),
    vmmProfileCommandsPerRun: vmm.commands / vmm.runs,
    vmmProfileRunMs: vmm.ms / vmm.runs,
    defaultProfileCommandUs: us(small),
    defaultProfileRunMs: small.ms / small.runs,
  };
}

if (process.argv[1]?.endsWith('vmm.js')) {
  const keys = await measure();
  console.log('kvm-memmodel vmm profile (every invariant, x86 + arm64, interleaved with small runs)');
  console.log(
    `  vmm: ${keys.vmmProfileCommandUs!.toFixed(0)} µs/command, ${keys.vmmProfileCommandsPerRun!.toFixed(0)} commands` +
      ` and ${keys.vmmProfileRunMs!.toFixed(0)} ms per run`,
  );
  console.log(
    `  small (the default check's runs): ${keys.defaultProfileCommandUs!.toFixed(0)} µs/command,` +
      ` ${keys.defaultProfileRunMs!.toFixed(1)} ms per run`,
  );
  console.log(JSON.stringify(keys));
}
