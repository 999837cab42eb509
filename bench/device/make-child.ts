// Writes one synthetic GGUF in its own process, so that the device check can make its large model
// while the op cases run. Usage: node make-child.js <ModelSpec JSON> <out.gguf>
import { makeModel, type ModelSpec } from '../../src/model/synthetic.js';

const [specJson, out] = process.argv.slice(2);
makeModel(JSON.parse(specJson!) as ModelSpec, out!).catch((err) => {
  console.error(`make-child: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
});
