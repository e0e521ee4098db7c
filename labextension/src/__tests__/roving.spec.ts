import { nextIndex, tabStop } from '../roving';

describe('roving tabindex', () => {
  it('moves with the arrows and stops at the ends', () => {
    expect(nextIndex('ArrowDown', 0, 3)).toBe(1);
    expect(nextIndex('ArrowDown', 2, 3)).toBe(2);
    expect(nextIndex('ArrowUp', 0, 3)).toBe(0);
    expect(nextIndex('ArrowUp', 2, 3)).toBe(1);
  });

  it('jumps with Home and End, ignores other keys and empty lists', () => {
    expect(nextIndex('Home', 2, 3)).toBe(0);
    expect(nextIndex('End', 0, 3)).toBe(2);
    expect(nextIndex('a', 1, 3)).toBeNull();
    expect(nextIndex('ArrowDown', 0, 0)).toBeNull();
  });

  it('keeps the Tab stop on the remembered row while it exists', () => {
    expect(tabStop(2, 3)).toBe(2);
    expect(tabStop(5, 3)).toBe(0);
    expect(tabStop(-1, 3)).toBe(0);
  });
});
