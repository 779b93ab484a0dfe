// Parsing a user's JSON file into one-line errors: the parser's message quotes the file (over
// several lines, with whatever control characters it holds), so only a short escaped excerpt of
// the text at the error is kept. Deep nesting is refused before any schema walks it recursively.
import { InputError } from './errors.js';
import { excerpt, escapeText } from './escape.js';

/** No input document nests deeper than a few levels (a replay: 6); 64 leaves room and bounds recursion. */
export const MAX_JSON_DEPTH = 64;

/** Nesting depth of the JSON text, counted on brackets outside strings (no recursion). */
function nestingDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') inString = true;
    else if (c === '[' || c === '{') max = Math.max(max, ++depth);
    else if (c === ']' || c === '}') depth--;
  }
  return max;
}

/** Where JSON.parse stopped, when its message says ("... at position N ..."). */
function errorPosition(message: string): number | undefined {
  const m = /position (\d+)/.exec(message);
  return m ? Number(m[1]) : undefined;
}

export function parseJsonInput(text: string, what: string): unknown {
  const where = `${escapeText(what)} is not valid JSON`;
  if (text.charCodeAt(0) === 0xfeff)
    throw new InputError(`${where}: it starts with a byte-order mark (save it without)`);
  if (text.trim() === '') throw new InputError(`${where}: it is empty`);
  if (nestingDepth(text) > MAX_JSON_DEPTH)
    throw new InputError(`${where}: nested deeper than ${MAX_JSON_DEPTH} levels`);
  try {
    return JSON.parse(text);
  } catch (e) {
    const pos = errorPosition((e as Error).message);
    const near = pos === undefined ? excerpt(text.trimStart(), 30) : excerpt(text.slice(pos), 30);
    const at = pos === undefined ? '' : ` at position ${pos}`;
    throw new InputError(`${where}${at}, near "${near}"`);
  }
}

/** A zod-style error's first issue as `path: message`, escaped (a key in the path may come from the file). */
export function schemaIssue(error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] }): string {
  const issue = error.issues[0];
  if (!issue) return '(top level): invalid';
  const where = issue.path.length ? issue.path.map((k) => String(k)).join('.') : '(top level)';
  return `${excerpt(where, 80)}: ${excerpt(issue.message, 160)}`;
}
