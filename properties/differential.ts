// differential: the spec and a backend agree on every observable result (DESIGN.md, "Observable
// equality"): return value or errno, exit_reason and the payload fields valid for it, data read
// back, dirty bitmaps (within what the spec allows), and the contents of host and guest_memfd memory.
// The outcome comparison itself (outcomeMismatch, payloadIsValid) is vocabulary: model/observable.ts.
import { hex } from '../model/abi.js';
import { pagesEqual, type Memory, type PageData } from '../model/memory.js';

/** Pages whose contents differ, described for a report (label names the address space). */
export function memoryMismatch(label: string, expected: Memory, actual: Memory, pageBase = 0): string[] {
  const pages = new Set([...expected.keys(), ...actual.keys()]);
  return pagesMismatch(label, expected, (page) => actual.get(page), pages, pageBase);
}

/** memoryMismatch over the given pages only, the backend's read one page at a time. */
export function pagesMismatch(
  label: string,
  expected: Memory,
  actual: (page: number) => PageData | undefined,
  pages: Iterable<number>,
  pageBase = 0,
): string[] {
  const out: string[] = [];
  for (const page of pages) {
    const got = actual(page);
    if (pagesEqual(expected.get(page), got)) continue;
    const describe = (data: PageData | undefined): string => {
      if (!data || data.size === 0) return 'zeros';
      return [...data]
        .sort((x, y) => x[0] - y[0])
        .slice(0, 4)
        .map(([o, b]) => `+${hex(o)}=${hex(b)}`)
        .join(' ');
    };
    out.push(
      `${label} page ${hex((page + pageBase) * 4096)}: spec has ${describe(expected.get(page))}, ` +
        `backend has ${describe(got)}`,
    );
    if (out.length >= 3) break;
  }
  return out;
}

const populated = (set: ReadonlySet<number>, g: number): string => (set.has(g) ? 'populated' : 'empty');

/**
 * Which host pages are populated (zero page or a page of their own): observable through fast-only
 * GUP (exit-on-missing) and userfaultfd, so spec and engine must agree on it there.
 */
export function presenceMismatch(
  expected: { present: ReadonlyMap<number, string>; gigantic: ReadonlySet<number> },
  actual: { present: ReadonlyMap<number, string>; gigantic: ReadonlySet<number> },
): string[] {
  const out: string[] = [];
  for (const g of new Set([...expected.gigantic, ...actual.gigantic])) {
    if (expected.gigantic.has(g) !== actual.gigantic.has(g))
      out.push(
        `host 1 GiB page at ${hex(g * 4096)}: spec ${populated(expected.gigantic, g)}, ` +
          `backend ${populated(actual.gigantic, g)}`,
      );
  }
  for (const page of new Set([...expected.present.keys(), ...actual.present.keys()])) {
    const [e, a] = [expected.present.get(page), actual.present.get(page)];
    if (e !== a)
      out.push(
        `host page ${hex(page * 4096)}: spec says ${e ?? 'not populated'}, backend says ${a ?? 'not populated'}`,
      );
    if (out.length >= 3) break;
  }
  return out;
}
