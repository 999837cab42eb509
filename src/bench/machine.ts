// The machine a bench ran on, for the report: CPU model, cores, the ISA extensions the
// kernels care about, memory, read bandwidth measured on the spot, and the GPU and driver
// when there is one. Numbers from two reports compare only on like machines.
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { physicalCoreCount } from '../api/threads.js';
import { native } from '../native/binding.js';
import { asTandemError } from '../native/errors.js';
import { runCommand } from './load.js';

/** ISA extensions that matter to tandem's and llama.cpp's kernels, as /proc/cpuinfo names them. */
const ISA_FLAGS = [
  'sse4_2', 'avx', 'avx2', 'fma', 'f16c', 'avx_vnni', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni', 'avx512_bf16',
  'avx512_fp16', 'amx_tile', 'amx_int8', 'amx_bf16', 'asimd', 'asimddp', 'sve', 'sve2', 'i8mm', 'bf16',
];

export interface GpuInfo {
  name: string;
  driver: string;
  /** Bytes. */
  memoryBytes: number;
  /** 'nvidia-smi' or 'rocm-smi'. */
  source: string;
}

export interface ReadBandwidth {
  threads: number;
  /** Best of the samples (bytes/s): the floor is a bound, so it takes the most the machine showed. */
  bytesPerSecond: number;
  /** Each measurement's best pass (bytes/s), e.g. one when the bench starts and one when it ends. */
  samples: number[];
  /** Buffer read per pass (bytes). */
  bytes: number;
  passes: number;
}

export interface MachineInfo {
  hostname: string;
  os: string;
  node: string;
  cpuModel: string;
  /** CPUs this process may use. */
  logicalCpus: number;
  physicalCores: number;
  /** ISA_FLAGS present on this CPU. */
  isa: string[];
  /** Runs under a hypervisor (cpuinfo's 'hypervisor' flag). */
  virtualized: boolean;
  /** Last-level cache as sysfs reports it, e.g. '35.8 MiB'... or undefined. */
  llc: string | undefined;
  memoryBytes: number;
  gpus: GpuInfo[];
  /** Read bandwidth per thread count, measured when the bench started. */
  bandwidth: ReadBandwidth[];
}

function cpuFlags(): { flags: Set<string>; model: string | undefined } {
  try {
    const text = readFileSync('/proc/cpuinfo', 'utf8');
    const flags = /^(?:flags|Features)\s*:\s*(.*)$/m.exec(text)?.[1]?.split(/\s+/) ?? [];
    const model = /^model name\s*:\s*(.*)$/m.exec(text)?.[1];
    return { flags: new Set(flags), model };
  } catch {
    return { flags: new Set(), model: undefined };
  }
}

function lastLevelCache(): string | undefined {
  for (const index of [3, 2]) {
    try {
      return readFileSync(`/sys/devices/system/cpu/cpu0/cache/index${index}/size`, 'utf8').trim();
    } catch {
      // This level is absent; try the next one down.
    }
  }
  return undefined;
}

/** GPUs that nvidia-smi or rocm-smi list; none where neither tool runs. */
export async function detectGpus(): Promise<GpuInfo[]> {
  const nv = await runCommand('nvidia-smi', ['--query-gpu=name,driver_version,memory.total', '--format=csv,noheader,nounits']);
  if (nv) {
    return nv
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [name = '', driver = '', mib = '0'] = line.split(',').map((s) => s.trim());
        return { name, driver, memoryBytes: Number(mib) * 2 ** 20, source: 'nvidia-smi' };
      });
  }
  const rocm = await runCommand('rocm-smi', ['--showproductname', '--showdriverversion', '--showmeminfo', 'vram', '--json']);
  if (rocm) {
    try {
      const data = JSON.parse(rocm) as Record<string, Record<string, string>>;
      const driver = data.system?.['Driver version'] ?? '';
      return Object.entries(data)
        .filter(([k]) => k.startsWith('card'))
        .map(([, v]) => ({
          name: v['Card Series'] ?? v['Card series'] ?? v['Card model'] ?? 'AMD GPU',
          driver,
          memoryBytes: Number(v['VRAM Total Memory (B)'] ?? 0),
          source: 'rocm-smi',
        }));
    } catch {
      return [];
    }
  }
  return [];
}

/** Probe buffer: far beyond any last-level cache, small enough for any machine that runs a model. */
export const PROBE_BYTES = 256 * 2 ** 20;

/** Measures read bandwidth with `threads` threads (native/cpu/membw.cpp). */
export async function measureBandwidth(threads: number, passes = 10, bytes = PROBE_BYTES): Promise<ReadBandwidth> {
  try {
    const r = await native().measureReadBandwidth(bytes, threads, passes);
    return { threads, bytesPerSecond: r.bytesPerSecond, samples: [r.bytesPerSecond], bytes: r.bytes, passes: r.passes };
  } catch (err) {
    throw asTandemError(err);
  }
}

/** Describes this machine; `threadCounts` are the thread counts to measure bandwidth at (1 is always measured). */
export async function describeMachine(threadCounts: readonly number[]): Promise<MachineInfo> {
  const { flags, model } = cpuFlags();
  const bandwidth: ReadBandwidth[] = [];
  for (const t of [...new Set([1, ...threadCounts])].sort((a, b) => a - b)) bandwidth.push(await measureBandwidth(t));
  return {
    hostname: os.hostname(),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    cpuModel: model ?? os.cpus()[0]?.model ?? 'unknown',
    logicalCpus: os.availableParallelism(),
    physicalCores: physicalCoreCount(),
    isa: ISA_FLAGS.filter((f) => flags.has(f)),
    virtualized: flags.has('hypervisor'),
    llc: lastLevelCache(),
    memoryBytes: os.totalmem(),
    gpus: await detectGpus(),
    bandwidth,
  };
}

/** Measures every thread count of `machine.bandwidth` again, adding a sample to each (the best stays the value). */
export async function remeasureBandwidth(machine: Pick<MachineInfo, 'bandwidth'>): Promise<void> {
  for (const b of machine.bandwidth) {
    const again = await measureBandwidth(b.threads, b.passes, b.bytes);
    b.samples.push(again.bytesPerSecond);
    b.bytesPerSecond = Math.max(...b.samples);
  }
}

/** Bandwidth measured at `threads`, else at the nearest thread count measured. */
export function bandwidthAt(machine: Pick<MachineInfo, 'bandwidth'>, threads: number): ReadBandwidth | undefined {
  let best: ReadBandwidth | undefined;
  for (const b of machine.bandwidth) if (!best || Math.abs(b.threads - threads) < Math.abs(best.threads - threads)) best = b;
  return best;
}
