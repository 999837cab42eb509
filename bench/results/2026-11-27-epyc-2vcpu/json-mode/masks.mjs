import { loadTokenizer } from '../../../../dist/model/tokenizer/index.js';
import { JsonVocabulary, JSON_START, jsonStepBytes } from '../../../../dist/model/json-mode.js';
for (const f of process.argv.slice(2)) {
  const tok = loadTokenizer(f);
  let t0 = performance.now();
  const v = new JsonVocabulary(tok.numTokens, (id) => tok.tokenBytes(id));
  const build = performance.now() - t0;
  const times = [];
  for (const p of ['', '{', '{"k', '{"k":', '{"k":12', '{"k":"v"', '{"k":[', '{"k":"v",']) {
    const st = jsonStepBytes(JSON_START, new TextEncoder().encode(p));
    t0 = performance.now();
    v.mask(st, [0]);
    times.push(`${JSON.stringify(p)} ${(performance.now() - t0).toFixed(1)}`);
  }
  console.log(f.split('/').pop(), tok.numTokens, 'build', build.toFixed(0), 'ms; masks (ms):', times.join(', '));
}
