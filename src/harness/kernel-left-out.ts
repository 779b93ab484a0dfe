// `replay` of a kvm replay applies the rule `check --backend kvm` applies (KvmBackend.leftOut) before
// anything runs: check never sends such a command to the kernel (Session.step leaves it out), so a
// replay that holds one was not written by check, and it is refused whole, naming the first such
// step and why (docs/ARCHITECTURE.md). The spec is stepped alongside because whether a demand-paging
// episode can run depends on the slots and mappings before it.
import type { Arch } from '../../model/abi.js';
import { formatCommand, type Command } from '../../model/commands.js';
import type { ModelConfig } from '../../model/series.js';
import { applyCommand } from '../../model/spec.js';
import { newSpecState } from '../../model/state.js';
import { LEFT_OUT, type KvmBackend } from '../kvm/backend.js';

export interface LeftOutStep {
  /** 1-based, as reports number steps. */
  readonly step: number;
  readonly command: string;
  readonly reason: string;
}

/** The first command of `commands` the kernel backend cannot run, or null when it can run them all. */
export function kernelLeftOut(
  commands: readonly Command[],
  arch: Arch,
  model: ModelConfig,
  backend: Pick<KvmBackend, 'leftOut'>,
): LeftOutStep | null {
  const spec = newSpecState(arch, model);
  for (const [i, cmd] of commands.entries()) {
    const why = backend.leftOut(cmd, spec);
    if (why) return { step: i + 1, command: formatCommand(cmd), reason: LEFT_OUT[why] };
    // raceAccess is always left out above, so every command that gets here is sequential.
    applyCommand(spec, cmd as Exclude<Command, { kind: 'raceAccess' }>);
  }
  return null;
}

export const formatLeftOut = (s: LeftOutStep): string =>
  `step ${s.step} (${s.command}) cannot run on the kvm backend: ${s.reason}`;
