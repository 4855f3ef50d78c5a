"""pretok_ref: check rotary's llama-bpe pre-tokenizer against Python's
`regex` module (Debian python3-regex), an implementation we did not write,
running the pattern of Llama 3's tokenizer.json.

usage: python3 pretok_ref.py PRETOK_CHECK_BINARY [DATA_DIR]

The texts: hand-written edge cases (contractions in every case, digit runs,
line breaks of every kind, Unicode letters, digits and spaces, emoji,
code), every input of llama.cpp's tokenizer test file in DATA_DIR/gguf/ and
the first 20,000 characters of tinyshakespeare.txt (DATA_DIR) and of
Debian's fortunes-zh, when they are there.
Each is cut by the oracle and sent to pretok_check (see its comment), which
exits 0 only when rotary cuts every text the same way.
"""
import os
import subprocess
import sys

import regex

# The pre_tokenizer pattern of Meta's Llama 3 tokenizer.json.
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CASES = [
    "Hello world", " Hello world", "  leading spaces", "trailing spaces   ",
    "I'm here, you're there; it's they'VE we'LL he'D I'M SHE'S don't DON'T",
    "o'clock rock'n'roll 'quoted' ''", "1 12 123 1234 12345 1234567 3.14159 -42 1e10",
    "x1y22z333w4444", "line one\nline two\n\nline four\r\nwindows\rold mac",
    "tabs\tand\t\ttabs \t mixed", "\n\n\n", "   \n   \n", "!!! ??? ... ---\n\n",
    "a.b,c;d:e!f?g", "(parens) [brackets] {braces} <angles>", "email@example.com",
    "https://example.com/path?query=1&x=2#frag", "def f(x):\n    return x ** 2\n",
    "int main(void) {\n\treturn 0;\n}\n", "    indented\n        more\n",
    "你好世界，这是一个测试。", "日本語のテキスト", "한국어 텍스트", "Ελληνικά κείμενο",
    "Русский текст", "עברית", "العربية ١٢٣٤٥", "हिन्दी पाठ", "ไทย",
    "café naïve résumé Ångström", "emoji 🦙🦙 and 👍🏽 and 🇫🇷", "\u00a0nbsp\u00a0\u2003em space",
    "\u3000ideographic space", "zero\u200bwidth", "Ⅻ roman ⅻ ½ ¾ ²³", "١٢٣٤٥٦ ۱۲۳",
    "mixedCASE camelCase snake_case kebab-case", "$100 €50 ¥1000 £5",
    "'s 's 'S", " 's", "!'s", "a'sb", "   'll", "\n's",
]


def texts(data):
    yield from CASES
    inp = os.path.join(data, "gguf", "ggml-vocab-gpt-2.gguf.inp")
    if os.path.exists(inp):
        with open(inp, encoding="utf-8") as f:
            for t in f.read().split("\n__ggml_vocab_test__\n"):
                if t:
                    yield t
    for p in (os.path.join(data, "tinyshakespeare.txt"), "/usr/share/games/fortunes/chinese"):
        if os.path.exists(p):
            with open(p, encoding="utf-8", errors="replace") as f:
                yield f.read(20000)


def main():
    binary = sys.argv[1]
    data = sys.argv[2] if len(sys.argv) > 2 else ""
    pat = regex.compile(LLAMA3)
    lines, n = [], 0
    for t in texts(data):
        b = t.encode("utf-8")
        lines.append("S " + b.hex())
        words = pat.findall(t)
        if "".join(words) != t:
            sys.exit("pretok_ref: the oracle left characters out of %r" % t[:40])
        lines += ["W " + w.encode("utf-8").hex() for w in words]
        n += 1
    r = subprocess.run([binary, "llama-bpe"], input=("\n".join(lines) + "\n").encode(),
                       capture_output=True)
    sys.stdout.buffer.write(r.stdout)  # a failure may print pieces of characters
    sys.stderr.buffer.write(r.stderr)
    sys.stdout.flush()
    print("pretok_ref: %d texts" % n)
    sys.exit(r.returncode)


if __name__ == "__main__":
    main()
