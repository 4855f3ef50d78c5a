// list.mjs FILE: the canonical listing of a GGUF file (see tests/gguf_list.c,
// which prints the same from librotary), read with @huggingface/gguf.
//
// @huggingface/gguf returns tensorInfos[i].shape in the order the file stores
// the dimensions, which is ggml's order: shape[0] is ne[0], the contiguous
// dimension (a llama token_embd.weight is [n_embd, n_vocab]). We print it as
// is, and so does gguf_list. Integers of 64 bits come as BigInt, float32
// values widened to float64, strings decoded by TextDecoder (invalid UTF-8
// becomes U+FFFD, a leading BOM is dropped).
import { gguf } from "@huggingface/gguf";
import { closeSync, openSync, readSync } from "node:fs";

const U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7, STRING = 8,
  ARRAY = 9, U64 = 10, I64 = 11, F64 = 12;
const TYPE_NAMES = ["U8", "I8", "U16", "I16", "U32", "I32", "F32", "BOOL", "STRING", "ARRAY",
  "U64", "I64", "F64"];

// ggml tensor types: [values per block, bytes per block]
const GGML = {
  0: [1, 4], 1: [1, 2], 2: [32, 18], 3: [32, 20], 6: [32, 22], 7: [32, 24], 8: [32, 34],
  9: [32, 40], 10: [256, 84], 11: [256, 110], 12: [256, 144], 13: [256, 176], 14: [256, 210],
  15: [256, 292], 16: [256, 66], 17: [256, 74], 18: [256, 98], 19: [256, 50], 20: [32, 18],
  21: [256, 110], 22: [256, 82], 23: [256, 136], 24: [1, 1], 25: [1, 2], 26: [1, 4],
  27: [1, 8], 28: [1, 8], 29: [256, 56], 30: [1, 2], 34: [256, 54], 35: [256, 66],
  39: [32, 17], 40: [64, 36], 41: [128, 18], 42: [64, 18],
};

// FNV-1a 64 in two 32-bit halves; state [hi, lo].
function fnv(state, bytes) {
  let hi = state[0], lo = state[1];
  for (let i = 0; i < bytes.length; i++) {
    lo = (lo ^ bytes[i]) >>> 0;
    const p = lo * 0x1b3; // < 2^41: exact
    hi = (Math.imul(hi, 0x1b3) + Math.floor(p / 4294967296) + (lo << 8)) >>> 0;
    lo = p >>> 0;
  }
  state[0] = hi;
  state[1] = lo;
}
const fnvNew = () => [0xcbf29ce4, 0x84222325];
const fnvHex = (s) => s[0].toString(16).padStart(8, "0") + s[1].toString(16).padStart(8, "0");

function f64hex(x) {
  if (Number.isNaN(x)) return '"nan"';
  const dv = new DataView(new ArrayBuffer(8));
  dv.setFloat64(0, x, true);
  return '"' + dv.getBigUint64(0, true).toString(16).padStart(16, "0") + '"';
}

function text(v, type) {
  switch (type) {
    case STRING: return JSON.stringify(v);
    case F32: case F64: return f64hex(Number(v));
    case BOOL: return v ? "true" : "false";
    default: return String(v);
  }
}

const file = process.argv[2];
if (!file) {
  console.error("usage: node list.mjs FILE.gguf");
  process.exit(2);
}
let r;
try {
  r = await gguf(file, { allowLocalFile: true, typedMetadata: true });
} catch (e) {
  console.error("error: " + e.message);
  process.exit(1);
}
const enc = new TextEncoder();
const out = [];
out.push(`{"version":${r.metadata.version},"tensor_count":${r.metadata.tensor_count},` +
  `"kv_count":${r.metadata.kv_count}}`);
const lines = [];
for (const [key, e] of Object.entries(r.typedMetadata)) {
  if (key === "version" || key === "tensor_count" || key === "kv_count") continue;
  const k = JSON.stringify(key);
  let line = `{"key":${k},"type":"${TYPE_NAMES[e.type]}"`;
  if (e.type === ARRAY) {
    const a = e.value;
    line += `,"elem":"${TYPE_NAMES[e.subType]}","n":${a.length}`;
    if (e.subType !== ARRAY) {
      const h = fnvNew();
      const nl = enc.encode("\n");
      for (const x of a) {
        fnv(h, enc.encode(text(x, e.subType)));
        fnv(h, nl);
      }
      const head = a.slice(0, 3).map((x) => text(x, e.subType)).join(",");
      const tail = a.slice(-3).map((x) => text(x, e.subType)).join(",");
      line += `,"head":[${head}],"tail":[${a.length ? tail : ""}],"fnv":"${fnvHex(h)}"`;
    }
  } else {
    line += `,"value":${text(e.value, e.type)}`;
  }
  lines.push([Buffer.from(k), line + "}"]);
}
lines.sort((a, b) => Buffer.compare(a[0], b[0]));
for (const [, l] of lines) out.push(l);

const fd = openSync(file, "r");
const chunk = Buffer.alloc(1 << 22);
for (const t of r.tensorInfos) {
  const shape = t.shape.map(String).join(",");
  const info = GGML[t.dtype];
  let hash = "null";
  if (info) {
    const n = t.shape.reduce((acc, v) => acc * v, 1n);
    let left = (n / BigInt(info[0])) * BigInt(info[1]);
    let pos = r.tensorDataOffset + t.offset;
    const h = fnvNew();
    while (left > 0n) {
      const want = left < BigInt(chunk.length) ? Number(left) : chunk.length;
      const got = readSync(fd, chunk, 0, want, pos);
      if (got <= 0) {
        console.error(`error: tensor ${t.name}: data past the end of the file`);
        process.exit(1);
      }
      fnv(h, chunk.subarray(0, got));
      left -= BigInt(got);
      pos += BigInt(got);
    }
    hash = `"${fnvHex(h)}"`;
  }
  out.push(`{"tensor":${JSON.stringify(t.name)},"type":${t.dtype},"shape":[${shape}],"fnv":${hash}}`);
}
closeSync(fd);
process.stdout.write(out.join("\n") + "\n");
