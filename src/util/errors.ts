// Errors every layer may raise. This module imports nothing of the project, so model/, the engine,
// the kvm backend and the harness can all use it without an import against the layers.

/** A user-facing problem with input: the CLI prints `error: <message>` on one line and exits 2. */
export class InputError extends Error {}
