// What the engine's stage-2 fault path returns, shared by the fault handler, the private-fault
// path and KVM_RUN. The engine's own types: the spec's FaultCause (model/exits.ts) is a spec rule's
// input and stays there.
import type { EngineSlot } from './memslots.js';

/** Why the guest's access could not be served (kvm_handle_error_pfn / the series' exits). */
export type FaultCause =
  /**
   * The host could not provide the page behind the hva (an error pfn): no VMA, a protection that
   * forbids the access, or (fast-only GUP on an exit-on-missing slot) no present PTE. `mappingSize`
   * is arm64's vma_pagesize for OQ-11.
   */
  | { kind: 'hva'; why: 'no-vma' | 'protection' | 'missing'; fastOnly: boolean; mappingSize: number }
  /** userfault: the page's bit is set in the userfault bitmap of a USERFAULT slot. */
  | { kind: 'userfault'; private: boolean }
  /** gmem-private: the access's private/shared kind does not match the gfn's attribute or slot. */
  | { kind: 'private'; private: boolean };

export type FaultResult =
  | { kind: 'mapped' }
  /** Try again; `slotInvalid`: after the delete or move that made this slot KVM_MEMSLOT_INVALID. */
  | { kind: 'retry'; slotInvalid?: EngineSlot }
  | { kind: 'mmio' }
  | { kind: 'efault'; cause: FaultCause }
  /** The thread sleeps in handle_userfault until the page is resolved and it is woken. */
  | { kind: 'uffd'; hva: number };
