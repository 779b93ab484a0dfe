#!/usr/bin/env node
// Entry point: the compiled CLI (built by `npm ci` / `npm install` through the prepare script).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
if (!existsSync(cli)) {
  process.stderr.write('error: kvm-memmodel is not built; run `npm install` (or `npm run build`) in its directory\n');
  process.exit(2);
}
const { main } = await import(cli);
main(process.argv);
