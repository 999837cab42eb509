// What else the machine did during a run: CPU time of the whole machine (/proc/stat)
// against this process's own (process.cpuUsage(), all its threads), so that a report can
// say when other processes competed for the cores; and the run's peak resident memory.
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';

/** USER_HZ: the unit of /proc/stat, 100 on every Linux configuration in use. */
const TICKS_PER_S = 100;

interface CpuTimes {
  /** CPU seconds spent busy over all CPUs (user, nice, system, irq, softirq). */
  busyS: number;
  /** CPU seconds stolen by the hypervisor. */
  stealS: number;
}

/** Machine-wide CPU times, or undefined where /proc/stat is not there (macOS, Windows). */
export function readCpuTimes(stat?: string): CpuTimes | undefined {
  let text = stat;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/stat', 'utf8');
    } catch {
      return undefined;
    }
  }
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) return undefined;
  // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user.
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  return { busyS: (user + nice + system + irq + softirq) / TICKS_PER_S, stealS: steal / TICKS_PER_S };
}

export interface CpuLoad {
  wallS: number;
  /** CPUs this process may run on. */
  cpus: number;
  /** CPU seconds this process used (all threads). */
  ownCpuS: number;
  /** CPU seconds every other process used (machine busy time minus ours; 0 when unknown). */
  otherCpuS: number;
  /** Others' average CPUs busy over the run: otherCpuS / wallS. */
  otherCpus: number;
  /** Seconds of CPU the hypervisor took away, over all CPUs. */
  stealS: number;
  /** /proc/loadavg's 1-minute figure at the end. */
  loadAvg1: number;
  /** False where machine-wide times could not be read. */
  measured: boolean;
}

/** Share of the machine (0 to 1) that other processes may use before a run is flagged. */
export const OTHER_LOAD_WARN_SHARE = 0.1;

/** Measures the CPU load around a run: start() before, stop() after. */
export class CpuLoadMonitor {
  private t0 = 0;
  private own0: NodeJS.CpuUsage = { user: 0, system: 0 };
  private machine0: CpuTimes | undefined;

  start(): void {
    this.machine0 = readCpuTimes();
    this.own0 = process.cpuUsage();
    this.t0 = performance.now();
  }

  stop(): CpuLoad {
    const wallS = (performance.now() - this.t0) / 1000;
    const own = process.cpuUsage(this.own0);
    const machine1 = readCpuTimes();
    const ownCpuS = (own.user + own.system) / 1e6;
    const measured = this.machine0 !== undefined && machine1 !== undefined;
    // Tick granularity (10 ms per CPU) can put the difference slightly below zero.
    const otherCpuS = measured ? Math.max(0, machine1!.busyS - this.machine0!.busyS - ownCpuS) : 0;
    return {
      wallS,
      cpus: os.availableParallelism(),
      ownCpuS,
      otherCpuS,
      otherCpus: wallS > 0 ? otherCpuS / wallS : 0,
      stealS: measured ? machine1!.stealS - this.machine0!.stealS : 0,
      loadAvg1: os.loadavg()[0] ?? 0,
      measured,
    };
  }
}

/** A warning for a run during which other processes used more than OTHER_LOAD_WARN_SHARE of the machine, else undefined. */
export function loadWarning(load: CpuLoad): string | undefined {
  if (!load.measured || !(load.wallS > 0)) return undefined;
  // /proc/stat counts whole ticks: allow one tick per CPU at each end before blaming anyone.
  const tickError = (2 * load.cpus) / TICKS_PER_S;
  const share = Math.max(0, load.otherCpuS - tickError) / load.wallS / load.cpus;
  const steal = load.wallS > 0 ? load.stealS / load.wallS / load.cpus : 0;
  const parts: string[] = [];
  if (share > OTHER_LOAD_WARN_SHARE) parts.push(`other processes used ${load.otherCpus.toFixed(2)} of ${load.cpus} CPUs (${(share * 100).toFixed(0)}%)`);
  if (steal > OTHER_LOAD_WARN_SHARE) parts.push(`the hypervisor stole ${(steal * 100).toFixed(0)}% of the CPU time`);
  return parts.length > 0 ? parts.join('; ') : undefined;
}

/**
 * Peak resident memory of this process over a window: reset() clears the kernel's
 * high-water mark (/proc/self/clear_refs, Linux 4.0+) and peakBytes() reads it. Where the
 * reset is refused the peak is since the process started, and `sinceStart` says so.
 */
export class PeakMemory {
  sinceStart = false;

  reset(): void {
    try {
      writeFileSync('/proc/self/clear_refs', '5');
      this.sinceStart = false;
    } catch {
      this.sinceStart = true;
    }
  }

  /** Bytes. */
  peakBytes(): number {
    try {
      const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
      if (m) return Number(m[1]) * 1024;
    } catch {
      // Not Linux: the peak over the process's life is what the OS reports.
    }
    this.sinceStart = true;
    return process.resourceUsage().maxRSS * 1024;
  }
}

/** Resident memory of this process now (bytes). */
export const rssBytes = (): number => process.memoryUsage.rss();

/** Output of a command, or undefined when it is missing, fails or takes longer than timeoutMs. */
export function runCommand(cmd: string, args: string[], timeoutMs = 5000): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout) => resolve(err ? undefined : stdout));
  });
}

/**
 * Peak GPU memory this process holds during a run, sampled from nvidia-smi every
 * `intervalMs` (ROCm and machines without nvidia-smi: not measured, `peakBytes` undefined).
 */
export class DeviceMemorySampler {
  private timer: NodeJS.Timeout | undefined;
  private peak: number | undefined;
  private busy = false;

  start(intervalMs = 500): void {
    this.peak = undefined;
    const sample = async () => {
      if (this.busy) return;
      this.busy = true;
      const out = await runCommand('nvidia-smi', ['--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits']);
      this.busy = false;
      for (const line of out?.split('\n') ?? []) {
        const [pid, mib] = line.split(',').map((s) => Number(s.trim()));
        if (pid === process.pid && Number.isFinite(mib)) this.peak = Math.max(this.peak ?? 0, mib! * 2 ** 20);
      }
    };
    void sample();
    this.timer = setInterval(() => void sample(), intervalMs);
  }

  /** Bytes, or undefined when nothing was measured. */
  stop(): number | undefined {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    return this.peak;
  }
}
