import { execa } from 'execa';

/**
 * The one place the Linux backend touches the world: run a command (an argument array, never a shell
 * string) and say how it ended. The backend builds its commands with linux-commands.ts and parses
 * their output with linux-parse.ts; a fake runner (test/support/fake-linux.ts) interprets the same
 * commands against an in-memory host, so the backend's logic runs in unit tests without root.
 */
export interface CommandResult {
  stdout: string;
  stderr: string;
  /** null when the process was killed (a timeout). */
  exitCode: number | null;
  timedOut: boolean;
}

export interface CommandRunner {
  run(argv: readonly string[], opts: { timeoutMs: number; env?: Record<string, undefined>; input?: string }): Promise<CommandResult>;
}

/** Real processes, with execa. */
export const execaRunner: CommandRunner = {
  async run(argv, { timeoutMs, env = {}, input }) {
    const r = await execa(argv[0]!, argv.slice(1), { timeout: timeoutMs, reject: false, env, ...(input === undefined ? {} : { input }) });
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.failed && r.exitCode === 0 ? 1 : (r.exitCode ?? null), timedOut: r.timedOut };
  },
};
