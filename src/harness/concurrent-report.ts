// How a failing concurrent case prints after its setup: the threads, one column per thread, each
// command on the row of the scheduling step it returned at, with what the engine returned. A small
// local formatter behind formatThreads, so swapping in src/harness/timeline.ts formatInterleaving
// (roles, history) is a one-line change there.
import { formatCommand } from '../../model/commands.js';
import type { ConcurrentCase, History, LinearizabilityVerdict, ThreadRole } from '../../model/history.js';
import { formatOutcome } from '../../model/observable.js';

const COLUMN = 44;

const roleName = (r: ThreadRole, t: number): string => (r.kind === 'vcpu' ? `T${t} vcpu${r.vcpu}` : `T${t} vmm`);

function clip(text: string): string {
  return text.length > COLUMN - 2 ? `${text.slice(0, COLUMN - 3)}~` : text;
}

/**
 * The threads of a case as text lines. With a history: each event's row is ordered by its response,
 * and [invoke-respond] marks the steps it spanned, so overlapping commands are visible; events the
 * checker blocked on (after the longest linearizable prefix) are marked `<-- blocked`.
 */
export function formatThreads(
  c: Pick<ConcurrentCase, 'roles' | 'threads' | 'schedule'>,
  history?: History,
  verdict?: LinearizabilityVerdict,
): string[] {
  const header = c.roles.map((r, t) => clip(roleName(r, t)).padEnd(COLUMN)).join('| ');
  const lines = [`  schedule: [${c.schedule.join(',')}]`, `  ${header}`];
  if (!history) {
    const rows = Math.max(...c.threads.map((l) => l.length));
    for (let i = 0; i < rows; i++) {
      const cells = c.threads.map((l) => clip(i < l.length ? formatCommand(l[i]!) : '').padEnd(COLUMN));
      lines.push(`  ${cells.join('| ')}`);
    }
    return lines.map((l) => l.trimEnd());
  }
  const blocked = new Set(verdict?.kind === 'not-linearizable' ? verdict.blocked : []);
  const events = [...history.events].sort((a, b) => a.respond - b.respond);
  for (const e of events) {
    const cells = c.roles.map(() => ''.padEnd(COLUMN));
    const mark = blocked.has(e.id) ? ' <-- blocked' : '';
    cells[e.thread] = clip(`[${e.invoke}-${e.respond}] ${formatCommand(e.command)}`).padEnd(COLUMN);
    const out = c.roles.map(() => ''.padEnd(COLUMN));
    out[e.thread] = clip(`  -> ${formatOutcome(e.outcome)}${mark}`).padEnd(COLUMN);
    lines.push(`  ${cells.join('| ')}`, `  ${out.join('| ')}`);
  }
  return lines.map((l) => l.trimEnd());
}
