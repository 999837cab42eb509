// Host-side time of a GPU decode step: the executor and engine over null kernels (emulated
// backend with TDM_EMU_NULL_KERNELS=1), per batch size.
const { loadModel } = await import('/work/main/dist/api/index.js');
const file = process.argv[2];
const batches = (process.argv[3] ?? '1,8,32').split(',').map(Number);
const model = await loadModel(file, { device: 'gpu', policy: 'gpu-only', profile: 'quick', threads: 2, maxSequences: Math.max(...batches), contextSize: 512, kvDeviceBytes: 2 ** 30, kvHostBytes: 2 ** 28 });
console.log(model.info.deviceName, model.info.placement);
for (const n of batches) {
  const steps = [];
  const off = model.onStep((s) => { if (s.tokens === n) steps.push(s); });
  await Promise.all(Array.from({ length: n }, (_, i) => model.generate([1, 2, 3, 4 + i], { maxTokens: 48, temperature: 0, ignoreEos: true }).result));
  off();
  const m = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const tail = steps.slice(8);
  const phases = {};
  for (const s of tail) for (const [k, v] of Object.entries(s.phaseUs)) phases[k] = (phases[k] ?? 0) + v / tail.length;
  console.log(`batch ${n}: ${tail.length} decode steps, mean ${m(tail.map((s) => s.totalUs)).toFixed(0)} us/step;`, JSON.stringify(Object.fromEntries(Object.entries(phases).filter(([, v]) => v > 5).map(([k, v]) => [k, Math.round(v)]))));
}
await model.dispose();
