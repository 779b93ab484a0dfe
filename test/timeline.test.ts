// The pictures of a concurrent history (src/harness/timeline.ts): the SVG timeline must be
// well-formed XML with every hostile string escaped, show the verdict (order, prefix, blocked
// events, the "no linearization" marker) exactly when it applies, and scale for both clocks; the
// text columns must line up at 120 columns.
import { existsSync, lstatSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { type Errno, KVM_EXIT_HLT, KVM_EXIT_MMIO } from '../model/abi.js';
import type { Command } from '../model/commands.js';
import type { History, HistoryEvent, LinearizabilityVerdict, ThreadRole } from '../model/history.js';
import type { Outcome } from '../model/outcomes.js';
import { applyCommand, type SequentialCommand } from '../model/spec.js';
import { newSpecState } from '../model/state.js';
import { checkLinearizable, type SequentialModel } from '../properties/linearizability.js';
import { specHistoryModel } from '../properties/spec-history-model.js';
import {
  formatInterleaving,
  renderTimelineSvg,
  timelinePath,
  truncate,
  writeTimeline,
  xmlEscape,
} from '../src/harness/timeline.js';
import { runInterleaved } from '../src/mmu/interleave.js';
import { Engine } from '../src/mmu/engine.js';
import { InputError } from '../src/util/errors.js';

// ---------------------------------------------------------------------------------------------
// A tiny XML well-formedness checker: enough of XML 1.0 for what an SVG writer emits (prolog,
// elements, attributes, text, the five entities and character references). It throws on anything
// else, so a raw `<` or `&` in text, an unquoted or duplicated attribute or an unclosed tag fails.

interface XmlNode {
  name: string;
  attrs: Record<string, string>;
  children: XmlNode[];
  text: string;
}

/** Code points of `s` outside printable ASCII that `allow` does not let through. */
const strangers = (s: string, allow: (code: number) => boolean = () => false): number[] =>
  [...s].map((c) => c.codePointAt(0)!).filter((c) => (c < 0x20 || c > 0x7e) && !allow(c));

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

function decodeEntities(raw: string, where: string): string {
  if (strangers(raw, (c) => c === 0x9 || c === 0xa || c === 0xd || c > 0x7e).length > 0)
    throw new Error(`control character in ${where}`);
  return raw.replace(/&([^;]*);|&/g, (all, ref: string | undefined) => {
    if (ref === undefined) throw new Error(`bare & in ${where}`);
    if (ref in ENTITIES) return ENTITIES[ref]!;
    const m = /^#x([0-9a-fA-F]+)$|^#([0-9]+)$/.exec(ref);
    if (!m) throw new Error(`unknown entity ${all} in ${where}`);
    const code = m[1] ? Number.parseInt(m[1], 16) : Number(m[2]);
    const legal =
      code === 0x9 ||
      code === 0xa ||
      code === 0xd ||
      (code >= 0x20 && code <= 0xd7ff) ||
      (code >= 0xe000 && code <= 0xfffd) ||
      (code >= 0x10000 && code <= 0x10ffff);
    if (!legal) throw new Error(`reference to a non-XML character ${all} in ${where}`);
    return String.fromCodePoint(code);
  });
}

function parseAttrs(raw: string, tag: string): Record<string, string> {
  const attrs: Record<string, string> = {};
  let rest = raw.trim();
  while (rest !== '') {
    const m = /^([A-Za-z_:][-A-Za-z0-9_:.]*)\s*=\s*"([^"<]*)"\s*/.exec(rest);
    if (!m) throw new Error(`bad attribute syntax in <${tag}>: ${rest.slice(0, 40)}`);
    if (m[1]! in attrs) throw new Error(`duplicate attribute ${m[1]} in <${tag}>`);
    attrs[m[1]!] = decodeEntities(m[2]!, `attribute ${m[1]}`);
    rest = rest.slice(m[0].length);
  }
  return attrs;
}

function parseXml(doc: string): XmlNode {
  let s = doc.replace(/^<\?xml[^?]*\?>\s*/, '');
  const root: XmlNode = { name: '#document', attrs: {}, children: [], text: '' };
  const stack = [root];
  while (s !== '') {
    const top = stack[stack.length - 1]!;
    const lt = s.indexOf('<');
    const text = lt < 0 ? s : s.slice(0, lt);
    if (text.includes('>')) throw new Error('raw > in text');
    const decoded = decodeEntities(text, `text of <${top.name}>`);
    if (top === root && decoded.trim() !== '') throw new Error('text outside the root element');
    top.text += decoded;
    if (lt < 0) break;
    s = s.slice(lt);
    const close = /^<\/([A-Za-z_:][-A-Za-z0-9_:.]*)\s*>/.exec(s);
    if (close) {
      if (close[1] !== top.name) throw new Error(`</${close[1]}> closes <${top.name}>`);
      stack.pop();
      s = s.slice(close[0].length);
      continue;
    }
    const open = /^<([A-Za-z_:][-A-Za-z0-9_:.]*)((?:\s+[^<>]*?)?)(\/?)>/.exec(s);
    if (!open) throw new Error(`bad markup: ${s.slice(0, 40)}`);
    const node: XmlNode = { name: open[1]!, attrs: parseAttrs(open[2]!, open[1]!), children: [], text: '' };
    if (top === root && root.children.length > 0) throw new Error('more than one root element');
    top.children.push(node);
    if (open[3] !== '/') stack.push(node);
    s = s.slice(open[0].length);
  }
  if (stack.length !== 1) throw new Error(`unclosed <${stack[stack.length - 1]!.name}>`);
  if (root.children.length !== 1) throw new Error('no root element');
  return root.children[0]!;
}

const all = (node: XmlNode, pred: (n: XmlNode) => boolean): XmlNode[] => [
  ...(pred(node) ? [node] : []),
  ...node.children.flatMap((c) => all(c, pred)),
];
const byClass = (svg: XmlNode, cls: string): XmlNode[] =>
  all(svg, (n) => (n.attrs.class ?? '').split(' ').includes(cls));
const textOf = (node: XmlNode): string => [node.text, ...node.children.map(textOf)].join('');

describe('the XML checker itself', () => {
  test('accepts a well-formed document and rejects the usual breakages', () => {
    expect(parseXml('<?xml version="1.0"?>\n<a x="1"><b>t &amp; &#x263a;</b><c/></a>').children).toHaveLength(2);
    for (const bad of [
      '<a><b></a>',
      '<a>x < y</a>',
      '<a>AT&T</a>',
      '<a x=1/>',
      '<a x="1" x="2"/>',
      '<a>\x01</a>',
      '<a>&#1;</a>',
      '<a/><b/>',
      '<a>',
    ])
      expect(() => parseXml(bad), bad).toThrow();
  });
});

// ---------------------------------------------------------------------------------------------
// Histories built by hand from real commands and outcomes.

const write32 = (vcpu: number, gpa: number, value: bigint): Command => ({
  kind: 'guestAccess',
  vcpu,
  gpa,
  len: 4,
  write: true,
  value,
});
const read32 = (vcpu: number, gpa: number): Command => ({
  kind: 'guestAccess',
  vcpu,
  gpa,
  len: 4,
  write: false,
  value: 0n,
});
const munmap: Command = { kind: 'munmap', hva: 0x7f0000000000, size: 0x200000 };
const hostWrite = (value: bigint): Command => ({ kind: 'hostWrite', hva: 0x7f0000001000, len: 8, value });
const hostRead: Command = { kind: 'hostRead', hva: 0x7f0000001000, len: 8 };
const getDirtyLog: Command = { kind: 'getDirtyLog', slot: 0, as: 0 };

const hlt: Outcome = { kind: 'run', rc: 0, run: { exitReason: KVM_EXIT_HLT, payload: { kind: 'none' } } };
const readDone = (value: bigint): Outcome => ({ ...hlt, value }) as Outcome;
const mmioExit: Outcome = {
  kind: 'run',
  rc: 0,
  run: { exitReason: KVM_EXIT_MMIO, payload: { kind: 'mmio', physAddr: 0x1000, len: 4, isWrite: false, data: 0n } },
};
const ok: Outcome = { kind: 'ok' };
const data = (value: bigint): Outcome => ({ kind: 'hostData', value });

type EventSpec = [thread: number, command: Command, outcome: Outcome, invoke: number, respond: number];

function history(threads: number, specs: EventSpec[], clock: History['clock'] = 'steps'): History {
  const next = new Array<number>(threads).fill(0);
  const events: HistoryEvent[] = specs.map(([thread, command, outcome, invoke, respond], id) => ({
    id,
    thread,
    index: next[thread]!++,
    command,
    outcome,
    invoke,
    respond,
  }));
  return { threads, clock, events };
}

const vcpu = (n: number): ThreadRole => ({ kind: 'vcpu', vcpu: n });
const VMM: ThreadRole = { kind: 'vmm' };
const ROLES: ThreadRole[] = [vcpu(0), vcpu(1), VMM, VMM];

/** Two vCPUs and a VMM: T0 writes, T2 unmaps while T1 reads, T0 reads back. */
const THREE = history(3, [
  [0, write32(0, 0x1000, 5n), hlt, 0, 3],
  [2, munmap, ok, 1, 6],
  [1, read32(1, 0x1000), readDone(5n), 2, 5],
  [0, read32(0, 0x1000), mmioExit, 4, 8],
]);

const linearizable = (order: number[]): LinearizabilityVerdict => ({ kind: 'linearizable', order, statesExplored: 9 });
const notLinearizable = (longestPrefix: number[], blocked: number[]): LinearizabilityVerdict => ({
  kind: 'not-linearizable',
  longestPrefix,
  blocked,
  statesExplored: 17,
});
const UNDECIDED: LinearizabilityVerdict = { kind: 'undecided', statesExplored: 100, bound: 100 };

/** A history of `threads` threads, two events each, overlapping across threads. */
function spread(threads: number, clock: History['clock']): History {
  const unit = clock === 'steps' ? 1 : 1_234_567;
  const base = clock === 'steps' ? 0 : 4_000_000_000;
  const specs: EventSpec[] = [];
  for (let t = 0; t < threads; t++) {
    const cmd = t < 2 ? write32(t, 0x1000 * (t + 1), BigInt(t)) : getDirtyLog;
    const out: Outcome = t < 2 ? hlt : { kind: 'dirtyLog', dirty: [0, 1, 2] };
    specs.push([t, cmd, out, base + t * unit, base + (t + threads + 1) * unit]);
    specs.push([
      t,
      t < 2 ? read32(t, 0x1000) : hostRead,
      t < 2 ? readDone(7n) : data(7n),
      base + (t + 2 * threads + 1) * unit,
      base + (t + 3 * threads + 2) * unit,
    ]);
  }
  return history(threads, specs, clock);
}

// ---------------------------------------------------------------------------------------------
// SVG.

const bars = (svg: XmlNode) => byClass(svg, 'event');
const eventIds = (nodes: XmlNode[]): number[] => nodes.map((n) => Number(n.attrs['data-event'])).sort();
const rectOf = (g: XmlNode) => g.children.find((c) => c.name === 'rect')!;
const barEnd = (g: XmlNode): number => Number(rectOf(g).attrs.x) + Number(rectOf(g).attrs.width);

describe('renderTimelineSvg', () => {
  test('linearizable: one lane per thread, each bar numbered in the order, no marker, nothing blocked', () => {
    const text = renderTimelineSvg(THREE, linearizable([0, 2, 1, 3]), { roles: ROLES.slice(0, 3) });
    const svg = parseXml(text);
    expect(svg.name).toBe('svg');
    expect(svg.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
    expect(bars(svg)).toHaveLength(4);
    expect(byClass(svg, 'ordered')).toHaveLength(4);
    expect(byClass(svg, 'blocked')).toHaveLength(0);
    expect(byClass(svg, 'marker')).toHaveLength(0);
    const labels = all(svg, (n) => n.name === 'text').map(textOf);
    for (const l of ['T0 vcpu0', 'T1 vcpu1', 'T2 vmm']) expect(labels).toContain(l);
    // Event 2 (T1's read) is second in the order: its bar's first line starts with "2 ".
    const t1 = bars(svg).find((g) => g.attrs['data-event'] === '2')!;
    expect(textOf(t1.children.filter((c) => c.name === 'text')[0]!)).toMatch(/^2 vcpu1: read32/);
    expect(textOf(t1)).toContain('-> rc=0 exit=HLT');
    expect(textOf(svg)).toContain('linearizable: 4 events');
  });

  test('not linearizable: prefix shaded, blocked highlighted, marker at the prefix latest response', () => {
    const verdict = notLinearizable([0, 2], [1, 3]);
    const svg = parseXml(renderTimelineSvg(THREE, verdict, { roles: ROLES.slice(0, 3) }));
    expect(eventIds(byClass(svg, 'prefix'))).toEqual([0, 2]);
    expect(eventIds(byClass(svg, 'blocked'))).toEqual([1, 3]);
    expect(byClass(svg, 'ordered')).toHaveLength(0);
    const markers = byClass(svg, 'marker');
    expect(markers).toHaveLength(1);
    expect(textOf(markers[0]!)).toContain('no linearization beyond this point');
    // Event 2 responds at 5, after event 0 (at 3): the marker sits on event 2's bar end.
    const line = markers[0]!.children.find((c) => c.name === 'line')!;
    const latest = bars(svg).find((g) => g.attrs['data-event'] === '2')!;
    expect(Number(line.attrs.x1)).toBeCloseTo(barEnd(latest), 0);
    expect(textOf(svg)).toContain('blocked (red): T2.0 T0.1');
  });

  test('not linearizable with an empty prefix: the marker stands before every bar', () => {
    const svg = parseXml(renderTimelineSvg(THREE, notLinearizable([], [0, 1])));
    const line = byClass(svg, 'marker')[0]!.children.find((c) => c.name === 'line')!;
    const firstBar = Math.min(...bars(svg).map((g) => Number(rectOf(g).attrs.x)));
    expect(Number(line.attrs.x1)).toBeLessThan(firstBar);
    expect(eventIds(byClass(svg, 'blocked'))).toEqual([0, 1]);
  });

  test('undecided: no order, no marker, nothing blocked, the bound said', () => {
    const svg = parseXml(renderTimelineSvg(THREE, UNDECIDED));
    expect(byClass(svg, 'plain')).toHaveLength(4);
    for (const cls of ['ordered', 'prefix', 'blocked', 'marker']) expect(byClass(svg, cls)).toHaveLength(0);
    expect(textOf(svg)).toContain('undecided: the search stopped at its bound of 100 states');
    expect(textOf(svg)).not.toContain('no linearization beyond');
  });

  test('a real verdict from the shared checker draws (a register read that no order explains)', () => {
    // The VMM writes 5 over [0, 3]; a reader overlapping it sees 7, which nobody wrote.
    const h = history(2, [
      [0, hostWrite(5n), ok, 0, 3],
      [1, hostRead, data(7n), 1, 2],
    ]);
    const register: SequentialModel<bigint> = {
      init: () => 0n,
      step: (s, e) =>
        e.command.kind === 'hostWrite'
          ? [e.command.value]
          : e.outcome.kind === 'hostData' && e.outcome.value === s
            ? [s]
            : [],
      key: (s) => String(s),
    };
    const verdict = checkLinearizable(register, h);
    expect(verdict.kind).toBe('not-linearizable');
    const svg = parseXml(renderTimelineSvg(h, verdict, { roles: [VMM, VMM] }));
    expect(byClass(svg, 'marker')).toHaveLength(1);
    expect(byClass(svg, 'blocked').length).toBeGreaterThan(0);
    const fixed = history(2, [
      [0, hostWrite(5n), ok, 0, 3],
      [1, hostRead, data(5n), 1, 2],
    ]);
    const good = checkLinearizable(register, fixed);
    expect(good).toMatchObject({ kind: 'linearizable', order: [0, 1] });
    expect(byClass(parseXml(renderTimelineSvg(fixed, good)), 'marker')).toHaveLength(0);
  });

  for (const clock of ['steps', 'ns'] as const)
    for (const scale of ['order', 'time'] as const)
      test(`1 to 4 threads on the ${clock} clock, ${scale} scale: bars in the picture, in time order`, () => {
        for (let n = 1; n <= 4; n++) {
          const h = spread(n, clock);
          const order = [...h.events].sort((a, b) => a.respond - b.respond).map((e) => e.id);
          const svg = parseXml(renderTimelineSvg(h, linearizable(order), { roles: ROLES.slice(0, n), scale }));
          const width = Number(svg.attrs.width);
          expect(width).toBeGreaterThan(0);
          expect(width).toBeLessThan(10_000);
          const gs = bars(svg);
          expect(gs).toHaveLength(2 * n);
          for (const g of gs) {
            const r = rectOf(g);
            const [x, w, y] = [Number(r.attrs.x), Number(r.attrs.width), Number(r.attrs.y)];
            expect(Number.isFinite(x) && Number.isFinite(w)).toBe(true);
            expect(w).toBeGreaterThanOrEqual(4);
            expect(x + w).toBeLessThanOrEqual(width);
            const e = h.events[Number(g.attrs['data-event'])]!;
            // Lane by thread: the bar's y grows with the thread index.
            expect(y).toBeGreaterThan(e.thread * 48);
          }
          // Real-time order survives the scale: an event that responded before another was invoked
          // ends left of where the other starts.
          for (const a of h.events)
            for (const b of h.events)
              if (a.respond < b.invoke) {
                const ga = gs.find((g) => Number(g.attrs['data-event']) === a.id)!;
                const gb = gs.find((g) => Number(g.attrs['data-event']) === b.id)!;
                expect(barEnd(ga)).toBeLessThanOrEqual(Number(rectOf(gb).attrs.x));
              }
          const ticks = all(svg, (t) => t.name === 'text' && t.attrs['font-size'] === '9').map(textOf);
          if (clock === 'ns') expect(ticks.some((t) => /^\+[0-9.]+(ns|\u00b5s|ms|s)$/.test(t))).toBe(true);
          else expect(ticks).toContain(scale === 'order' ? String(h.events[0]!.respond) : '0');
        }
      });

  test('marker and blocked bars appear exactly for the not-linearizable verdict, 1 to 4 threads, both clocks', () => {
    for (const clock of ['steps', 'ns'] as const)
      for (let n = 1; n <= 4; n++) {
        const h = spread(n, clock);
        const ids = h.events.map((e) => e.id);
        const verdicts = [linearizable(ids), notLinearizable([0], [1]), UNDECIDED];
        for (const v of verdicts) {
          const svg = parseXml(renderTimelineSvg(h, v, { roles: ROLES.slice(0, n) }));
          const lines = formatInterleaving(ROLES.slice(0, n), h, v);
          const failing = v.kind === 'not-linearizable';
          expect(byClass(svg, 'marker'), `${clock} ${n} ${v.kind}`).toHaveLength(failing ? 1 : 0);
          expect(eventIds(byClass(svg, 'blocked'))).toEqual(failing ? [1] : []);
          expect(lines.filter((l) => l.includes('no linearization beyond'))).toHaveLength(failing ? 1 : 0);
          expect(lines.filter((l) => l.includes('!> '))).toHaveLength(failing ? 1 : 0);
        }
      }
  });

  test('zero events, and zero threads, still give a well-formed picture', () => {
    const svg = parseXml(renderTimelineSvg(history(2, []), linearizable([]), { roles: [vcpu(0), VMM] }));
    expect(bars(svg)).toHaveLength(0);
    expect(textOf(svg)).toContain('(no events)');
    expect(textOf(svg)).toContain('T1 vmm');
    expect(parseXml(renderTimelineSvg(history(0, []), notLinearizable([], []))).name).toBe('svg');
  });

  test('hostile strings in outcomes, roles and the title are escaped, never raw', () => {
    const evil = '<script>alert("x&y")</script>\x01\x1b[31m\u0085 \u00fcn\u00efc\u00f6de \u{1f642} \ud800\uffff\'';
    const h = history(2, [
      [0, write32(0, 0x1000, 1n), { kind: 'episode', completed: false, values: [], stuck: evil }, 0, 2],
      [1, munmap, { kind: 'err', errno: '<script>EVIL' as Errno }, 1, 3],
    ]);
    const roles = [{ kind: 'vcpu', vcpu: '<script>' as unknown as number }, VMM] as ThreadRole[];
    for (const verdict of [linearizable([0, 1]), notLinearizable([0], [1]), UNDECIDED]) {
      const text = renderTimelineSvg(h, verdict, { roles, title: evil });
      expect(text).not.toMatch(/<script/i);
      // Plain ASCII: controls made visible, everything else non-ASCII a character reference.
      expect(strangers(text, (c) => c === 0xa)).toEqual([]);
      const svg = parseXml(text);
      // Escaped, not dropped: the tooltip decodes back to the hostile text (controls made visible).
      const tips = all(svg, (n) => n.name === 'title').map(textOf);
      expect(tips.some((t) => t.includes('STUCK: <script>alert("x&y")</script>\\x01\\x1b[31m\\x85'))).toBe(true);
      expect(tips.some((t) => t.includes("\u00fcn\u00efc\u00f6de \u{1f642} \\ud800\\uffff'"))).toBe(true);
      expect(tips.some((t) => t.includes('-<script>EVIL'))).toBe(true);
      expect(all(svg, (n) => n.name === 'text').map(textOf)).toContain('T0 vcpu<script>');
    }
  });

  test('bars cut long text with an ellipsis and keep it whole in the tooltip', () => {
    const h = history(1, [
      [
        0,
        {
          kind: 'setMemslot',
          api: 'v2',
          slot: 1,
          as: 0,
          flags: 0,
          gpa: 0x100000000,
          size: 0x40000000,
          hva: 0x7f0000000000,
        },
        ok,
        0,
        1,
      ],
    ]);
    const svg = parseXml(renderTimelineSvg(h, linearizable([0])));
    const g = bars(svg)[0]!;
    const first = textOf(g.children.filter((c) => c.name === 'text')[0]!);
    expect(first.endsWith('\u2026')).toBe(true);
    const w = Number(rectOf(g).attrs.width);
    expect([...first].length * 6.6).toBeLessThanOrEqual(w);
    expect(textOf(g.children.find((c) => c.name === 'title')!)).toContain('hva=0x7f0000000000)');
  });

  test('a verdict or roles that do not fit the history are bad input, not a crash', () => {
    expect(() => renderTimelineSvg(THREE, linearizable([0, 9]))).toThrow(InputError);
    expect(() => renderTimelineSvg(THREE, linearizable([0, 0]))).toThrow(InputError);
    expect(() => renderTimelineSvg(THREE, notLinearizable([0], [0]))).toThrow(InputError);
    expect(() => renderTimelineSvg(THREE, UNDECIDED, { roles: [VMM] })).toThrow(InputError);
    const backwards = history(1, [[0, munmap, ok, 5, 5]]);
    expect(() => renderTimelineSvg(backwards, UNDECIDED)).toThrow(/does not respond after its invocation/);
    const overlapping = history(1, [
      [0, munmap, ok, 0, 5],
      [0, munmap, ok, 3, 6],
    ]);
    expect(() => renderTimelineSvg(overlapping, UNDECIDED)).toThrow(/overlap/);
  });
});

describe('xmlEscape and truncate', () => {
  test('markup characters as entities, controls visible, non-ASCII as references', () => {
    expect(xmlEscape(`a&b<c>d"e'f`)).toBe('a&amp;b&lt;c&gt;d&quot;e&apos;f');
    expect(xmlEscape('\x00\n\x7f\x9f\\')).toBe('\\x00\\x0a\\x7f\\x9f\\\\');
    expect(xmlEscape('\u00e9\u{1f642}')).toBe('&#xe9;&#x1f642;');
    expect(xmlEscape('\udfff\ufffe')).toBe('\\udfff\\ufffe');
  });
  test('truncate counts code points and never splits a surrogate pair', () => {
    expect(truncate('abcdef', 6)).toBe('abcdef');
    expect(truncate('abcdef', 4)).toBe('abc\u2026');
    expect(truncate('\u{1f642}\u{1f642}\u{1f642}', 2)).toBe('\u{1f642}\u2026');
    expect(truncate('abc', 0)).toBe('');
  });
});

// ---------------------------------------------------------------------------------------------
// Text columns.

/** Where each thread's column starts, read off the header ("T0 vcpu0" ...). */
function columnStarts(lines: string[], n: number): number[] {
  return Array.from({ length: n }, (_, t) => lines[0]!.indexOf(`T${t}`));
}

describe('formatInterleaving', () => {
  test('one column per thread, one row per invocation and response, columns aligned within 120', () => {
    for (const clock of ['steps', 'ns'] as const)
      for (let n = 1; n <= 4; n++) {
        const h = spread(n, clock);
        const lines = formatInterleaving(ROLES.slice(0, n), h);
        expect(lines).toHaveLength(2 + 2 * h.events.length);
        for (const l of lines) expect(l.length).toBeLessThanOrEqual(120);
        const starts = columnStarts(lines, n);
        expect(starts.every((s, i) => s > 0 && (i === 0 || s > starts[i - 1]!))).toBe(true);
        // The rule under the header has a dash run starting at every column.
        for (const s of starts) expect(lines[1]!.slice(s - 2, s + 1)).toBe('  -');
        const rows = lines.slice(2);
        // The gutter: steps as they are, nanoseconds from the first invocation.
        const t0 = clock === 'ns' ? Math.min(...h.events.map((e) => e.invoke)) : 0;
        const rel = (t: number): string => String(t - t0);
        const at = (r: string): string => r.slice(0, starts[0]! - 2).trim();
        expect(at(rows[0]!)).toBe('0');
        // Every event's invocation and response appear in its thread's column, in time order.
        for (const e of h.events) {
          const inv = rows.findIndex((r) => at(r) === rel(e.invoke) && r.slice(starts[e.thread]!).startsWith('|> '));
          const res = rows.findIndex((r) => at(r) === rel(e.respond) && r.slice(starts[e.thread]!).startsWith('<| '));
          expect(inv, `T${e.thread} invoke`).toBeGreaterThanOrEqual(0);
          expect(res, `T${e.thread} respond`).toBeGreaterThan(inv);
          // While it runs, every other row shows the thread's bar.
          for (let r = inv + 1; r < res; r++) expect(rows[r]![starts[e.thread]!]).toBe('|');
        }
        // Anything before a column's start belongs to the previous column or the gutter: cells
        // never spill across the two-space gap.
        for (const r of rows)
          for (const s of starts.slice(1)) expect(r.length <= s || r.slice(s - 2, s) === '  ').toBe(true);
      }
  });

  test('the order is numbered on the responses; no marker when linearizable or undecided', () => {
    const lines = formatInterleaving(ROLES.slice(0, 3), THREE, linearizable([0, 2, 1, 3]));
    expect(lines[0]).toMatch(/^step {2}T0 vcpu0 +T1 vcpu1 +T2 vmm$/);
    expect(lines.some((l) => l.includes('<|#2 rc=0 exit=HLT rax=0x5'))).toBe(true);
    expect(lines.some((l) => l.includes('<|#3 ok'))).toBe(true);
    expect(lines.some((l) => l.includes('no linearization'))).toBe(false);
    expect(formatInterleaving(ROLES.slice(0, 3), THREE, UNDECIDED).some((l) => l.includes('no linearization'))).toBe(
      false,
    );
    expect(formatInterleaving(ROLES.slice(0, 3), THREE).some((l) => l.includes('#'))).toBe(false);
  });

  test('not linearizable: blocked events flagged, one marker line right after the prefix latest response', () => {
    const lines = formatInterleaving(ROLES.slice(0, 3), THREE, notLinearizable([0, 2], [1, 3]));
    const markers = lines.flatMap((l, i) => (l.includes('no linearization beyond this point') ? [i] : []));
    expect(markers).toHaveLength(1);
    const starts = columnStarts(lines, 3);
    // Event 2 (T1) responds at step 5: the row just above the marker.
    expect(lines[markers[0]! - 1]!.slice(starts[1]!)).toMatch(/^<\|#2 /);
    expect(lines[markers[0]!]).toContain('(blocked: T2.0 T0.1)');
    expect(lines[markers[0]!]!.length).toBe(120);
    expect(lines.filter((l) => l.slice(starts[2]!).startsWith('!> munmap'))).toHaveLength(1);
    expect(lines.filter((l) => l.slice(starts[0]!).startsWith('<! rc=0 exit=MMIO'))).toHaveLength(1);
    const empty = formatInterleaving(ROLES.slice(0, 3), THREE, notLinearizable([], [0, 1]));
    expect(empty[2]).toContain('no linearization beyond this point');
  });

  test('long cells end in an ellipsis inside their column; hostile text is escaped for the terminal', () => {
    const evil = '\x1b[2J\x07<b>\u00fc\u{1f642}'.repeat(4);
    const h = history(4, [
      [0, write32(0, 0xfffff000, 0xffffffffn), { kind: 'episode', completed: false, values: [], stuck: evil }, 0, 9],
      [1, munmap, ok, 1, 2],
      [2, getDirtyLog, { kind: 'dirtyLog', dirty: Array.from({ length: 40 }, (_, i) => i) }, 3, 4],
      [3, hostRead, data(1n), 5, 6],
    ]);
    const lines = formatInterleaving(ROLES, h, linearizable([1, 2, 3, 0]));
    const starts = columnStarts(lines, 4);
    const width = starts[1]! - starts[0]! - 2;
    for (const l of lines) {
      expect(strangers(l, (c) => c === 0x2026)).toEqual([]);
      expect(l.length).toBeLessThanOrEqual(120);
    }
    const dirty = lines.find((l) => l.slice(starts[2]!).startsWith('<|#2 dirty'))!;
    expect(dirty.slice(starts[2]!, starts[3]! - 2).trimEnd()).toMatch(/\u2026$/);
    const stuck = lines.find((l) => l.slice(starts[0]!).startsWith('<|#4 STUCK'))!;
    const cell = stuck.slice(starts[0]!, starts[0]! + width);
    expect(cell).toContain('STUCK: \\x1b[2J\\x07<b>');
    // Cut at a whole escape: what precedes the ellipsis is a complete \xNN or a plain character.
    expect(cell).toMatch(/(\\x[0-9a-f]{2}|\\u[0-9a-f]{4}|\\u\{[0-9a-f]+\}|[^\\])\u2026$/);
  });

  test('a response and an invocation at the same instant: the response first, as the checker orders them', () => {
    const h = history(2, [
      [0, hostWrite(1n), ok, 0, 2],
      [1, hostRead, data(1n), 2, 3],
    ]);
    const lines = formatInterleaving([VMM, VMM], h);
    const starts = columnStarts(lines, 2);
    expect(lines[3]!.slice(starts[0]!)).toBe('<| ok');
    expect(lines[4]!.slice(0, starts[1]!).trim()).toBe('2');
    expect(lines[4]!.slice(starts[1]!)).toMatch(/^\|> host_read/);
  });

  test('zero events: the header alone; roles that do not fit are bad input', () => {
    expect(formatInterleaving([vcpu(0), VMM], history(2, []))).toHaveLength(2);
    expect(() => formatInterleaving([VMM], THREE)).toThrow(InputError);
  });
});

// ---------------------------------------------------------------------------------------------
// A history the engine really produced, judged by the spec.

describe('an interleaved engine run, checked against the spec, drawn', () => {
  const H = 0x1000000000;
  const setup: Command[] = [
    { kind: 'mmap', hva: H, size: 0x10000, prot: 'rw', backing: 'anon' },
    { kind: 'setMemslot', api: 'v2', slot: 0, as: 0, flags: 0, gpa: 0, size: 0x10000, hva: H },
  ];
  const threads: Command[][] = [
    [write32(0, 0x1000, 5n), read32(0, 0x1000)],
    [read32(1, 0x1000)],
    [
      { kind: 'hostWrite', hva: H + 0x1000, len: 4, value: 9n },
      { kind: 'hostRead', hva: H + 0x1000, len: 4 },
    ],
  ];
  const roles: ThreadRole[] = [vcpu(0), vcpu(1), VMM];

  function run() {
    const engine = new Engine('x86');
    const spec = newSpecState('x86');
    for (const c of setup) {
      engine.apply(c);
      applyCommand(spec, c as SequentialCommand);
    }
    return { h: runInterleaved(engine, threads, [2, 0, 1, 0, 1]), spec };
  }

  test('the engine history is linearizable and every bar carries its position', () => {
    const { h, spec } = run();
    const verdict = checkLinearizable(specHistoryModel(spec), h);
    expect(verdict.kind).toBe('linearizable');
    const svg = parseXml(renderTimelineSvg(h, verdict, { roles }));
    expect(byClass(svg, 'ordered')).toHaveLength(h.events.length);
    const lines = formatInterleaving(roles, h, verdict);
    expect(lines.filter((l) => /<\|#\d/.test(l))).toHaveLength(h.events.length);
  });

  test('a doctored outcome (the host reads a value nobody wrote) is drawn as not linearizable', () => {
    const { h, spec } = run();
    const events = h.events.map((e) =>
      e.command.kind === 'hostRead' ? { ...e, outcome: { kind: 'hostData', value: 0x77n } as Outcome } : e,
    );
    const doctored = { ...h, events };
    const verdict = checkLinearizable(specHistoryModel(spec), doctored);
    expect(verdict.kind).toBe('not-linearizable');
    const svg = parseXml(renderTimelineSvg(doctored, verdict, { roles }));
    expect(byClass(svg, 'marker')).toHaveLength(1);
    const blocked = eventIds(byClass(svg, 'blocked'));
    expect(blocked).toEqual([...(verdict.kind === 'not-linearizable' ? verdict.blocked : [])].sort());
    const lines = formatInterleaving(roles, doctored, verdict);
    expect(lines.filter((l) => l.includes('no linearization beyond this point'))).toHaveLength(1);
  });
});

// ---------------------------------------------------------------------------------------------
// Writing the picture next to the replay.

describe('writeTimeline', () => {
  const dir = mkdtempSync(join(tmpdir(), 'timeline-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('writes <replay>.svg next to the replay, atomically, nothing else left behind', () => {
    const replay = join(dir, 'fail-seed-42.json');
    expect(timelinePath(replay)).toBe(join(dir, 'fail-seed-42.svg'));
    expect(timelinePath('/x/replay')).toBe('/x/replay.svg');
    const svg = renderTimelineSvg(THREE, notLinearizable([0], [1]));
    expect(writeTimeline(replay, svg)).toBe(join(dir, 'fail-seed-42.svg'));
    expect(readFileSync(join(dir, 'fail-seed-42.svg'), 'utf8')).toBe(svg);
    expect(writeTimeline(replay, `${svg}\n`)).toBe(join(dir, 'fail-seed-42.svg'));
    expect(readFileSync(join(dir, 'fail-seed-42.svg'), 'utf8')).toBe(`${svg}\n`);
    expect(readdirSync(dir)).toEqual(['fail-seed-42.svg']);
  });

  test('refuses to write through a symlink where the picture goes', () => {
    symlinkSync('/etc/hostname', join(dir, 'linked.svg'));
    expect(() => writeTimeline(join(dir, 'linked.json'), '<svg/>')).toThrow(InputError);
    expect(lstatSync(join(dir, 'linked.svg')).isSymbolicLink()).toBe(true);
    expect(existsSync(join(dir, '.linked.svg.tmp'))).toBe(false);
  });
});
