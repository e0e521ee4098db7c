/**
 * Parameter values typed in the sidebar are Python literals (as in the parameters cell).
 * The REST API takes JSON values, so the literals JSON can hold are converted here and
 * anything else is refused before submit with a message saying what to type.
 */

export type LiteralResult = { ok: true; value: unknown } | { ok: false; message: string };

const NUMBER = /^[+-]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][+-]?\d+)?$/;

/** Parse one Python literal: numbers, strings, True/False/None, lists, tuples and dicts of them. */
export function parsePythonLiteral(text: string): LiteralResult {
  const parser = new Parser(text);
  try {
    const value = parser.value();
    parser.skipSpace();
    if (!parser.done()) {
      throw new Error(`unexpected "${parser.rest().slice(0, 10)}"`);
    }
    return { ok: true, value };
  } catch (e) {
    return {
      ok: false,
      message: `${(e as Error).message}; write a Python literal such as 3, 0.5, 'text', True or [1, 2]`
    };
  }
}

class Parser {
  private pos = 0;
  constructor(private readonly text: string) {}

  done(): boolean {
    return this.pos >= this.text.length;
  }

  rest(): string {
    return this.text.slice(this.pos);
  }

  skipSpace(): void {
    while (!this.done() && /\s/.test(this.text[this.pos])) {
      this.pos++;
    }
  }

  value(): unknown {
    this.skipSpace();
    if (this.done()) {
      throw new Error('empty value');
    }
    const c = this.text[this.pos];
    if (c === '"' || c === "'") {
      return this.string();
    }
    if (c === '[' || c === '(') {
      return this.sequence(c === '[' ? ']' : ')');
    }
    if (c === '{') {
      return this.dict();
    }
    const word = /^[A-Za-z_][A-Za-z0-9_]*/.exec(this.rest());
    if (word) {
      this.pos += word[0].length;
      switch (word[0]) {
        case 'True':
          return true;
        case 'False':
          return false;
        case 'None':
          return null;
      }
      throw new Error(`"${word[0]}" is a name, not a literal (quote it to pass text)`);
    }
    const num = /^[+-]?[\d._]+([eE][+-]?\d+)?/.exec(this.rest());
    if (num && NUMBER.test(num[0])) {
      this.pos += num[0].length;
      return Number(num[0].replace(/_/g, ''));
    }
    throw new Error(`unexpected "${this.rest().slice(0, 10)}"`);
  }

  private string(): string {
    const quote = this.text[this.pos];
    this.pos++;
    let out = '';
    while (!this.done()) {
      const c = this.text[this.pos++];
      if (c === quote) {
        return out;
      }
      if (c === '\\') {
        const n = this.text[this.pos++];
        const escapes: Record<string, string> = { n: '\n', t: '\t', r: '\r', '\\': '\\' };
        out += escapes[n] ?? n;
      } else {
        out += c;
      }
    }
    throw new Error('unterminated string');
  }

  private sequence(close: string): unknown[] {
    this.pos++;
    const items: unknown[] = [];
    for (;;) {
      this.skipSpace();
      if (this.text[this.pos] === close) {
        this.pos++;
        return items;
      }
      items.push(this.value());
      this.skipSpace();
      if (this.text[this.pos] === ',') {
        this.pos++;
      } else if (this.text[this.pos] !== close) {
        throw new Error(`expected "," or "${close}"`);
      }
    }
  }

  private dict(): Record<string, unknown> {
    this.pos++;
    const out: Record<string, unknown> = {};
    for (;;) {
      this.skipSpace();
      if (this.text[this.pos] === '}') {
        this.pos++;
        return out;
      }
      const key = this.value();
      if (typeof key !== 'string') {
        throw new Error('dict keys must be strings here');
      }
      this.skipSpace();
      if (this.text[this.pos] !== ':') {
        throw new Error('expected ":"');
      }
      this.pos++;
      out[key] = this.value();
      this.skipSpace();
      if (this.text[this.pos] === ',') {
        this.pos++;
      } else if (this.text[this.pos] !== '}') {
        throw new Error('expected "," or "}"');
      }
    }
  }
}
