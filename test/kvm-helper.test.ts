// The native helper on a real /dev/kvm: it answers, survives garbage and a guest that never
// returns, and a helper that dies is reported with the request it died on and replaced. Without a
// usable /dev/kvm every test here is skipped, and the suite's name says why.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, test } from 'vitest';
import { HelperProcess, helperPath, probeMachine } from '../src/kvm/helper.js';
import {
  BATCH_MAGIC,
  ERROR_MAGIC,
  HARNESS_GPA,
  OP,
  RESP_SIZE,
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

describe.skipIf(!probe.usable)(`kvm helper against /dev/kvm (${why})`, () => {
  const helper = new HelperProcess();
  afterAll(() => helper.stop());
  const reset = { op: OP.reset, a32: 0, args: [] };
  const readCode = { op: OP.guestAccess, a32: 0, args: [0, HARNESS_GPA + 0x8000, 8, 0, 0] };

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
