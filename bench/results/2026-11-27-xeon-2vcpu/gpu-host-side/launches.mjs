const { loadModel } = await import('/work/main/dist/api/index.js');
const model = await loadModel(process.argv[2], { device: 'gpu', policy: 'gpu-only', profile: 'quick', threads: 2, maxSequences: 1, contextSize: 512 });
await model.generate([1, 2, 3, 4], { maxTokens: Number(process.argv[3]), temperature: 0, ignoreEos: true }).result;
await model.dispose();
