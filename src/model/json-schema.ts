// JSON Schema to the value nodes JSON mode follows (json-mode.ts): the subset that a
// byte-level recognizer can keep exactly, as OpenAI's structured outputs use it. Anything else
// is refused by name rather than silently not enforced.
//
// Objects write their properties in the schema's order, each at most once, the required ones
// always (properties a schema does not list are never written, which every schema allows
// unless it requires more properties than it lists). Arrays take items, minItems and maxItems;
// strings take minLength and maxLength (characters, an escape counting as one) but no pattern
// or format; integers take minimum, maximum and the exclusive bounds, numbers no bounds. enum
// and const take any JSON values;
// OpenAPI's nullable adds null. anyOf, oneOf and lists of types need options that start
// differently (an object, an array, a string, a number; their enum, const, boolean and null
// options count as one). $ref reaches $defs and definitions in the same schema, recursively.
import { TandemError } from '../native/errors.js';
import { nodeId, type PropNode, type ValueNode } from './json-mode.js';
import { utf8Encode } from './tokenizer/unicode.js';

/** Keywords that describe without constraining. */
const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', '$schema', '$id', '$comment', 'deprecated', 'readOnly', 'writeOnly', '$defs', 'definitions']);
const HANDLED = new Set(['type', 'properties', 'required', 'additionalProperties', 'items', 'minItems', 'maxItems', 'minLength', 'maxLength', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'enum', 'const', 'anyOf', 'oneOf', 'nullable', '$ref']);

type Schema = Record<string, unknown>;


function fail(path: string, message: string): never {
  throw new TandemError('TDM_BAD_ARGUMENT', `JSON schema at ${path}: ${message}`);
}

/** The value node of `schema`'s root, which must be an object or an array (a reply is one). */
export function compileSchema(schema: unknown): ValueNode {
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) fail('#', 'a schema must be an object');
  const root = schema as Schema;
  const refs = new Map<string, ValueNode>();

  const compile = (s: unknown, path: string): ValueNode => {
    const node = compileOne(s, path);
    // OpenAPI's nullable: the value or null.
    return (s as Schema | null)?.nullable === true ? union([node, literals([null])], path) : node;
  };

  const compileOne = (s: unknown, path: string): ValueNode => {
    if (s === true || (typeof s === 'object' && s !== null && !Array.isArray(s) && Object.keys(s).every((k) => ANNOTATIONS.has(k)))) {
      return { kind: 'any', id: nodeId() };
    }
    if (typeof s !== 'object' || s === null || Array.isArray(s)) fail(path, 'a schema must be an object or true');
    const o = s as Schema;
    const unsupported = Object.keys(o).filter((k) => !ANNOTATIONS.has(k) && !HANDLED.has(k));
    if (unsupported.length > 0) fail(path, `${unsupported.map((k) => `'${k}'`).join(', ')} cannot be enforced by tandem's JSON mode`);
    if (o.$ref !== undefined) return reference(o, path);
    if (o.const !== undefined) return literals([o.const]);
    if (o.enum !== undefined) {
      if (!Array.isArray(o.enum) || o.enum.length === 0) fail(path, 'enum must be a non-empty array');
      return literals(o.enum);
    }
    const options = o.anyOf ?? o.oneOf;
    if (options !== undefined) {
      if (o.anyOf !== undefined && o.oneOf !== undefined) fail(path, 'anyOf and oneOf together are not supported');
      if (!Array.isArray(options) || options.length === 0) fail(path, 'anyOf/oneOf must be a non-empty array');
      return union(options.map((x, i) => compile(x, `${path}/${o.anyOf ? 'anyOf' : 'oneOf'}/${i}`)), path);
    }
    const type = o.type;
    if (Array.isArray(type)) {
      if (type.length === 0) fail(path, 'type must not be an empty list');
      return union(type.map((t) => typed(o, t, path)), path);
    }
    return type === undefined ? { kind: 'any', id: nodeId() } : typed(o, type, path);
  };

  const reference = (o: Schema, path: string): ValueNode => {
    const ref = o.$ref;
    if (typeof ref !== 'string') fail(path, '$ref must be a string');
    if (Object.keys(o).some((k) => k !== '$ref' && !ANNOTATIONS.has(k))) fail(path, '$ref beside other constraints is not supported');
    const known = refs.get(ref);
    if (known) return known;
    const m = /^#\/(\$defs|definitions)\/([^/]+)$/.exec(ref);
    const defs = m ? (root[m[1]!] as Schema | undefined) : undefined;
    const target = m && defs && typeof defs === 'object' ? defs[decodeURIComponent(m[2]!).replace(/~1/g, '/').replace(/~0/g, '~')] : undefined;
    if (target === undefined) fail(path, `$ref '${ref}' does not name a schema in this schema's $defs or definitions`);
    // The node is registered before its schema is compiled, then filled in: a schema may refer to itself (a tree).
    const node = { kind: 'any', id: nodeId() } as ValueNode;
    refs.set(ref, node);
    Object.assign(node, compile(target, ref), { id: node.id });
    return node;
  };

  const typed = (o: Schema, type: unknown, path: string): ValueNode => {
    switch (type) {
      case 'object':
        return object(o, path);
      case 'array': {
        const min = count(o.minItems, 0, `${path}/minItems`);
        const max = count(o.maxItems, Infinity, `${path}/maxItems`);
        if (min > max) fail(path, 'minItems is above maxItems');
        return { kind: 'array', id: nodeId(), items: o.items === undefined ? { kind: 'any', id: nodeId() } : compile(o.items, `${path}/items`), minItems: min, maxItems: max };
      }
      case 'string': {
        const min = count(o.minLength, 0, `${path}/minLength`);
        const max = count(o.maxLength, Infinity, `${path}/maxLength`);
        if (min > max) fail(path, 'minLength is above maxLength');
        return { kind: 'string', id: nodeId(), minLength: min, maxLength: max };
      }
      case 'number':
      case 'integer':
        return number(o, type === 'integer', path);
      case 'boolean':
        return literals([true, false]);
      case 'null':
        return literals([null]);
      default:
        return fail(path, `type ${JSON.stringify(type)} is not one of object, array, string, number, integer, boolean, null`);
    }
  };

  const object = (o: Schema, path: string): ValueNode => {
    const properties = o.properties;
    if (properties !== undefined && (typeof properties !== 'object' || properties === null || Array.isArray(properties))) fail(`${path}/properties`, 'must be an object');
    const required = o.required ?? [];
    if (!Array.isArray(required) || !required.every((r) => typeof r === 'string')) fail(`${path}/required`, 'must be an array of property names');
    const names = Object.keys((properties as Schema | undefined) ?? {});
    const missing = (required as string[]).filter((r) => !names.includes(r));
    if (missing.length > 0) fail(`${path}/required`, `names properties the schema does not describe: ${missing.join(', ')}`);
    const extra = o.additionalProperties;
    if (names.length === 0 && extra !== false) {
      // No properties listed: any keys, with values of additionalProperties (any value when absent or true).
      return { kind: 'object', id: nodeId(), props: null, values: extra === undefined || extra === true ? { kind: 'any', id: nodeId() } : compile(extra, `${path}/additionalProperties`) };
    }
    const props: PropNode[] = names.map((name) => ({
      key: utf8Encode(JSON.stringify(name)),
      value: compile((properties as Schema)[name], `${path}/properties/${name}`),
      required: (required as string[]).includes(name),
    }));
    return { kind: 'object', id: nodeId(), props, values: { kind: 'any', id: nodeId() } };
  };

  const node = compile(root, '#');
  const top = node.kind === 'union' ? node.options : [node];
  if (!top.every((n) => n.kind === 'object' || n.kind === 'array' || n.kind === 'any')) fail('#', 'the reply must be an object or an array');
  // A root with no type is any value; a reply is still one object or array.
  return node.kind === 'any' ? { kind: 'union', id: nodeId(), options: [compileSchema({ type: 'object' }), compileSchema({ type: 'array' })] } : node;
}

const BOUNDS = ['minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum'] as const;

/** A number node; an integer may have bounds (a number's cannot be kept exactly byte by byte). */
function number(o: Schema, integer: boolean, path: string): ValueNode {
  const given = BOUNDS.filter((k) => o[k] !== undefined);
  if (given.length === 0) return { kind: 'number', id: nodeId(), integer };
  if (!integer) fail(path, `${given.map((k) => `'${k}'`).join(', ')} cannot be enforced by tandem's JSON mode on a number (on an integer it can)`);
  for (const k of given) if (typeof o[k] !== 'number' || !Number.isFinite(o[k])) fail(`${path}/${k}`, 'must be a finite number');
  const lows = [o.minimum === undefined ? undefined : BigInt(Math.ceil(o.minimum as number)), o.exclusiveMinimum === undefined ? undefined : BigInt(Math.floor(o.exclusiveMinimum as number)) + 1n];
  const highs = [o.maximum === undefined ? undefined : BigInt(Math.floor(o.maximum as number)), o.exclusiveMaximum === undefined ? undefined : BigInt(Math.ceil(o.exclusiveMaximum as number)) - 1n];
  const min = lows.reduce<bigint | undefined>((a, v) => (v === undefined ? a : a === undefined || v > a ? v : a), undefined);
  const max = highs.reduce<bigint | undefined>((a, v) => (v === undefined ? a : a === undefined || v < a ? v : a), undefined);
  if (min !== undefined && max !== undefined && min > max) fail(path, 'no integer lies within its bounds');
  return { kind: 'number', id: nodeId(), integer, ...(min !== undefined ? { min } : {}), ...(max !== undefined ? { max } : {}) };
}

function count(v: unknown, fallback: number, path: string): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) fail(path, 'must be a non-negative integer');
  return v;
}

function literals(values: unknown[]): ValueNode {
  return { kind: 'literals', id: nodeId(), texts: values.map((v) => utf8Encode(JSON.stringify(v))) };
}

/** The bytes a value of `node` may start with. */
function firstBytes(node: ValueNode): Set<number> {
  switch (node.kind) {
    case 'any':
      return new Set([...'{["-0123456789tfn'].map((c) => c.charCodeAt(0)));
    case 'object':
      return new Set([0x7b]);
    case 'array':
      return new Set([0x5b]);
    case 'string':
      return new Set([0x22]);
    case 'number':
      return new Set([...'-0123456789'].map((c) => c.charCodeAt(0)));
    case 'literals':
      return new Set(node.texts.map((t) => t[0]!));
    case 'union':
      return new Set(node.options.flatMap((o) => [...firstBytes(o)]));
  }
}

function union(options: ValueNode[], path: string): ValueNode {
  // Literal options (consts, enums, booleans, null) are one set of texts, however many there are.
  const texts = options.flatMap((o) => (o.kind === 'literals' ? o.texts : []));
  if (texts.length > 0 && options.filter((o) => o.kind === 'literals').length > 1) {
    options = [...options.filter((o) => o.kind !== 'literals'), { kind: 'literals', id: nodeId(), texts }];
  }
  if (options.length === 1) return options[0]!;
  const seen = new Set<number>();
  for (const o of options) {
    for (const b of firstBytes(o)) {
      if (seen.has(b)) fail(path, `the options of anyOf, oneOf or a list of types must start differently (two can start with ${JSON.stringify(String.fromCharCode(b))})`);
      seen.add(b);
    }
  }
  return { kind: 'union', id: nodeId(), options };
}
