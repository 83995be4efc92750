/**
 * Text tables of the CLI: every table `relay-core` prints (status, devnet, sim status, client list,
 * replay) is drawn here, so they share one rule for widths and padding.
 *
 * A column is as wide as its `width`, or, without one, as its widest cell (header included). Cells
 * are padded on the right (`align: 'right'`: on the left); a cell wider than its column is never cut.
 * The last column of a row is not padded on the right, so no line ends in spaces. Every cell is
 * escaped for the terminal first (src/lib/terminal.ts): cells hold names, reasons and errors from
 * stored data, and none of them may move the cursor or reorder the line.
 */
import { escapeForTerminal } from './terminal.ts';

export interface Column {
  /** Fixed width; omitted: the widest cell of the column. */
  width?: number;
  align?: 'left' | 'right';
}

export interface TableOptions {
  /** Between columns (default two spaces). */
  gap?: string;
  /** Before each line (default none). */
  indent?: string;
}

/** The lines of a table: `rows` (the header, if any, is just the first row). */
export function table(columns: readonly Column[], rows: readonly (readonly string[])[], opts: TableOptions = {}): string[] {
  const gap = opts.gap ?? '  ';
  const indent = opts.indent ?? '';
  const safe = rows.map((r) => r.map(escapeForTerminal));
  const widths = columns.map((c, i) => c.width ?? Math.max(0, ...safe.map((r) => (r[i] ?? '').length)));
  return safe.map(
    (r) =>
      indent +
      r
        .map((cell, i) => {
          const last = i === r.length - 1;
          if (columns[i]?.align === 'right') return cell.padStart(widths[i] ?? 0);
          return last ? cell : cell.padEnd(widths[i] ?? 0);
        })
        .join(gap),
  );
}
