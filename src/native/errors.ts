// The typed error every tandem API throws: a stable `code` a program can branch on
// and a message a person can act on. Native errors arrive with the same codes.

export type TandemErrorCode =
  | 'TDM_BAD_GGUF'
  | 'TDM_IO'
  | 'TDM_NOT_FOUND'
  | 'TDM_UNSUPPORTED'
  | 'TDM_BAD_ARGUMENT'
  | 'TDM_OOM'
  | 'TDM_ABORTED'
  | 'TDM_BACKEND_UNAVAILABLE'
  | 'TDM_CONTEXT_FULL'
  | 'TDM_QUEUE_FULL'
  | 'TDM_DISPOSED'
  | 'TDM_INTERNAL';

export class TandemError extends Error {
  readonly code: TandemErrorCode;

  constructor(code: TandemErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TandemError';
    this.code = code;
  }
}

/** Re-throws a native error (or anything else) as a TandemError, keeping its code. */
export function asTandemError(err: unknown): TandemError {
  if (err instanceof TandemError) return err;
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' && e.code.startsWith('TDM_') ? (e.code as TandemErrorCode) : 'TDM_INTERNAL';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  return new TandemError(code, message, { cause: err });
}
