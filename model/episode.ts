// The workload a demandPaging command names (exit-on-missing, demand_paging_test.c): which bytes
// each vCPU stores and where, and the byte resolved pages are filled with. Vocabulary shared by the
// spec (model/demand-paging.ts) and the VMM agent run against the engine (src/agent/), like a
// command's fields: it says what the guest program does, not how KVM answers.

/** demand_paging_test fills resolved pages with this byte. */
export const UFFD_FILL_BYTE = 0xab;

/** What vCPU `vcpu` stores in a write episode: its own byte pattern, 8 bytes at offset 8 * vcpu. */
export const episodeValue = (vcpu: number): bigint => BigInt(0x11 * (vcpu + 1)) * 0x0101010101010101n;
export const episodeOffset = (vcpu: number): number => 8 * vcpu;
