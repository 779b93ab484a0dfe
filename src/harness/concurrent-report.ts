// How a failing concurrent case prints after its setup: the threads, one column per thread. Without
// a history, each thread's commands; with one, src/harness/timeline.ts formatInterleaving.
import { formatCommand } from '../../model/commands.js';
import type { ConcurrentCase, History, LinearizabilityVerdict, ThreadRole } from '../../model/history.js';
import { formatInterleaving } from './timeline.js';

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
  // With a history: timeline.ts's columns (invocations and responses in time order, the point
  // where no linearization exists marked), indented under the schedule.
  return [lines[0]!, ...formatInterleaving(c.roles, history, verdict, { width: 118 }).map((l) => `  ${l}`)];
}
