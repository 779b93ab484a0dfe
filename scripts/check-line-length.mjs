// Lint step: no line of our own source (TypeScript, JavaScript, C, Markdown code excepted) is longer than
// 120 columns. biome's formatter wraps code at 120 but leaves long strings and comments alone; this catches them.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const LIMIT = 120;
const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], { encoding: 'utf8' })
  .split('\n')
  .filter((f) => /\.(ts|mjs|js|c|h)$/.test(f));
const long = [];
for (const file of files) {
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    continue; // listed by git but deleted in the work tree
  }
  text.split('\n').forEach((line, i) => {
    if ([...line].length > LIMIT) long.push(`${file}:${i + 1}: ${[...line].length} columns`);
  });
}
for (const l of long) console.error(l);
if (long.length) {
  console.error(`${long.length} lines over ${LIMIT} columns`);
  process.exit(1);
}
