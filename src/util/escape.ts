// Making user- and file-supplied strings safe to print: a replay's invariant name, a path, a JSON
// parser's excerpt of a file. Nothing raw reaches the terminal (no escape sequences, no newlines
// that would turn one error line into several).

/** Control and non-ASCII characters as \xNN / \uNNNN (and a backslash doubled), printable ASCII as is. */
export function escapeText(text: string): string {
  let out = '';
  for (const ch of text) {
    const code = ch.codePointAt(0)!;
    if (ch === '\\') out += '\\\\';
    else if (code >= 0x20 && code < 0x7f) out += ch;
    else if (code < 0x100) out += `\\x${code.toString(16).padStart(2, '0')}`;
    else if (code < 0x10000) out += `\\u${code.toString(16).padStart(4, '0')}`;
    else out += `\\u{${code.toString(16)}}`;
  }
  return out;
}

/** A short escaped excerpt (at most `max` characters of the source, then "..."). */
export function excerpt(text: string, max = 40): string {
  const chars = [...text];
  const cut = chars.length > max ? `${chars.slice(0, max).join('')}...` : text;
  return escapeText(cut);
}

/** A line already built from escaped parts, made safe as a whole: control and non-ASCII escaped, backslashes kept. */
export function escapeLine(line: string): string {
  let out = '';
  for (const ch of line) out += ch === '\\' ? ch : escapeText(ch);
  return out;
}
