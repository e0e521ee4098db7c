/**
 * A roving tabindex for the sidebar's lists (steps, run history): the list is one Tab stop,
 * ↑/↓ move between its rows, Home/End jump to the first/last, Enter acts on the row
 * (WAI-ARIA Authoring Practices, "Keyboard navigation inside components").
 */
import type * as React from 'react';

/** The row a key moves to from `index` among `count` rows; null for any other key. */
export function nextIndex(key: string, index: number, count: number): number | null {
  if (count <= 0) {
    return null;
  }
  switch (key) {
    case 'ArrowDown':
      return Math.min(index + 1, count - 1);
    case 'ArrowUp':
      return Math.max(index - 1, 0);
    case 'Home':
      return 0;
    case 'End':
      return count - 1;
    default:
      return null;
  }
}

/** The row that holds the list's Tab stop: the remembered one while it exists, else the first. */
export function tabStop(remembered: number, count: number): number {
  return remembered >= 0 && remembered < count ? remembered : 0;
}

/**
 * The key of the row that holds the Tab stop among rows that may be hidden: the remembered
 * one while it is listed and visible, else the first visible row.
 */
export function tabStopKey(
  remembered: string | null,
  rows: readonly { key: string; hidden?: boolean }[]
): string | null {
  const visible = rows.filter(r => !r.hidden);
  return visible.find(r => r.key === remembered)?.key ?? visible[0]?.key ?? null;
}

/** What a row does besides moving focus: Enter's action, and ←/→ where the row has them. */
export interface IRowKeys {
  enter: () => void;
  /** ← (a group header: collapse; a step in a group: go to its header). */
  left?: () => void;
  /** → (a group header: expand). */
  right?: () => void;
}

/**
 * Handle a key on a row (`event.currentTarget`, a child of the list): move focus to the row
 * `nextIndex` names among the visible rows (a collapsed group's rows are hidden), or act on
 * Enter, ← and →. Keys typed in a control inside the row (its checkbox, its buttons) are
 * left to that control.
 */
export function onRowKey(
  event: React.KeyboardEvent<HTMLElement>,
  keys: (() => void) | IRowKeys
): void {
  if (event.target !== event.currentTarget) {
    return;
  }
  const { enter, left, right }: IRowKeys = typeof keys === 'function' ? { enter: keys } : keys;
  const action =
    event.key === 'Enter'
      ? enter
      : event.key === 'ArrowLeft'
        ? left
        : event.key === 'ArrowRight'
          ? right
          : undefined;
  if (action) {
    event.preventDefault();
    action();
    return;
  }
  const row = event.currentTarget;
  const rows = (Array.from(row.parentElement?.children ?? []) as HTMLElement[]).filter(
    r => !r.hidden
  );
  const next = nextIndex(event.key, rows.indexOf(row), rows.length);
  if (next !== null) {
    event.preventDefault();
    rows[next]?.focus();
  }
}
