// Builds the real-KVM helper (src/kvm/native/) with the machine's gcc: run by `npm ci` / `npm install`
// (prepare) and by `npm test`. No gcc: the kvm backend is reported as skipped, with this reason.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const gcc = process.env.CC ?? 'gcc';
if (spawnSync(gcc, ['--version']).status !== 0) {
  console.warn(
    `kvm-memmodel: ${gcc} not found; the kvm helper is not built and the kvm backend will be reported as skipped`,
  );
  process.exit(0);
}
mkdirSync(join(root, 'build'), { recursive: true });
execFileSync(
  gcc,
  [
    '-O2',
    '-g',
    '-Wall',
    '-Wextra',
    '-Werror',
    '-o',
    join(root, 'build/kvm-helper'),
    join(root, 'src/kvm/native/helper-main.c'),
    '-pthread',
  ],
  { stdio: 'inherit' },
);
// The C reproducers' program (export --c inlines kvm-ops.c and the data into it) must compile on its
// own, with the default data next to it, so a change to kvm-ops.c that breaks exports fails here.
execFileSync(
  gcc,
  [
    '-O2',
    '-Wall',
    '-Wextra',
    '-Werror',
    '-Wformat=2',
    '-o',
    join(root, 'build/repro-default'),
    join(root, 'src/kvm/native/repro-main.c'),
    '-pthread',
  ],
  { stdio: 'inherit' },
);
// The concurrent reproducers' program likewise (repro-concurrent.c with the default data headers).
execFileSync(
  gcc,
  [
    '-O2',
    '-Wall',
    '-Wextra',
    '-Werror',
    '-Wformat=2',
    '-o',
    join(root, 'build/repro-concurrent-default'),
    join(root, 'src/kvm/native/repro-concurrent.c'),
    '-pthread',
  ],
  { stdio: 'inherit' },
);
