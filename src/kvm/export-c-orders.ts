// The order graph a concurrent C reproducer searches (export-c-concurrent.ts, repro-concurrent.c):
// every sequential order of the threads' commands (each thread's own order kept) with the outcome
// the spec allows for each command there, folded into a DAG whose node is (which commands are done,
// the spec state). An edge runs one command with one allowed outcome; an edge the spec allows only
// while another thread's command is in flight (model/in-flight.ts) names that command, and the
// program takes it only if the two overlapped in real time. The program then searches the graph as
// the harness's checker (properties/linearizability.ts) searches the spec: a command may come next
// only if no command still pending responded before it was invoked, and the attempt is allowed iff
// some path runs every command with the result the kernel gave. So the program respects real-time
// order, in-flight allowances included, without the spec in C.
import type { Command } from '../../model/commands.js';
import { interruptedWriteState } from '../../model/history-step.js';
import { inFlightAlternatives } from '../../model/in-flight.js';
import { bigintAsHex, type Outcome } from '../../model/outcomes.js';
import { applyCommand, specAlternatives, type SequentialCommand } from '../../model/spec.js';
import type { SpecState } from '../../model/state.js';
import { InputError } from '../util/errors.js';

/** More nodes or edges than these and the export is refused (the C data would be too large). */
export const MAX_ORDER_NODES = 20_000;
export const MAX_ORDER_EDGES = 100_000;

export interface OrderEdge {
  /** The command run (its index among all the threads' commands, thread after thread). */
  readonly req: number;
  /** Its outcome, an index into OrderGraph.outcomes. */
  readonly outcome: number;
  /** The command it must have overlapped in real time (an in-flight allowance), or -1. */
  readonly overlap: number;
  readonly to: number;
}

export interface OrderGraph {
  /** Node 0 is the start (nothing done); `done` is each node's set of done commands as a bit mask. */
  readonly done: bigint[];
  readonly edges: OrderEdge[][];
  /** The node where every command is done. */
  readonly final: number;
  /** Distinct (command, outcome) pairs the edges name. */
  readonly outcomes: { readonly req: number; readonly outcome: Outcome }[];
}

/** JSON with Map and Set members in order: equal states usually get one key (a miss only costs a node). */
function stateKey(state: SpecState): string {
  return JSON.stringify(state, (_, v) => {
    if (v instanceof Map) return { m: [...v.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) };
    if (v instanceof Set) return { s: [...v].sort() };
    return bigintAsHex(_, v);
  });
}

interface Step {
  readonly outcome: Outcome;
  readonly state: SpecState;
  readonly overlap: number;
}

/** The ways `cmd` may go in `state`: the spec's (alternatives included), then the in-flight ones. */
function steps(state: SpecState, cmd: Command, others: readonly { req: number; cmd: Command }[]): Step[] {
  const sequential = specAlternatives(state, cmd) ?? [
    (() => {
      const s = structuredClone(state);
      return { outcome: applyCommand(s, cmd as SequentialCommand), state: s };
    })(),
  ];
  const out: Step[] = sequential.map((a) => ({
    outcome: a.outcome,
    state: interruptedWriteState(a.state, cmd, a.outcome),
    overlap: -1,
  }));
  for (const o of others)
    for (const a of inFlightAlternatives(state, cmd, [o.cmd]))
      out.push({ outcome: a.outcome, state: interruptedWriteState(a.state, cmd, a.outcome), overlap: o.req });
  return out;
}

/** The graph of `threads` from `initial` (not mutated), or an InputError when it is too large to write. */
export function orderGraph(
  initial: SpecState,
  threads: readonly (readonly Command[])[],
  limits = { nodes: MAX_ORDER_NODES, edges: MAX_ORDER_EDGES },
): OrderGraph {
  const offsets = threads.map((_, t) => threads.slice(0, t).reduce((n, l) => n + l.length, 0));
  const total = threads.reduce((n, l) => n + l.length, 0);
  const all = threads.flatMap((l, t) => l.map((cmd, i) => ({ req: offsets[t]! + i, cmd, thread: t })));
  const graph: OrderGraph = { done: [], edges: [], final: -1, outcomes: [] };
  const ids = new Map<string, number>();
  const outcomeIds = new Map<string, number>();
  let edgeCount = 0;
  const tooLarge = (what: string): InputError =>
    new InputError(`the case's orders need ${what}: a C reproducer checking them all would be too large`);
  const outcomeId = (req: number, outcome: Outcome): number => {
    const key = `${req}:${JSON.stringify(outcome, bigintAsHex)}`;
    let id = outcomeIds.get(key);
    if (id === undefined) {
      id = graph.outcomes.length;
      graph.outcomes.push({ req, outcome });
      outcomeIds.set(key, id);
    }
    return id;
  };
  const visit = (state: SpecState, next: readonly number[]): number => {
    const doneCount = next.reduce((a, b) => a + b, 0);
    const key = doneCount === total ? 'final' : `${next.join(',')}|${stateKey(state)}`;
    const known = ids.get(key);
    if (known !== undefined) return known;
    const id = graph.done.length;
    if (id >= limits.nodes) throw tooLarge(`more than ${limits.nodes} nodes`);
    ids.set(key, id);
    graph.done.push(next.reduce((mask, n, t) => mask | (((1n << BigInt(n)) - 1n) << BigInt(offsets[t]!)), 0n));
    graph.edges.push([]);
    if (doneCount === total) {
      (graph as { final: number }).final = id;
      return id;
    }
    for (const [t, list] of threads.entries()) {
      const i = next[t]!;
      if (i >= list.length) continue;
      const others = all.filter((o) => o.thread !== t);
      for (const s of steps(state, list[i]!, others)) {
        const after = next.map((n, u) => (u === t ? n + 1 : n));
        const to = visit(s.state, after);
        if (++edgeCount > limits.edges) throw tooLarge(`more than ${limits.edges} edges`);
        const edge = { req: offsets[t]! + i, outcome: outcomeId(offsets[t]! + i, s.outcome), overlap: s.overlap, to };
        const same = graph.edges[id]!.some(
          (e) => e.req === edge.req && e.outcome === edge.outcome && e.overlap === edge.overlap && e.to === edge.to,
        );
        if (!same) graph.edges[id]!.push(edge);
      }
    }
    return id;
  };
  visit(
    initial,
    threads.map(() => 0),
  );
  return graph;
}
