#!/usr/bin/env node
// Entry point: the compiled CLI (built by `npm ci` / `npm install` through the prepare script).
// `main` turns bad input into one `error:` line (exit 2) and its own bugs into one `error: internal:`
// line (exit 70); the handlers here do the same for what escapes it (a failed import, an error in
// a callback), so a stack trace reaches the user only with KVM_MEMMODEL_DEBUG=1.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const internal = (e) => {
  const message = String(e instanceof Error ? e.message : e)
    .split('\n')[0]
    .replace(/[^\x20-\x7e]/g, '?');
  process.stderr.write(`error: internal: ${message} (a bug; KVM_MEMMODEL_DEBUG=1 shows where)\n`);
  if (process.env.KVM_MEMMODEL_DEBUG === '1' && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  process.exit(70);
};
process.on('uncaughtException', internal);
process.on('unhandledRejection', internal);

const cli = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));
if (!existsSync(cli)) {
  process.stderr.write('error: kvm-memmodel is not built; run `npm install` (or `npm run build`) in its directory\n');
  process.exit(2);
}
const { main } = await import(cli);
main(process.argv);
