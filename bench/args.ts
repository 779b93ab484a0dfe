// Command-line arguments of the benchmarks: `--name N`, a positive integer, or a one-line error.
export function positiveIntArg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isSafeInteger(v) || v <= 0) {
    process.stderr.write(`error: --${name} must be a positive integer\n`);
    process.exit(2);
  }
  return v;
}
