// The helper works ahead (src/kvm/native/worker.c): it tears a finished sequence's VM down and makes
// the next one while the harness computes, and answers a batch in one write, keeping each response in
// a shared answers file as it finishes (answers.c). Here: a sequence still starts in a VM of its own,
// with nothing of the last one left; the spare VM really is made between sequences; and a helper
// killed in the middle of a batch is still reported with the responses it finished and the request it
// died on, and a fresh helper (with a fresh spare) serves the next sequence.
import { spawnSync } from 'node:child_process';
import { readdirSync, readlinkSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { KVM_EXIT_HLT, KVM_EXIT_MMIO } from '../model/abi.js';
import type { Command } from '../model/commands.js';
import { KvmBackend } from '../src/kvm/backend.js';
import { HelperProcess, probeMachine } from '../src/kvm/helper.js';
import { OP, STATUS } from '../src/kvm/protocol.js';

const probe = probeMachine();
const why = probe.usable ? 'present' : `skipped: ${probe.reason}`;
const HVA = 0x10_0000_0000;
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

/** The VM file descriptors process `pid` holds (anon_inode:kvm-vm links in /proc/PID/fd). */
function vmFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === 'anon_inode:kvm-vm';
    } catch {
      return false;
    }
  }).length;
}

describe.skipIf(!probe.usable)(`the helper's VM made ahead of time (${why})`, () => {
  // Everything a VM and its host memory could carry over: a mapping with data, a memslot with dirty
  // logging and a dirtied page, a guest_memfd, the manual dirty-log protect mode.
  const first: Command[] = [
    { kind: 'mmap', hva: HVA, size: 0x2000, prot: 'rw', backing: 'anon' },
    { kind: 'hostWrite', hva: HVA, len: 8, value: 0x1234n },
    { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 1, gpa: 0, size: 0x2000, hva: HVA },
    { kind: 'guestAccess', vcpu: 0, gpa: 0x1000, len: 8, write: true, value: 0x55n, private: false },
    { kind: 'gmemCreate', size: 0x2000, flags: 0 },
    { kind: 'enableCap', cap: 168, flags: 0, args0: 1 },
  ];
  // The same slot, host memory and guest address asked after it: each answer differs if anything stayed.
  const second: Command[] = [
    { kind: 'hostRead', hva: HVA, len: 8 },
    { kind: 'getDirtyLog', slot: 0, as: 0 },
    { kind: 'guestAccess', vcpu: 0, gpa: 0x1000, len: 8, write: false, value: 0n, private: false },
    { kind: 'gmemPunchHole', handle: 0, offset: 0, len: 0x1000 },
    { kind: 'mmap', hva: HVA, size: 0x2000, prot: 'rw', backing: 'anon' },
    { kind: 'hostRead', hva: HVA, len: 8 },
    { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 1, gpa: 0, size: 0x2000, hva: HVA },
    { kind: 'clearDirtyLog', slot: 0, as: 0, firstPage: 0, numPages: 64 },
  ];

  test('a sequence after another starts in a fresh VM: no mapping, slot, gmem or capability carried over', () => {
    const backend = KvmBackend.open();
    if ('skipped' in backend) throw new Error(backend.skipped);
    try {
      const warm = backend.run(first);
      expect(warm.died).toBeUndefined();
      expect(warm.results[3]).toMatchObject({ kind: 'run', rc: 0, run: { exitReason: KVM_EXIT_HLT } });
      expect(warm.results[5]).toEqual({ kind: 'ok' });
      const after = backend.run(second);
      expect(after.died).toBeUndefined();
      expect(after.results).toEqual([
        { kind: 'segv' }, // the last sequence's mapping is gone
        { kind: 'err', errno: 'ENOENT' }, // and its memslot
        { kind: 'run', rc: 0, run: expect.objectContaining({ exitReason: KVM_EXIT_MMIO }) }, // no slot: MMIO
        { kind: 'err', errno: 'EBADF' }, // and its guest_memfd
        { kind: 'ok' },
        { kind: 'hostData', value: 0n }, // fresh zero pages, not the old 0x1234
        { kind: 'ok' },
        // Manual protect off again: KVM_CLEAR_DIRTY_LOG is refused without it.
        { kind: 'err', errno: 'EINVAL' },
      ]);
      // The same sequence as the first of a new helper (its VM made at start-up) answers the same.
      const alone = KvmBackend.open();
      if ('skipped' in alone) throw new Error(alone.skipped);
      try {
        expect(alone.run(second).results).toEqual(after.results);
      } finally {
        alone.close();
      }
    } finally {
      backend.close();
    }
  });

  test('between sequences the helper holds the next VM, made while the harness computes', () => {
    const backend = KvmBackend.open();
    if ('skipped' in backend) throw new Error(backend.skipped);
    try {
      expect(backend.run(first).died).toBeUndefined();
      const pid = backend.helperPid!;
      // The finished sequence's VM is closed and the spare made on the worker thread: one VM left.
      let vms = vmFds(pid);
      for (let i = 0; i < 200 && vms !== 1; i++) {
        Atomics.wait(SLEEPER, 0, 0, 10);
        vms = vmFds(pid);
      }
      expect(vms).toBe(1);
    } finally {
      backend.close();
    }
  });

  test('a helper killed mid-batch: the responses it finished and the request it died on, then a fresh helper', () => {
    const helper = new HelperProcess();
    try {
      const reset = { op: OP.reset, a32: 0, args: [] };
      const mmap = { op: OP.mmap, a32: 0, args: [HVA, 0x2000, 2, 0] };
      const write = { op: OP.hostWrite, a32: 0, args: [HVA, 8, 7] };
      const spin = { op: OP.guestSpin, a32: 0, args: [0, 0, 8, 0, 0] };
      expect(helper.runBatch([reset, mmap]).died).toBeUndefined(); // the helper is up (and its spare made)
      const pid = helper.pid!;
      // The guest spins for up to 5 s of guest time; the helper is killed from outside well before.
      const killer = spawnSync('sh', ['-c', `(sleep 0.3; kill -KILL ${pid}) >/dev/null 2>&1 &`]);
      expect(killer.status).toBe(0);
      const result = helper.runBatch([reset, mmap, write, spin, write], { runTimeoutMs: 5000, endsSequence: true });
      expect(result.died).toMatchObject({ at: 3, how: expect.stringMatching(/signal 9/) });
      expect(result.responses.map((r) => r.status)).toEqual([STATUS.ok, STATUS.ok, STATUS.ok]);
      // A new helper, with a VM of its own, serves the next sequence; the old window is not its.
      const read = { op: OP.hostRead, a32: 0, args: [HVA, 8] };
      const again = helper.runBatch([reset, read, mmap, read], { endsSequence: true });
      expect(again.died).toBeUndefined();
      expect(again.responses.map((r) => r.status)).toEqual([STATUS.ok, STATUS.segv, STATUS.ok, STATUS.ok]);
      expect(again.responses[3]!.value).toBe(0n);
      expect(helper.restarts).toBe(1);
    } finally {
      helper.stop();
    }
  });
});
