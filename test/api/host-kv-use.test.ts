// What loadModel gives the host KV tier by default: locked RAM where sequences can move there,
// a device staging for streamed KV where the policy is 'auto' too, neither where the device
// tier holds every sequence's full context.
import t from 'tap';
import { hostKvUse } from '../../src/api/model.js';

t.test('the host tier is locked only where the device tier cannot hold every context, and staged only for auto', async (t) => {
  const all = 4 * 8; // 4 sequences of 8 blocks
  t.same(hostKvUse('auto', { device: all - 1, host: all }, all, undefined), { lock: true, stream: true }, 'auto under pressure: both');
  t.same(hostKvUse('gpu-only', { device: all - 1, host: all }, all, undefined), { lock: true, stream: false }, 'gpu-only: locked for its swaps, no staging');
  t.same(hostKvUse('overlap', { device: 8, host: all }, all, undefined), { lock: true, stream: false });
  t.same(hostKvUse('pipeline', { device: 8, host: all }, all, undefined), { lock: true, stream: false });
  t.same(hostKvUse('auto', { device: all, host: all }, all, undefined), { lock: false, stream: false }, 'room for every context: nothing');
  t.same(hostKvUse('auto', { device: 8, host: 0 }, all, undefined), { lock: false, stream: false }, 'no host tier: nothing');
  t.same(hostKvUse('auto', { device: all, host: all }, all, true), { lock: true, stream: true }, 'kvStream: true asks for both');
  t.same(hostKvUse('gpu-only', { device: all, host: all }, all, true), { lock: true, stream: false }, 'kvStream: true under a policy that never streams: locked only');
  t.same(hostKvUse('auto', { device: 8, host: all }, all, false), { lock: false, stream: false }, 'kvStream: false: nothing');
});
