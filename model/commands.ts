// The command vocabulary shared by every backend. A command is what a VMM does: an ioctl, a change
// to its own address space, or one KVM_RUN in which the guest makes one memory access.
import { match } from 'ts-pattern';
import type { z } from 'zod';
import { hex } from './abi.js';
import type { backingSchema, commandSchema, hostCommandSchema, protSchema } from './command-schema.js';

// The types are inferred from the schemas in model/command-schema.ts, the single source.
type Of<K extends Command['kind']> = Extract<Command, { kind: K }>;

export type Command = z.output<typeof commandSchema>;
export type CommandKind = Command['kind'];
export type Prot = z.output<typeof protSchema>;
export type Backing = z.output<typeof backingSchema>;
export type HostCommand = z.output<typeof hostCommandSchema>;
export type SetMemslot = Of<'setMemslot'>;
export type Mmap = Of<'mmap'>;
export type Munmap = Of<'munmap'>;
export type Mprotect = Of<'mprotect'>;
export type MadviseDontneed = Of<'madviseDontneed'>;
export type HostWrite = Of<'hostWrite'>;
export type HostRead = Of<'hostRead'>;
export type GmemCreate = Of<'gmemCreate'>;
export type GmemPunchHole = Of<'gmemPunchHole'>;
export type GuestAccess = Of<'guestAccess'>;
export type GetDirtyLog = Of<'getDirtyLog'>;
export type ClearDirtyLog = Of<'clearDirtyLog'>;
export type CheckExtension = Of<'checkExtension'>;
export type EnableCap = Of<'enableCap'>;
export type RaceAccess = Of<'raceAccess'>;
export type MadvisePopulate = Of<'madvisePopulate'>;
export type UserfaultBits = Of<'userfaultBits'>;
export type SetMemoryAttributes = Of<'setMemoryAttributes'>;
export type DemandPaging = Of<'demandPaging'>;

/** One line, in the style of the C call a VMM would make. */
export function formatCommand(cmd: Command): string {
  return match(cmd)
    .with({ kind: 'setMemslot' }, (c) => {
      const gmem = c.gmem ? ` gmem=#${c.gmem.handle}+${hex(c.gmem.offset)}` : '';
      return (
        `set_memory_region_${c.api}(slot=${c.as}:${c.slot} flags=${hex(c.flags)} gpa=${hex(c.gpa)} ` +
        `size=${hex(c.size)} hva=${hex(c.hva)}${gmem})`
      );
    })
    .with({ kind: 'mmap' }, (c) => `mmap(hva=${hex(c.hva)} size=${hex(c.size)} prot=${c.prot} ${c.backing})`)
    .with({ kind: 'munmap' }, (c) => `munmap(hva=${hex(c.hva)} size=${hex(c.size)})`)
    .with({ kind: 'mprotect' }, (c) => `mprotect(hva=${hex(c.hva)} size=${hex(c.size)} prot=${c.prot})`)
    .with({ kind: 'madviseDontneed' }, (c) => `madvise(hva=${hex(c.hva)} size=${hex(c.size)} DONTNEED)`)
    .with({ kind: 'hostWrite' }, (c) => `host_write(hva=${hex(c.hva)} len=${c.len} value=${hex(c.value)})`)
    .with({ kind: 'hostRead' }, (c) => `host_read(hva=${hex(c.hva)} len=${c.len})`)
    .with({ kind: 'gmemCreate' }, (c) => `create_guest_memfd(size=${hex(c.size)} flags=${hex(c.flags)})`)
    .with({ kind: 'gmemPunchHole' }, (c) => `punch_hole(gmem=#${c.handle} offset=${hex(c.offset)} len=${hex(c.len)})`)
    .with({ kind: 'guestAccess' }, (c) => {
      const priv = c.private ? 'private ' : '';
      return c.write
        ? `vcpu${c.vcpu}: ${priv}write${c.len * 8}(gpa=${hex(c.gpa)}, ${hex(c.value)})`
        : `vcpu${c.vcpu}: ${priv}read${c.len * 8}(gpa=${hex(c.gpa)})`;
    })
    .with({ kind: 'getDirtyLog' }, (c) => `get_dirty_log(slot=${c.as}:${c.slot})`)
    .with(
      { kind: 'clearDirtyLog' },
      (c) => `clear_dirty_log(slot=${c.as}:${c.slot} first=${c.firstPage} num=${c.numPages})`,
    )
    .with({ kind: 'checkExtension' }, (c) => `check_extension(${c.cap})`)
    .with({ kind: 'enableCap' }, (c) => {
      const more =
        c.args1 || c.args2 || c.args3
          ? ` args1=${hex(c.args1 ?? 0)} args2=${hex(c.args2 ?? 0)} args3=${hex(c.args3 ?? 0)}`
          : '';
      return `enable_cap(${c.cap} flags=${hex(c.flags)} args0=${hex(c.args0)}${more})`;
    })
    .with(
      { kind: 'madvisePopulate' },
      (c) => `madvise(hva=${hex(c.hva)} size=${hex(c.size)} POPULATE_${c.write ? 'WRITE' : 'READ'})`,
    )
    .with(
      { kind: 'userfaultBits' },
      (c) =>
        `userfault_bitmap(slot=${c.as}:${c.slot}).${c.set ? 'set' : 'clear'}(first=${c.firstPage} num=${c.numPages})`,
    )
    .with(
      { kind: 'setMemoryAttributes' },
      (c) =>
        `set_memory_attributes(gpa=${hex(c.gpa)} size=${hex(c.size)} attrs=${hex(c.attributes)} flags=${hex(c.flags)})`,
    )
    .with({ kind: 'demandPaging' }, (c) => {
      const pages = c.vcpuPages.map((p, v) => `vcpu${v}:[${p.join(',')}]`).join(' ');
      return (
        `demand_paging(slot=${c.slot} ${c.write ? 'write' : 'read'} ${pages} readers=${c.readers} ` +
        `schedule=[${c.schedule.join(',')}])`
      );
    })
    .with({ kind: 'raceAccess' }, (c) => `race{ ${formatCommand(c.access)} || ${formatCommand(c.host)} }`)
    .exhaustive();
}
