// Which of a thread's commands the linearizability check keeps in program order (issue 10 item 7,
// docs/ARCHITECTURE.md "Memory ordering"). Linearizability treats each thread as sequential; a
// memory model that lets a thread's plain stores become visible out of order allows more. The
// engine's store buffer (src/mmu/store-buffer.ts) buffers the VMM's page writes (hostWrite) and
// userfault bitmap stores under the userfault series; on arm64 a plain store may pass an older
// store to another location, and a store-release passes nothing older. The spec's rules for the
// commands, not the engine, say which store is a release: the VMM clears a userfault bit with
// store-release (S0), everything else it stores plainly. x86 (TSO) keeps stores in order.
import type { Arch } from '../model/abi.js';
import { PAGE_SIZE } from '../model/abi.js';
import type { Command } from '../model/commands.js';
import type { HistoryEvent } from '../model/history.js';
import { seriesOn, type ModelConfig } from '../model/series.js';

/** A command that is only stores to the VMM's memory: what it stores to, and whether with release. */
interface StoreCommand {
  readonly release: boolean;
  readonly locations: readonly string[];
}

function storeOf(cmd: Command): StoreCommand | null {
  switch (cmd.kind) {
    case 'hostWrite': {
      const first = Math.floor(cmd.hva / PAGE_SIZE);
      const last = Math.floor((cmd.hva + Math.max(cmd.len, 1) - 1) / PAGE_SIZE);
      const locations = Array.from({ length: last - first + 1 }, (_, i) => `page ${first + i}`);
      return { release: false, locations };
    }
    case 'userfaultBits': {
      // The engine's grain: one 64-bit bitmap word per store (src/mmu/userfault.ts).
      const first = Math.floor(cmd.firstPage / 64);
      const last = Math.floor((cmd.firstPage + Math.max(cmd.numPages, 1) - 1) / 64);
      const locations = Array.from({ length: last - first + 1 }, (_, i) => `word ${cmd.as}:${cmd.slot}:${first + i}`);
      return { release: !cmd.set, locations };
    }
    default:
      // Loads and system calls: the engine orders the thread's earlier stores before them.
      return null;
  }
}

/**
 * The program-order relation for checkLinearizable's `programOrder` option, or undefined when
 * every pair stays ordered (x86, or no series whose stores the engine buffers).
 */
export function programOrderFor(
  arch: Arch,
  config: ModelConfig,
): ((earlier: HistoryEvent, later: HistoryEvent) => boolean) | undefined {
  if (arch !== 'arm64' || !seriesOn(config, 'userfault')) return undefined;
  return (earlier, later) => {
    const a = storeOf(earlier.command);
    const b = storeOf(later.command);
    if (!a || !b || b.release) return true;
    // A plain store passes older stores except to the same location (coherence).
    return a.locations.some((l) => b.locations.includes(l));
  };
}

/**
 * The events as the checker orders them in real time: a command whose stores became visible only
 * after it returned counts as responding then (HistoryEvent.visible), as another thread can tell
 * it finished only from that moment; and no command counts as finished before a program-earlier
 * command it is ordered after (`programOrder`, default every pair): on x86 a later command of the
 * thread may return, storing nothing, while an older store still waits in the buffer.
 */
export function visibleEvents(
  events: readonly HistoryEvent[],
  programOrder: (earlier: HistoryEvent, later: HistoryEvent) => boolean = () => true,
): HistoryEvent[] {
  const out = events.map((e) => ({ ...e, respond: Math.max(e.respond, e.visible ?? e.respond) }));
  const byThread = new Map<number, HistoryEvent[]>();
  for (const e of out) byThread.set(e.thread, [...(byThread.get(e.thread) ?? []), e]);
  for (const list of byThread.values()) {
    list.sort((a, b) => a.index - b.index);
    list.forEach((e, k) => {
      for (const p of list.slice(0, k)) if (programOrder(p, e) && p.respond > e.respond) e.respond = p.respond;
    });
  }
  return out;
}
