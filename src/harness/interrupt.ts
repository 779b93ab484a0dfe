// SIGINT/SIGTERM during a long command (check, mutants): the first signal asks the campaign to stop
// at its next run boundary (runCampaignInterruptible polls `requested`), so the command can still
// print what it found, write a counterexample and exit 130/143. A second signal exits at once:
// nothing is awaited, the helpers' temporary directories are removed synchronously (helper.ts
// keeps them only while a helper starts), and the helpers end at end of file on their pipes.
import { removeTempDirs } from '../kvm/helper.js';
import type { StopRequest } from './runner.js';

export type StopSignal = 'SIGINT' | 'SIGTERM';

/** The shell's convention for a process ended by a signal: 128 + the signal number. */
export const SIGNAL_EXIT: Record<StopSignal, number> = { SIGINT: 130, SIGTERM: 143 };

export interface Interrupt extends StopRequest {
  /** The first signal received, or null. */
  readonly signal: () => StopSignal | null;
  /** Put the default handling back (the command is done). */
  readonly uninstall: () => void;
}

export function installInterrupt(write: (line: string) => void = (l) => process.stderr.write(l)): Interrupt {
  let first: StopSignal | null = null;
  const onSignal = (sig: StopSignal): void => {
    if (first) {
      removeTempDirs();
      process.exit(SIGNAL_EXIT[sig]);
    }
    first = sig;
    write(`\n${sig}: stopping after the current run (${sig === 'SIGINT' ? 'Ctrl-C' : 'signal'} again exits at once)\n`);
  };
  const onInt = (): void => onSignal('SIGINT');
  const onTerm = (): void => onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  return {
    requested: () => first !== null,
    signal: () => first,
    uninstall: () => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
    },
  };
}
