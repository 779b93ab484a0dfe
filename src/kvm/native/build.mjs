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

/** Compile one program of our own C with warnings as errors. */
function compile(out, source, extra = []) {
  const flags = ['-O2', ...extra, '-Wall', '-Wextra', '-Werror'];
  execFileSync(gcc, [...flags, '-o', join(root, 'build', out), join(root, 'src/kvm/native', source), '-pthread'], {
    stdio: 'inherit',
  });
}

compile('kvm-helper', 'helper-main.c', ['-g']);
// The C reproducers' program (export --c inlines kvm-ops.c and the data into it) must compile on its
// own, with the default data next to it, so a change to kvm-ops.c that breaks exports fails here.
compile('repro-default', 'repro-main.c', ['-Wformat=2']);
// The concurrent reproducers' program likewise (repro-concurrent.c with the default data headers).
compile('repro-concurrent-default', 'repro-concurrent.c', ['-Wformat=2']);
