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
 * Handle a key on a row (`event.currentTarget`, a child of the list): move focus to the row
 * `nextIndex` names, or call `act` on Enter. Keys typed in a control inside the row (its
 * checkbox, its buttons) are left to that control.
 */
export function onRowKey(event: React.KeyboardEvent<HTMLElement>, act: () => void): void {
  if (event.target !== event.currentTarget) {
    return;
  }
  if (event.key === 'Enter') {
    event.preventDefault();
    act();
    return;
  }
  const row = event.currentTarget;
  const rows = Array.from(row.parentElement?.children ?? []) as HTMLElement[];
  const next = nextIndex(event.key, rows.indexOf(row), rows.length);
  if (next !== null) {
    event.preventDefault();
    rows[next]?.focus();
  }
}
