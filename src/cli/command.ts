// The shape of a `tandem` subcommand (see main.ts).
export interface Command {
  /** One line for `tandem --help`. */
  summary: string;
  /** Runs with the arguments after the command name; resolves to the exit code. */
  run(argv: string[]): Promise<number>;
}
