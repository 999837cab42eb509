// Sizes the two KV pools from a memory budget: bytes, or a fraction of the memory that is
// free (os.freemem() on a CPU-only machine), split between the device and host tiers.
import { TandemError } from '../native/errors.js';

export interface KvBudgetRequest {
  /** Bytes of one KV block (all layers, K and V). */
  blockBytes: number;
  /** Tokens per block. */
  blockTokens: number;
  /** Tokens one sequence may hold; the budget must fit one such sequence in a runnable tier. */
  contextSize: number;
  /** Blocks such a sequence holds at most (more than its positions' when sliding layers have a table of their own). Default ceil(contextSize / blockTokens). */
  blocksPerSequence?: number;
  /** Budget in bytes over both tiers (wins over `fraction`). */
  bytes?: number;
  /** Budget as a fraction (0, 1] of `freeBytes`. */
  fraction?: number;
  /** Bytes free to take the fraction of. */
  freeBytes: number;
  /** Bytes when neither `bytes` nor `fraction` is given. */
  defaultBytes: number;
  /** Share of the blocks in the device tier, [0, 1]; on a CPU-only machine the device tier is host RAM too. */
  deviceFraction: number;
  /** Only the device tier runs ('gpu-only'): it alone must fit a full context. */
  deviceOnly?: boolean;
}

export interface KvBudget {
  /** Bytes the pools take together. */
  bytes: number;
  numBlocks: { device: number; host: number };
}

const MIB = 1024 * 1024;
/** The native pools index blocks with int32. */
const MAX_BLOCKS = 2 ** 31 - 1;

/** Block counts per tier for a budget; TDM_BAD_ARGUMENT (or TDM_OOM for a fraction of free memory) when one full context does not fit. */
export function planKvBudget(req: KvBudgetRequest): KvBudget {
  const { blockBytes, blockTokens, contextSize, deviceFraction } = req;
  let bytes: number;
  let what: string;
  if (req.bytes !== undefined) {
    bytes = req.bytes;
    what = `kvCacheBytes ${req.bytes}`;
  } else if (req.fraction !== undefined) {
    bytes = Math.floor(req.fraction * req.freeBytes);
    what = `kvCacheFraction ${req.fraction} of the ${(req.freeBytes / MIB).toFixed(0)} MiB free`;
  } else {
    bytes = req.defaultBytes;
    what = `the default KV cache of ${(bytes / MIB).toFixed(1)} MiB`;
  }
  const total = Math.min(Math.floor(bytes / blockBytes), MAX_BLOCKS);
  const device = Math.min(Math.floor(total * deviceFraction), MAX_BLOCKS);
  const host = total - device;
  const perSequence = req.blocksPerSequence ?? Math.ceil(contextSize / blockTokens);
  const largest = req.deviceOnly ? device : Math.max(device, host);
  if (largest < perSequence) {
    const need = perSequence * blockBytes;
    throw new TandemError(
      req.fraction !== undefined && req.bytes === undefined ? 'TDM_OOM' : 'TDM_BAD_ARGUMENT',
      `${what} gives ${largest} KV blocks of ${blockBytes} bytes (${blockTokens} tokens each) in the largest tier, ` +
        `but one sequence of contextSize ${contextSize} needs ${perSequence} (${(need / MIB).toFixed(1)} MiB); ` +
        'give the KV cache more memory or load the model with a smaller contextSize',
    );
  }
  return { bytes: (device + host) * blockBytes, numBlocks: { device, host } };
}

export interface TierBudgetRequest {
  blockBytes: number;
  blockTokens: number;
  contextSize: number;
  /** As in KvBudgetRequest. */
  blocksPerSequence?: number;
  /** Bytes of KV in the device tier (device memory with a GPU). */
  deviceBytes: number;
  /** Bytes of KV in the host tier (host RAM). */
  hostBytes: number;
  /** Only the device tier runs sequences ('gpu-only'; the host tier is swap space): it alone must fit a full context. */
  deviceOnly: boolean;
}

/** Block counts from a byte budget per tier; TDM_BAD_ARGUMENT when no runnable tier fits one full context. */
export function planTierBudget(req: TierBudgetRequest): KvBudget {
  const { blockBytes, blockTokens, contextSize } = req;
  const device = Math.min(Math.floor(req.deviceBytes / blockBytes), MAX_BLOCKS);
  const host = Math.min(Math.floor(req.hostBytes / blockBytes), MAX_BLOCKS);
  const perSequence = req.blocksPerSequence ?? Math.ceil(contextSize / blockTokens);
  const largest = req.deviceOnly ? device : Math.max(device, host);
  if (largest < perSequence) {
    throw new TandemError(
      'TDM_BAD_ARGUMENT',
      `kvDeviceBytes ${req.deviceBytes} and kvHostBytes ${req.hostBytes} give ${device} device and ${host} host KV blocks of ${blockBytes} bytes ` +
        `(${blockTokens} tokens each), but one sequence of contextSize ${contextSize} needs ${perSequence} in ` +
        `${req.deviceOnly ? 'the device tier (policy gpu-only runs sequences there only)' : 'one tier'}; ` +
        'give the KV cache more memory or load the model with a smaller contextSize',
    );
  }
  return { bytes: (device + host) * blockBytes, numBlocks: { device, host } };
}
