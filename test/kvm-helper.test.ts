// The native helper on a real /dev/kvm: it answers, survives garbage and a guest that never
// returns, and a helper that dies is reported with the request it died on and replaced. Without a
// usable /dev/kvm every test here is skipped, and the suite's name says why.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, test } from 'vitest';
import { HelperProcess, helperPath, probeMachine } from '../src/kvm/helper.js';
import {
  BATCH_MAGIC,
  ERROR_MAGIC,
  HARNESS_GPA,
  HVA_WINDOW,
  OP,
  RESP_SIZE,
  STATUS,
  decodeOutcome,
  decodeResponseHeader,
  encodeBatch,
} from '../src/kvm/protocol.js';

const probe = probeMachine();
const why = probe.usable ? 'present' : `skipped: ${probe.reason}`;

test('the install step built the helper with gcc', () => {
  const gcc = spawnSync('gcc', ['--version']).status === 0;
  if (!gcc) return; // no compiler: the backend reports itself skipped (probeMachine says why)
  expect(existsSync(helperPath())).toBe(true);
});

// A helper that dies before it opens its FIFOs (killed at start, a broken binary) must be noticed
// as a death, never wait for ever in open(2): no /dev/kvm needed, the "helper" here is /bin/false.
test('a helper that exits before opening its FIFOs is a death, not a hang', () => {
  const dead = new HelperProcess('/bin/false');
  const started = Date.now();
  const { responses, died } = dead.runBatch([{ op: OP.checkExtension, a32: 0, args: [10] }]);
  expect(responses).toHaveLength(0);
  expect(died?.how).toBe('exited with status 1');
  expect(Date.now() - started).toBeLessThan(5000);
  dead.stop();
});

describe.skipIf(!probe.usable)(`kvm helper against /dev/kvm (${why})`, () => {
  const helper = new HelperProcess();
  afterAll(() => helper.stop());
  const reset = { op: OP.reset, a32: 0, args: [] };
  // The harness's own code, read through the debug op: guestAccess refuses the harness pages.
  const readCode = { op: OP.guestPeek, a32: 0, args: [0, HARNESS_GPA + 0x8000, 8, 0, 0] };

  test('probe reports the capabilities the upstream spec needs', () => {
    expect(probe.caps.get(231)).toBe(1); // KVM_CAP_USER_MEMORY2
    expect(probe.caps.get(10)).toBeGreaterThan(0); // KVM_CAP_NR_MEMSLOTS
  });

  test('the guest reads its own code: HLT with the bytes in RAX', () => {
    const { responses, died } = helper.runBatch([reset, readCode]);
    expect(died).toBeUndefined();
    expect(responses[1]!.exitReason).toBe(5);
    expect(responses[1]!.value).toBe(0xf4_03_b6_0fn); // movzx eax, byte [rbx]; hlt; then zero padding
  });

  test('a guest that never returns times out (SIGALRM, KVM_EXIT_INTR) and the vCPU runs again', () => {
    const spin = { op: OP.guestSpin, a32: 0, args: [0, 0, 8, 0, 0] };
    const { responses } = helper.runBatch([reset, spin, readCode], { runTimeoutMs: 50 });
    expect(responses[1]!.status).toBe(4); // ST_HARNESS
    expect(responses[1]!.detail).toBe(3); // timeout
    expect(responses[2]!.exitReason).toBe(5);
  });

  test('a guest exception comes back as its vector', () => {
    const { responses } = helper.runBatch([reset, { op: OP.guestUd2, a32: 0, args: [0, 0, 8, 0, 0] }]);
    expect(responses[1]!.status).toBe(4);
    expect(responses[1]!.detail).toBe(2);
    expect(responses[1]!.value).toBe(6n); // #UD
  });

  test('a helper that dies is reported with the request it died on, and a new one serves the next batch', () => {
    const before = helper.restarts;
    const result = helper.runBatch([reset, readCode, { op: OP.crash, a32: 0, args: [] }, readCode]);
    expect(result.died?.at).toBe(2);
    expect(result.died?.how).toMatch(/signal 11/);
    const again = helper.runBatch([reset, readCode]);
    expect(again.died).toBeUndefined();
    expect(again.responses[1]!.exitReason).toBe(5);
    expect(helper.restarts).toBe(before + 1);
  });

  test('userfaultfd MISSING: a demand-paging episode resolves every missing page with a 0xAB copy, once', () => {
    const HVA = 0x10_0000_0000;
    const { responses, died } = helper.runBatch([
      reset,
      { op: OP.mmap, a32: 0, args: [HVA, 0x10000, 2, 0] },
      { op: OP.setRegion, a32: 2, args: [0, 0, 0, 0x10000, HVA, -1, 0] },
      { op: OP.hostWrite, a32: 0, args: [HVA + 0x2008, 8, 0x1234n] }, // page 2 present before the episode
      { op: OP.episodePage, a32: 0, args: [0, 1] },
      { op: OP.episodePage, a32: 0, args: [0, 2] },
      { op: OP.episodePage, a32: 0, args: [1, 1] },
      { op: OP.episodePage, a32: 0, args: [1, 3] },
      { op: OP.demandPaging, a32: 0, args: [0, 0, 2] },
      { op: OP.hostRead, a32: 0, args: [HVA + 0x3000, 8] },
    ]);
    expect(died).toBeUndefined();
    const episode = responses[8]!;
    expect(episode.status).toBe(0);
    expect(episode.value).toBe(1n); // every vCPU finished
    const values = [0, 1, 2, 3].map((i) => episode.data.readBigUInt64LE(8 * i));
    expect(values).toEqual([0xababababababababn, 0n, 0xababababababababn, 0xababababababababn]);
    expect(responses[9]!.value).toBe(0xababababababababn);
  });

  test('an unknown request is ENOSYS, not a crash', () => {
    const { responses, died } = helper.runBatch([reset, { op: 4242, a32: 0, args: [] }, readCode]);
    expect(died).toBeUndefined();
    expect(responses[1]!.status).toBe(1);
    expect(responses[1]!.err).toBe(38);
    expect(responses[2]!.exitReason).toBe(5);
  });

  describe('defence in depth: requests on what the helper keeps for itself are refused, never performed', () => {
    const HVA = HVA_WINDOW.start;
    const cases: [string, { op: number; a32: number; args: (number | bigint)[] }, number][] = [
      ['mmap(0x10000, MAP_FIXED) below the window', { op: OP.mmap, a32: 0, args: [0x10000, 0x1000, 2, 0] }, 1],
      ['munmap(0x1000, 0x7fffffffe000)', { op: OP.munmap, a32: 0, args: [0x1000, 0x7fff_ffff_e000] }, 1],
      ['munmap reaching past the window end', { op: OP.munmap, a32: 0, args: [HVA_WINDOW.end - 0x1000, 0x2000] }, 1],
      ['mprotect of the helper stack region', { op: OP.mprotect, a32: 0, args: [0x7ffd_0000_0000, 0x1000, 0] }, 1],
      ['madvise(DONTNEED) at 0', { op: OP.madvDontneed, a32: 0, args: [0, 0x1000] }, 1],
      ['madvise(POPULATE) above the window', { op: OP.madvPopulate, a32: 0, args: [HVA_WINDOW.end, 0x1000, 1] }, 1],
      ['a host write outside the window', { op: OP.hostWrite, a32: 0, args: [0x40_0000, 8, 1] }, 1],
      ['a host read outside the window', { op: OP.hostRead, a32: 0, args: [0x40_0000, 8] }, 1],
      ['a host read of 16 bytes', { op: OP.hostRead, a32: 0, args: [HVA, 16] }, 5],
      ['a memslot on the harness slot 32000', { op: OP.setRegion, a32: 2, args: [32000, 0, 0, 0, 0, -1, 0] }, 2],
      [
        'a memslot over the harness gpa range',
        { op: OP.setRegion, a32: 2, args: [1, 0, HARNESS_GPA - 0x1000, 0x2000, HVA, -1, 0] },
        3,
      ],
      [
        'a memslot over host memory outside the window',
        { op: OP.setRegion, a32: 2, args: [1, 0, 0, 0x1000, 0x7f00_0000_0000, -1, 0] },
        6,
      ],
      ['the dirty log of the harness slot', { op: OP.getDirtyLog, a32: 0, args: [32000] }, 2],
      [
        'a guest write into the harness page tables',
        { op: OP.guestAccess, a32: 0, args: [0, HARNESS_GPA, 8, 1, 0] },
        4,
      ],
      [
        'a guest read straddling into the harness pages',
        { op: OP.guestAccess, a32: 0, args: [0, HARNESS_GPA - 4, 8, 0, 0] },
        4,
      ],
      // Any other width runs the 8-byte stub: a 0-byte write into the code, a 3-byte one ending below it.
      [
        'a 0-byte guest write into the harness code',
        { op: OP.guestAccess, a32: 0, args: [0, HARNESS_GPA + 0x8000, 0, 1, 0] },
        5,
      ],
      [
        'a 3-byte guest write ending below the harness pages',
        { op: OP.guestAccess, a32: 0, args: [0, HARNESS_GPA - 3, 3, 1, 0] },
        5,
      ],
    ];
    test.each(cases)('%s', (_name, req, reason) => {
      const { responses, died } = helper.runBatch([reset, req, readCode]);
      expect(died).toBeUndefined();
      expect(responses[1]!.status).toBe(STATUS.refused);
      expect(responses[1]!.detail).toBe(reason);
      expect(responses[2]!.exitReason).toBe(5); // the helper and its guest are intact
      const outcome = decodeOutcome({ kind: 'checkExtension', cap: 0 }, responses[1]!);
      expect(outcome).toMatchObject({ kind: 'harness', message: expect.stringMatching(/^refused by the helper: /) });
    });

    test('the same operations inside the window are performed', () => {
      const { responses } = helper.runBatch([
        reset,
        { op: OP.mmap, a32: 0, args: [HVA, 0x2000, 2, 0] },
        { op: OP.hostWrite, a32: 0, args: [HVA + 8, 8, 0x55n] },
        { op: OP.hostRead, a32: 0, args: [HVA + 8, 8] },
        { op: OP.setRegion, a32: 2, args: [1, 0, 0, 0x2000, HVA, -1, 0] },
        { op: OP.guestAccess, a32: 0, args: [0, 8, 8, 0, 0] },
        { op: OP.munmap, a32: 0, args: [HVA, 0x2000] },
      ]);
      expect(responses.map((r) => r.status)).toEqual([0, 0, 0, 0, 0, STATUS.run, 0]);
      expect(responses[3]!.value).toBe(0x55n);
      expect(responses[5]!.value).toBe(0x55n);
    });
  });

  test('a sequence of 70,001 requests is answered in full (no 65,535 limit, no pipe deadlock)', () => {
    const many = Array.from({ length: 70_000 }, () => ({ op: OP.checkExtension, a32: 0, args: [10] }));
    const { responses, died } = helper.runBatch([reset, ...many]);
    expect(died).toBeUndefined();
    expect(responses).toHaveLength(70_001);
    expect(responses.every((r) => r.status === 0)).toBe(true);
    expect(Number(responses[70_000]!.rc)).toBeGreaterThan(0); // KVM_CAP_NR_MEMSLOTS
  });

  test('a SIGSTOP/SIGCONT storm on the helper is not a guest timeout (EINTR re-enters KVM_RUN)', async () => {
    helper.runBatch([reset, readCode]); // a running helper to storm
    const pid = helper.pid!;
    const storm = spawn('sh', [
      '-c',
      `for i in $(seq 60); do kill -STOP ${pid}; sleep 0.005; kill -CONT ${pid}; sleep 0.01; done`,
    ]);
    const ended = new Promise<void>((resolve) => storm.on('exit', () => resolve()));
    const spins: number[] = [];
    let batches = 0;
    let stormOver = false;
    storm.on('exit', () => {
      stormOver = true;
    });
    // Guest spins of 40 ms of guest time each: most stops land inside KVM_RUN.
    const spin = { op: OP.guestSpin, a32: 0, args: [0, 0, 8, 0, 0] };
    while (!stormOver && batches < 200) {
      const { responses } = helper.runBatch([reset, spin, readCode], { runTimeoutMs: 40 });
      spins.push(responses[1]!.detail);
      expect(responses[2]!.status).toBe(STATUS.run);
      expect(responses[2]!.exitReason).toBe(5);
      batches++;
      await new Promise((r) => setImmediate(r)); // let the storm's exit event arrive
    }
    await ended;
    expect(batches).toBeGreaterThan(3);
    expect(spins.every((d) => d === 3)).toBe(true); // each spin ends by its own guest-time budget
    // And guest accesses under the storm are never reported as timeouts.
    const reads = Array.from({ length: 2000 }, () => readCode);
    const storm2 = spawnSync('sh', ['-c', `(for i in $(seq 30); do kill -STOP ${pid}; kill -CONT ${pid}; done) &`]);
    expect(storm2.status).toBe(0);
    const { responses } = helper.runBatch([reset, ...reads]);
    expect(responses.slice(1).every((r) => r.status === STATUS.run && r.exitReason === 5)).toBe(true);
  });

  test('garbage input is answered with an error frame and the helper resynchronises on the next batch', () => {
    const garbage = Buffer.from('this is not a batch at all, just bytes \x00\x01\x02\xff', 'binary');
    const valid = encodeBatch([reset, readCode]);
    const run = spawnSync(helperPath(), [], { input: Buffer.concat([garbage, valid]), timeout: 10_000 });
    expect(run.status).toBe(0);
    const out = run.stdout;
    expect(out.readUInt32LE(0)).toBe(ERROR_MAGIC);
    // Error frames (8 bytes each) until the batch's two responses.
    let at = 0;
    while (out.readUInt32LE(at) === ERROR_MAGIC) at += 8;
    expect(out.length - at).toBe(2 * RESP_SIZE);
    expect(decodeResponseHeader(out.subarray(at + RESP_SIZE)).exitReason).toBe(5);
    expect(BATCH_MAGIC).not.toBe(ERROR_MAGIC);
  });
});
