// Which accesses to a GUEST_MEMFD slot are served from the guest_memfd rather than the hva.
import { GUEST_MEMFD_FLAG_MMAP } from './abi.js';
import { deviates } from './platform.js';
import type { Memslot, SpecState } from './state.js';

/**
 * A default-type VM has no private memory (KVM_CAP_MEMORY_ATTRIBUTES is 0), so on x86 a gmem slot
 * is served from the guest_memfd only when the file was created with GUEST_MEMFD_FLAG_MMAP
 * (kvm_gmem_bind sets KVM_MEMSLOT_GMEM_ONLY); otherwise faults go through userspace_addr.
 * [assumption] arm64 6.18 sends every fault on a gmem slot to gmem_abort.
 */
export function isGmemOnly(state: SpecState, slot: Memslot): boolean {
  // Platform deviation gmem-faults-via-hva: this kernel's fault path never uses the guest_memfd.
  if (!slot.gmem || deviates(state.config, 'gmem-faults-via-hva')) return false;
  if (state.arch === 'arm64') return true;
  return (state.gmems[slot.gmem.handle]!.flags & GUEST_MEMFD_FLAG_MMAP) !== 0;
}
