// A concurrent history drawn for a human (issue 10, items 2 and 6): an SVG timeline written next
// to the replay (a lane per thread, each command a bar from invocation to response, the point where
// no linearization exists marked) and the same history as text columns for the terminal report.
// Every string that reaches either form is treated as hostile: outcomes carry errno names and
// free-form labels, and roles may one day carry names. The SVG is self-contained (no script, no
// external font or image) so it opens the same offline, in a browser or in a CI artifact viewer.
import { formatCommand } from '../../model/commands.js';
import type { History, HistoryEvent, LinearizabilityVerdict, ThreadRole } from '../../model/history.js';
import { formatOutcome } from '../../model/observable.js';
import { InputError } from '../util/errors.js';
import { escapeText } from '../util/escape.js';
import { checkOutputFile, writeFileAtomic } from '../util/output-path.js';

// ---------------------------------------------------------------------------------------------
// Shared: labels, the verdict per event, shape checks.

export function roleLabel(role: ThreadRole): string {
  switch (role.kind) {
    case 'vcpu':
      return `vcpu${role.vcpu}`;
    case 'vmm':
      return 'vmm';
    default: {
      const never: never = role;
      return `?${String((never as { kind: unknown }).kind)}`;
    }
  }
}

/** "T2 vmm"; just "T2" when the caller has no roles. */
export function laneLabel(thread: number, roles?: readonly ThreadRole[]): string {
  const role = roles?.[thread];
  return role ? `T${thread} ${roleLabel(role)}` : `T${thread}`;
}

/** How the verdict treats one event: its position in the order (or the prefix), or blocked. */
export type EventMark =
  | { kind: 'ordered'; position: number }
  | { kind: 'prefix'; position: number }
  | { kind: 'blocked' }
  | { kind: 'plain' };

export function eventMarks(history: History, verdict: LinearizabilityVerdict | undefined): EventMark[] {
  const marks: EventMark[] = history.events.map(() => ({ kind: 'plain' }));
  if (!verdict) return marks;
  switch (verdict.kind) {
    case 'linearizable':
      verdict.order.forEach((id, i) => {
        marks[id] = { kind: 'ordered', position: i + 1 };
      });
      break;
    case 'not-linearizable':
      verdict.longestPrefix.forEach((id, i) => {
        marks[id] = { kind: 'prefix', position: i + 1 };
      });
      for (const id of verdict.blocked) marks[id] = { kind: 'blocked' };
      break;
    case 'undecided':
      break;
    default: {
      const never: never = verdict;
      throw new InputError(`unknown verdict ${escapeText(String((never as { kind: unknown }).kind))}`);
    }
  }
  return marks;
}

/**
 * Where "no linearization beyond this point" goes: the latest response among the longest
 * linearizable prefix (null = before every event, the prefix being empty); undefined when the
 * history is linearizable or undecided, which has no such point.
 */
export function markerEvent(history: History, verdict: LinearizabilityVerdict): HistoryEvent | null | undefined {
  if (verdict.kind !== 'not-linearizable') return undefined;
  let latest: HistoryEvent | null = null;
  for (const id of verdict.longestPrefix) {
    const e = history.events[id]!;
    if (!latest || e.respond > latest.respond) latest = e;
  }
  return latest;
}

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 0;

function checkIds(ids: readonly number[], history: History, what: string): void {
  const seen = new Set<number>();
  for (const id of ids) {
    if (!isCount(id) || id >= history.events.length)
      throw new InputError(`timeline: the verdict's ${what} names event ${escapeText(String(id))}, not in the history`);
    if (seen.has(id)) throw new InputError(`timeline: the verdict's ${what} names event ${id} twice`);
    seen.add(id);
  }
}

/** A thread runs its commands one after the other: in list order, each invoked after the last responded. */
function checkThreadsSequential(history: History): void {
  const last = new Map<number, HistoryEvent>();
  for (const e of [...history.events].sort((a, b) => a.invoke - b.invoke)) {
    const prev = last.get(e.thread);
    if (prev && (e.index <= prev.index || e.invoke < prev.respond))
      throw new InputError(`timeline: events ${prev.id} and ${e.id} of thread ${e.thread} overlap or run out of order`);
    last.set(e.thread, e);
  }
}

/** A history and verdict the pictures can trust: ids in place, threads in range, invoke < respond. */
export function checkTimelineInput(
  history: History,
  verdict: LinearizabilityVerdict | undefined,
  roles?: readonly ThreadRole[],
): void {
  if (!isCount(history.threads)) throw new InputError('timeline: the history has no thread count');
  if (roles && roles.length !== history.threads)
    throw new InputError(`timeline: ${roles.length} roles for ${history.threads} threads`);
  history.events.forEach((e, i) => {
    if (e.id !== i) throw new InputError(`timeline: event ${i} carries id ${escapeText(String(e.id))}`);
    if (!isCount(e.thread) || e.thread >= history.threads)
      throw new InputError(`timeline: event ${i} is on thread ${escapeText(String(e.thread))} of ${history.threads}`);
    if (!Number.isFinite(e.invoke) || !Number.isFinite(e.respond) || !(e.invoke < e.respond))
      throw new InputError(`timeline: event ${i} does not respond after its invocation`);
  });
  checkThreadsSequential(history);
  if (verdict?.kind === 'linearizable') checkIds(verdict.order, history, 'order');
  if (verdict?.kind === 'not-linearizable') {
    checkIds(verdict.longestPrefix, history, 'prefix');
    checkIds(verdict.blocked, history, 'blocked list');
    if (verdict.blocked.some((id) => verdict.longestPrefix.includes(id)))
      throw new InputError('timeline: an event is both in the prefix and blocked');
  }
}

/** `raw` cut to `max` characters (code points), the last one an ellipsis when anything was cut. */
export function truncate(raw: string, max: number): string {
  const chars = [...raw];
  if (chars.length <= max) return raw;
  return max < 1 ? '' : `${chars.slice(0, max - 1).join('')}\u2026`;
}

const eventName = (e: HistoryEvent): string => `T${e.thread}.${e.index}`;

// ---------------------------------------------------------------------------------------------
// Text: one column per thread, one row per invocation or response, in time order.

export interface InterleavingOptions {
  /** Total line width the columns share (default 120). */
  width?: number;
}

/** Escaped for the terminal and cut to `max` columns without splitting an escape sequence. */
function fitCell(raw: string, max: number): string {
  const pieces = [...raw].map((ch) => escapeText(ch));
  if (pieces.join('').length <= max) return pieces.join('');
  let out = '';
  for (const p of pieces) {
    if (out.length + p.length > max - 1) break;
    out += p;
  }
  return `${out}\u2026`;
}

interface Point {
  at: number;
  respond: boolean;
  event: HistoryEvent;
}

/**
 * Invocations and responses in time order. At equal times responses come first: the checker
 * orders a before b when a.respond <= b.invoke (properties/linearizability.ts), so a response and
 * an invocation at the same instant are drawn as "a finished, then b began".
 */
function timePoints(history: History): Point[] {
  const points = history.events.flatMap((event) => [
    { at: event.invoke, respond: false, event },
    { at: event.respond, respond: true, event },
  ]);
  return points.sort((a, b) => a.at - b.at || Number(b.respond) - Number(a.respond) || a.event.thread - b.event.thread);
}

function pointCell(p: Point, mark: EventMark): string {
  const blocked = mark.kind === 'blocked';
  if (!p.respond) return `${blocked ? '!>' : '|>'} ${formatCommand(p.event.command)}`;
  const pos = mark.kind === 'ordered' || mark.kind === 'prefix' ? `#${mark.position}` : '';
  return `${blocked ? '<!' : '<|'}${pos} ${formatOutcome(p.event.outcome)}`;
}

function markerLine(verdict: LinearizabilityVerdict, history: History, timeW: number, width: number): string {
  const blocked =
    verdict.kind === 'not-linearizable' ? verdict.blocked.map((id) => eventName(history.events[id]!)) : [];
  const text = `== no linearization beyond this point (blocked: ${blocked.join(' ') || 'none'}) `;
  const rest = Math.max(width - timeW - 2, text.length);
  return `${'='.repeat(timeW)}  ${text.padEnd(rest, '=')}`;
}

/**
 * The history as columns, one per thread (header "T0 vcpu0"), one row per invocation (`|> cmd`) or
 * response (`<|#k outcome`, k = position in the linearization or the linearizable prefix); `|`
 * marks a thread whose command is still running, `!>` / `<!` the blocked events, and a line of `=`
 * sits where the history stops being linearizable (after the prefix's latest response).
 */
export function formatInterleaving(
  roles: readonly ThreadRole[],
  history: History,
  verdict?: LinearizabilityVerdict,
  options: InterleavingOptions = {},
): string[] {
  checkTimelineInput(history, verdict, roles);
  const width = options.width ?? 120;
  const points = timePoints(history);
  // The kernel's clock counts from the run's start; its rows count from the first invocation so the
  // gutter stays narrow. Scheduling steps are small already and shown as they are.
  const t0 = history.clock === 'ns' && points.length > 0 ? points[0]!.at : 0;
  const label = (t: number): string => String(t - t0);
  const timeW = Math.max(4, ...points.map((p) => label(p.at).length));
  const n = Math.max(history.threads, 1);
  const colW = Math.max(12, Math.floor((width - timeW - 2 * n) / n));
  const row = (time: string, cells: string[]): string =>
    [time.padStart(timeW), ...cells.map((c) => fitCell(c, colW).padEnd(colW))].join('  ').trimEnd();
  const threads = Array.from({ length: history.threads }, (_, t) => t);
  const lines = [
    row(
      history.clock === 'steps' ? 'step' : '+ns',
      threads.map((t) => laneLabel(t, roles)),
    ),
    row(
      '-'.repeat(timeW),
      threads.map(() => '-'.repeat(colW)),
    ),
  ];
  const marks = eventMarks(history, verdict);
  const marker = verdict && markerEvent(history, verdict);
  const markerText = verdict ? markerLine(verdict, history, timeW, width) : '';
  if (marker === null) lines.push(markerText);
  const running = new Set<number>();
  for (const p of points) {
    if (p.respond) running.delete(p.event.thread);
    const cells = threads.map((t) =>
      t === p.event.thread ? pointCell(p, marks[p.event.id]!) : running.has(t) ? '|' : '',
    );
    if (!p.respond) running.add(p.event.thread);
    lines.push(row(label(p.at), cells));
    if (marker && p.respond && p.event === marker) lines.push(markerText);
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------
// SVG.

/**
 * Text for XML content and attribute values: the five markup characters as entities; controls
 * (C0, DEL, C1) as visible \xNN, since XML 1.0 forbids most of them even as references; lone
 * surrogates and the non-characters U+FFFE/U+FFFF (not XML characters either) as visible \uNNNN;
 * other non-ASCII as character references, so the file is plain ASCII.
 */
export function xmlEscape(text: string): string {
  let out = '';
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    if (ch === '&') out += '&amp;';
    else if (ch === '<') out += '&lt;';
    else if (ch === '>') out += '&gt;';
    else if (ch === '"') out += '&quot;';
    else if (ch === "'") out += '&apos;';
    else if (ch === '\\') out += '\\\\';
    else if (code >= 0x20 && code < 0x7f) out += ch;
    else if (code < 0xa0) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else if ((code >= 0xd800 && code < 0xe000) || code === 0xfffe || code === 0xffff)
      out += `\\u${code.toString(16).padStart(4, '0')}`;
    else out += `&#x${code.toString(16)};`;
  }
  return out;
}

export interface TimelineOptions {
  /** Lane labels: "T0 vcpu0". Without roles a lane is labelled by its thread index alone. */
  roles?: readonly ThreadRole[];
  /** A heading above the picture (seed, mutant, replay name). */
  title?: string;
  /**
   * 'order' (default): every distinct invocation or response time gets one slot, so a nanosecond
   * clock with one slow ioctl among fast ones stays readable and real-time order is exact;
   * 'time': proportional to the clock.
   */
  scale?: 'order' | 'time';
}

const LEFT = 110;
const RIGHT = 24;
const TOP = 64;
const LANE_H = 48;
const BAR_H = 36;
const CHAR_W = 6.6; // 11px monospace
const MIN_SLOT = 48;
const MAX_SLOT = 240;

interface Scale {
  x(t: number): number;
  plotW: number;
  ticks: { x: number; label: string }[];
}

const num = (n: number): string => String(Math.round(n * 10) / 10);

/** A nanosecond offset as a short label: 850ns, 1.20\u00b5s, 3.40ms, 1.20s (the SVG escapes the micro sign). */
export function formatNs(ns: number): string {
  if (ns < 1e3) return `${Math.round(ns)}ns`;
  if (ns < 1e6) return `${(ns / 1e3).toPrecision(3)}\u00b5s`;
  if (ns < 1e9) return `${(ns / 1e6).toPrecision(3)}ms`;
  return `${(ns / 1e9).toPrecision(3)}s`;
}

function tickLabel(history: History, t: number, t0: number): string {
  return history.clock === 'steps' ? String(t) : t === t0 ? '0' : `+${formatNs(t - t0)}`;
}

function orderScale(history: History, times: number[]): Scale {
  const slot = Math.min(MAX_SLOT, Math.max(MIN_SLOT, 1400 / Math.max(times.length - 1, 1)));
  const rank = new Map(times.map((t, i) => [t, i]));
  const x = (t: number): number => LEFT + 8 + rank.get(t)! * slot;
  const ticks = times.map((t) => ({ x: x(t), label: tickLabel(history, t, times[0]!) }));
  return { x, plotW: Math.max(times.length - 1, 1) * slot + 16, ticks };
}

function timeScale(history: History, times: number[]): Scale {
  const t0 = times[0]!;
  const span = times[times.length - 1]! - t0 || 1;
  const plotW = Math.max(600, Math.min(4000, times.length * MIN_SLOT));
  const x = (t: number): number => LEFT + 8 + ((t - t0) / span) * (plotW - 16);
  const ticks = Array.from({ length: 9 }, (_, i) => {
    const t = t0 + (span * i) / 8;
    const shown = history.clock === 'steps' ? Math.round(t) : t;
    return { x: x(shown), label: tickLabel(history, shown, t0) };
  });
  return { x, plotW, ticks };
}

function makeScale(history: History, scale: 'order' | 'time'): Scale {
  const times = [...new Set(history.events.flatMap((e) => [e.invoke, e.respond]))].sort((a, b) => a - b);
  if (times.length === 0) return { x: () => LEFT + 8, plotW: 600, ticks: [] };
  return scale === 'order' ? orderScale(history, times) : timeScale(history, times);
}

const STYLE: Record<EventMark['kind'] | 'undecided', { fill: string; stroke: string; width: number; dash?: string }> = {
  ordered: { fill: '#dbe9f6', stroke: '#3b6ea5', width: 1 },
  prefix: { fill: '#d5efd5', stroke: '#2e7d32', width: 1 },
  blocked: { fill: '#f9d3d0', stroke: '#c0392b', width: 2.5 },
  plain: { fill: '#f3f3f3', stroke: '#9e9e9e', width: 1, dash: '4 3' },
  undecided: { fill: '#ececec', stroke: '#777777', width: 1 },
};

function markStatus(mark: EventMark, verdict: LinearizabilityVerdict): string {
  switch (mark.kind) {
    case 'ordered':
      return `linearized at position ${mark.position}`;
    case 'prefix':
      return `position ${mark.position} of the longest linearizable prefix`;
    case 'blocked':
      return 'blocked: a candidate to come next after the prefix that the spec does not allow there';
    case 'plain':
      return verdict.kind === 'undecided' ? 'undecided' : 'not reached by the longest linearizable prefix';
    default: {
      const never: never = mark;
      return String(never);
    }
  }
}

function eventSvg(e: HistoryEvent, mark: EventMark, verdict: LinearizabilityVerdict, scale: Scale): string {
  const x1 = scale.x(e.invoke);
  const w = Math.max(scale.x(e.respond) - x1, 4);
  const y = TOP + e.thread * LANE_H + (LANE_H - BAR_H) / 2;
  const style = verdict.kind === 'undecided' ? STYLE.undecided : STYLE[mark.kind];
  const command = formatCommand(e.command);
  const outcome = formatOutcome(e.outcome);
  const position = mark.kind === 'ordered' || mark.kind === 'prefix' ? `${mark.position} ` : '';
  const chars = Math.floor((w - 8) / CHAR_W);
  const tip = `${eventName(e)} [${e.invoke}, ${e.respond}] ${command} -> ${outcome}: ${markStatus(mark, verdict)}`;
  const dash = style.dash ? ` stroke-dasharray="${style.dash}"` : '';
  return [
    `<g class="event ${mark.kind}" data-event="${e.id}">`,
    `<title>${xmlEscape(tip)}</title>`,
    `<rect x="${num(x1)}" y="${num(y)}" width="${num(w)}" height="${BAR_H}" rx="3" fill="${style.fill}" ` +
      `stroke="${style.stroke}" stroke-width="${style.width}"${dash}/>`,
    `<text x="${num(x1 + 4)}" y="${num(y + 14)}" font-weight="bold">` +
      `${xmlEscape(truncate(position + command, chars))}</text>`,
    `<text x="${num(x1 + 4)}" y="${num(y + 29)}">${xmlEscape(truncate(`-> ${outcome}`, chars))}</text>`,
    '</g>',
  ].join('\n');
}

function verdictLine(history: History, verdict: LinearizabilityVerdict): string {
  const n = history.events.length;
  switch (verdict.kind) {
    case 'linearizable':
      return `linearizable: ${n} events, numbered in linearization order (${verdict.statesExplored} states explored)`;
    case 'not-linearizable': {
      const blocked = verdict.blocked.map((id) => eventName(history.events[id]!)).join(' ') || 'none';
      return (
        `NOT linearizable: longest linearizable prefix ${verdict.longestPrefix.length} of ${n} events (green, ` +
        `numbered); blocked (red): ${blocked}; ${verdict.statesExplored} states explored`
      );
    }
    case 'undecided':
      return (
        `undecided: the search stopped at its bound of ${verdict.bound} states ` +
        `(${verdict.statesExplored} explored); no order shown`
      );
    default: {
      const never: never = verdict;
      return String(never);
    }
  }
}

const MARKER_TEXT = 'no linearization beyond this point';

function markerSvg(history: History, verdict: LinearizabilityVerdict, scale: Scale, lanesH: number, width: number) {
  const marker = markerEvent(history, verdict);
  if (marker === undefined) return '';
  const x = marker === null ? LEFT + 2 : scale.x(marker.respond);
  // The label runs right of the line unless that would leave the picture.
  const fits = x + 8 + MARKER_TEXT.length * CHAR_W < width;
  const label = fits ? `x="${num(x + 4)}"` : `x="${num(x - 4)}" text-anchor="end"`;
  const after = marker === null ? 'the prefix is empty' : `after ${eventName(marker)} responded`;
  return [
    '<g class="marker">',
    `<title>${xmlEscape(`no linearization beyond this point: ${after}`)}</title>`,
    `<line x1="${num(x)}" y1="${TOP - 14}" x2="${num(x)}" y2="${num(TOP + lanesH + 6)}" stroke="#c0392b" ` +
      'stroke-width="2" stroke-dasharray="6 3"/>',
    `<text ${label} y="${TOP - 4}" fill="#c0392b" font-weight="bold">${MARKER_TEXT}</text>`,
    '</g>',
  ].join('\n');
}

function lanesSvg(history: History, roles: readonly ThreadRole[] | undefined, width: number): string[] {
  return Array.from({ length: history.threads }, (_, t) => {
    const y = TOP + t * LANE_H;
    const fill = t % 2 === 0 ? '#fafafa' : '#f0f0f0';
    return (
      `<rect x="0" y="${y}" width="${num(width)}" height="${LANE_H}" fill="${fill}"/>\n` +
      `<text x="8" y="${y + LANE_H / 2 + 4}" font-weight="bold">${xmlEscape(truncate(laneLabel(t, roles), 15))}</text>`
    );
  });
}

function axisSvg(history: History, scale: Scale, y: number): string[] {
  const unit = history.clock === 'steps' ? 'scheduling step' : 'time since the first invocation';
  return [
    `<text x="8" y="${y + 28}" font-size="9">${xmlEscape(unit)}</text>`,
    ...scale.ticks.map(
      (k) =>
        `<line x1="${num(k.x)}" y1="${y}" x2="${num(k.x)}" y2="${y + 4}" stroke="#555"/>` +
        `<text x="${num(k.x)}" y="${y + 14}" font-size="9" text-anchor="middle">${xmlEscape(k.label)}</text>`,
    ),
  ];
}

/**
 * The history as a self-contained SVG: a lane per thread, a bar per command from invocation to
 * response with the command and outcome (cut to the bar, whole in the tooltip), the linearization
 * order numbered on the bars; when not linearizable the longest linearizable prefix shaded green,
 * the blocked events red and a dashed marker at the prefix's latest response.
 */
export function renderTimelineSvg(
  history: History,
  verdict: LinearizabilityVerdict,
  options: TimelineOptions = {},
): string {
  checkTimelineInput(history, verdict, options.roles);
  const scale = makeScale(history, options.scale ?? 'order');
  const lanesH = Math.max(history.threads, 1) * LANE_H;
  const width = Math.ceil(LEFT + scale.plotW + RIGHT);
  const height = TOP + lanesH + 52;
  const marks = eventMarks(history, verdict);
  const title = options.title ?? 'concurrent history';
  const empty =
    history.events.length === 0 ? [`<text x="${LEFT + 8}" y="${TOP + LANE_H / 2 + 4}">(no events)</text>`] : [];
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ` +
      'font-family="monospace" font-size="11">',
    `<title>${xmlEscape(title)}</title>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="8" y="18" font-size="13" font-weight="bold">${xmlEscape(title)}</text>`,
    `<text x="8" y="36" class="verdict">${xmlEscape(verdictLine(history, verdict))}</text>`,
    ...lanesSvg(history, options.roles, width),
    ...empty,
    ...history.events.map((e) => eventSvg(e, marks[e.id]!, verdict, scale)),
    markerSvg(history, verdict, scale, lanesH, width),
    ...axisSvg(history, scale, TOP + lanesH + 8),
    '</svg>',
    '',
  ]
    .filter((line) => line !== '')
    .join('\n')
    .concat('\n');
}

/** The picture's path: the replay's, `.json` replaced by `.svg` (appended when it has no `.json`). */
export function timelinePath(replayPath: string): string {
  return `${replayPath.endsWith('.json') ? replayPath.slice(0, -'.json'.length) : replayPath}.svg`;
}

/** Writes the picture next to its replay, atomically (src/util/output-path.ts); returns its path. */
export function writeTimeline(replayPath: string, svg: string): string {
  const file = timelinePath(replayPath);
  checkOutputFile(file, 'timeline');
  writeFileAtomic(file, svg);
  return file;
}
