import { parsePythonLiteral } from '../literals';

describe('parsePythonLiteral', () => {
  it.each([
    ['3', 3],
    ['-0.5', -0.5],
    ['1_000', 1000],
    ['1e-3', 0.001],
    ["'text'", 'text'],
    ['"it\'s"', "it's"],
    ['True', true],
    ['None', null],
    ['[1, 2, 3]', [1, 2, 3]],
    ['(1, "a")', [1, 'a']],
    ["{'depth': 3, 'lr': 0.1}", { depth: 3, lr: 0.1 }]
  ])('reads %s', (text, value) => {
    expect(parsePythonLiteral(text)).toEqual({ ok: true, value });
  });

  it.each(['n_estimators', 'open(1)', '[1, 2', "'unterminated", ''])(
    'refuses %j and says what to type',
    text => {
      const result = parsePythonLiteral(text);
      expect(result.ok).toBe(false);
      expect(!result.ok && result.message).toMatch(/write a Python literal/);
    }
  );
});
