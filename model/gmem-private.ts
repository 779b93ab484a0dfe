// gmem-private series (S1, seed 001; upstream KVM_SET_MEMORY_ATTRIBUTES for a VM type with private
// memory): gfns carry a PRIVATE attribute (every gfn starts shared); a guest access whose
// private/shared kind does not match it, or a private access to a slot that cannot be private, is a
// memory-fault exit with KVM_MEMORY_EXIT_FLAG_PRIVATE for a private access (INV-35;
// private_mem_kvm_exits_test.c expects -EFAULT, MEMORY_FAULT, flags PRIVATE, the accessed gpa's
// page, size PAGE_SIZE). Private accesses read and write the guest_memfd. The RMP (INV-32..34) is
// invisible to the VMM and is checked on the engine. x86 only: SEV-SNP/TDX are x86.
import { PAGE_SIZE, isAligned } from './abi.js';
import type { SetMemoryAttributes } from './commands.js';
import type { FaultCause } from './exits.js';
import type { Outcome } from './outcomes.js';
import { KVM_MEMORY_ATTRIBUTE_PRIVATE } from './series-abi.js';
import { seriesOn } from './series.js';
import type { Memslot, SpecState } from './state.js';

export const privateMemoryOn = (state: SpecState): boolean =>
  seriesOn(state.config, 'gmem-private') && state.arch === 'x86';

/** kvm_mmu_faultin_pfn: the attribute check comes before the no-slot check, then kvm_slot_can_be_private. */
export function privateAccessFault(
  state: SpecState,
  slot: Memslot | undefined,
  gfn: number,
  priv: boolean,
): FaultCause | null {
  if (!privateMemoryOn(state)) return null;
  if (priv !== state.privateGfns.has(gfn)) return { kind: 'private', private: priv };
  if (priv && !slot?.gmem) return { kind: 'private', private: true };
  return null;
}

/** kvm_vm_ioctl_set_mem_attributes: flags 0, known attributes, non-empty aligned range, no overflow. */
export function setMemoryAttributes(state: SpecState, cmd: SetMemoryAttributes): Outcome {
  // Without private memory no attribute is supported (kvm_supported_mem_attributes() is 0).
  if (!privateMemoryOn(state)) return { kind: 'err', errno: 'EINVAL' };
  if (cmd.flags !== 0 || cmd.attributes & ~KVM_MEMORY_ATTRIBUTE_PRIVATE) return { kind: 'err', errno: 'EINVAL' };
  if (cmd.size === 0 || cmd.gpa + cmd.size < cmd.gpa) return { kind: 'err', errno: 'EINVAL' };
  if (!isAligned(cmd.gpa, PAGE_SIZE) || !isAligned(cmd.size, PAGE_SIZE)) return { kind: 'err', errno: 'EINVAL' };
  for (let gfn = cmd.gpa / PAGE_SIZE; gfn < (cmd.gpa + cmd.size) / PAGE_SIZE; gfn++) {
    if (cmd.attributes & KVM_MEMORY_ATTRIBUTE_PRIVATE) state.privateGfns.add(gfn);
    else state.privateGfns.delete(gfn);
  }
  return { kind: 'ok' };
}
