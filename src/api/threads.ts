// The default thread count: physical cores (hyperthreads share the memory bandwidth that
// decode is bound by), never more than the CPUs this process may use.
import { readFileSync } from 'node:fs';
import os from 'node:os';

/** Physical cores available to this process; the logical count where the topology is unknown. */
export function physicalCoreCount(): number {
  const usable = os.availableParallelism();
  let cpuinfo: string;
  try {
    cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return usable;
  }
  const cores = new Set<string>();
  for (const block of cpuinfo.split(/\n\s*\n/)) {
    const physical = /^physical id\s*:\s*(\d+)/m.exec(block)?.[1];
    const core = /^core id\s*:\s*(\d+)/m.exec(block)?.[1];
    if (physical !== undefined && core !== undefined) cores.add(`${physical}:${core}`);
  }
  return cores.size > 0 ? Math.min(cores.size, usable) : usable;
}
