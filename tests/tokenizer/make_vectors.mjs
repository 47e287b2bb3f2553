// Regenerates tests/tokenizer/gpt2_vectors.json with a reference tokenizer (js-tiktoken's
// "gpt2" encoding). Inputs are bytes (hex); invalid UTF-8 is first decoded with U+FFFD
// replacement (WHATWG TextDecoder), which is what our tokenizer does too.
// Run: (cd /tmp && npm install js-tiktoken@1.0.21) && NODE_PATH=/tmp/node_modules node tests/tokenizer/make_vectors.mjs
import { createRequire } from 'module';
const require = createRequire(process.env.NODE_PATH + '/');
const { getEncoding } = require('js-tiktoken');
const enc = getEncoding('gpt2');

const text = (s) => Buffer.from(s, 'utf8');
const cases = {
  ascii_prose: text('The Fulton County Grand Jury said Friday an investigation of Atlanta\'s recent primary election produced "no evidence" that any irregularities took place.'),
  code: text('def add(a, b):\n    """Return a + b."""\n    return a+b  # sum\n\nif __name__ == "__main__":\n\tprint(add(1, 2))\n'),
  whitespace_runs: text('a  b   c\t\td\n\ne \n f  \n\n  g    '),
  leading_and_trailing: text('   hello world   '),
  only_spaces: text('     '),
  newlines: text('\n\n\nline\r\nnext\r\n'),
  contractions: text("I'm sure you'll see they've done it, don't they? She'd've said it's Bob's. I'M SHOUTING 'S"),
  numbers: text('12345 3.14159 1,000,000 2024-05-20 0x1F 007 ½ ٣ 二'),
  punctuation: text('Hello!!! What?! (yes) [no] {maybe} ... --- *** @user #tag $5 100% a&b <tag/>'),
  accents: text('café naïve Zürich São Paulo façade élève Ångström'),
  cjk: text('中文分词测试，日本語のテキスト、한국어 텍스트。'),
  emoji: text('I ❤️ T6 👍🏽 👨‍👩‍👧 🇺🇸 😀😀😀'),
  mixed_scripts: text('Привет мир! Γειά σου κόσμε. שלום עולם مرحبا'),
  invalid_lone_bytes: Buffer.from([0x61, 0xff, 0x62, 0xfe, 0x63]),
  invalid_truncated: Buffer.from([0x68, 0x69, 0x20, 0xe2, 0x82, 0x20, 0x6f, 0x6b]),
  invalid_overlong_and_surrogate: Buffer.from([0xc0, 0xaf, 0x20, 0xed, 0xa0, 0x80, 0x20, 0x78]),
  invalid_continuation_only: Buffer.from([0x80, 0x80, 0x41, 0xbf]),
  long_word: text('Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism'),
  empty: Buffer.alloc(0),
};
const out = [];
for (const [name, bytes] of Object.entries(cases)) {
  const decoded = new TextDecoder('utf-8').decode(bytes);
  out.push({ name, hex: bytes.toString('hex'), ids: enc.encode(decoded), decoded_hex: Buffer.from(decoded, 'utf8').toString('hex') });
}
process.stdout.write(JSON.stringify(out, null, 0).replace(/\},\{/g, '},\n{') + '\n');
