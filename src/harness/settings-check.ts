// Settings that contradict each other, refused the same way by `check` (flags) and `replay` (a
// file's fields): a mutant whose mutation point sits in a series, an architecture or the kvm
// adaptor that the run does not enable can never be killed, and an option of a series that is off
// changes nothing; either would end in an empty PASS that looks like evidence.
import type { Arch } from '../../model/abi.js';
import { DEFAULT_OPTIONS, OPTION_INFO, OPTION_NAMES, type ModelConfig } from '../../model/series.js';
import { KVM_MUTANTS, type KvmMutant } from '../kvm/backend.js';
import { mutantInfo, type MutantName } from '../mmu/mutant-registry.js';

export interface SettingsToCheck {
  readonly mutant: MutantName | KvmMutant | null;
  readonly model: ModelConfig;
  readonly arches: readonly Arch[];
  readonly backend: 'model' | 'kvm';
}

export const isKvmMutantName = (m: string | null | undefined): m is KvmMutant =>
  m !== null && m !== undefined && (KVM_MUTANTS as readonly string[]).includes(m);

function mutantError(s: SettingsToCheck): string | null {
  if (s.mutant === null) return null;
  if (isKvmMutantName(s.mutant))
    return s.backend === 'kvm' ? null : `mutant ${s.mutant} mutates the kvm backend's adaptor: it needs backend kvm`;
  const info = mutantInfo(s.mutant);
  const missing = info.series?.filter((name) => !s.model.series.includes(name)) ?? [];
  if (missing.length) return `mutant ${s.mutant} sits in series ${missing.join(', ')}, which is not enabled`;
  if (info.arches && !s.arches.some((a) => info.arches!.includes(a)))
    return `mutant ${s.mutant} sits in ${info.arches.join(', ')} code, which this run does not cover`;
  return null;
}

function optionError(model: ModelConfig): string | null {
  for (const name of OPTION_NAMES) {
    const series = OPTION_INFO[name].series;
    if (model.options[name] !== DEFAULT_OPTIONS[name] && !model.series.includes(series))
      return `option ${name} belongs to series ${series}, which is not enabled`;
  }
  return null;
}

/** The kvm backend drives an x86_64 guest and runs the upstream subset (UPSTREAM.md): nothing else. */
function kernelError(s: SettingsToCheck): string | null {
  if (s.backend !== 'kvm') return null;
  if (s.arches.some((a) => a !== 'x86')) return 'the kvm backend drives x86_64 guests: arch must be x86';
  if (s.model.series.length) return 'the kvm backend runs the upstream subset; proposed series are model-only';
  return null;
}

/** One line (no "error: " prefix) naming the first contradiction, or null when there is none. */
export function settingsError(s: SettingsToCheck): string | null {
  return kernelError(s) ?? mutantError(s) ?? optionError(s.model);
}
