/**
 * This session's usage figures as the server's `phiLsp/usageStats` returns them
 * (phi_lsp/lsp/features/usage.py), checked, and the tooltip line that shows them.
 *
 * No `vscode` import here: unit tests run this under plain node.
 */

export interface UsageFigures {
  /** The `phiLsp.usage` setting: false means nothing is recorded. */
  enabled: boolean;
  shown: number;
  accepted: number;
  /** accepted / shown; null before anything was shown. */
  acceptanceRate: number | null;
  /** The share of accepted text still there at save or close; null before any was measured. */
  retainedShare: number | null;
  p50Ms: number | null;
  p95Ms: number | null;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** The figures from a `phiLsp/usageStats` answer; undefined for anything else. */
export function parseUsage(value: unknown): UsageFigures | undefined {
  if (typeof value !== 'object' || value === null) {
    return undefined;
  }
  const v = value as Record<string, unknown>;
  if (typeof v.enabled !== 'boolean' || num(v.shown) === null || num(v.accepted) === null) {
    return undefined;
  }
  return {
    enabled: v.enabled,
    shown: num(v.shown) ?? 0,
    accepted: num(v.accepted) ?? 0,
    acceptanceRate: num(v.acceptanceRate),
    retainedShare: num(v.retainedShare),
    p50Ms: num(v.p50Ms),
    p95Ms: num(v.p95Ms),
  };
}

const pct = (x: number | null): string => (x === null ? '-' : `${Math.round(100 * x)}%`);
const ms = (x: number | null): string => (x === null ? '-' : `${Math.round(x)} ms`);

/** One tooltip line, e.g. "This session: 4 shown, 1 accepted (25%), 50% kept; p50 120 ms, p95 310 ms." */
export function usageLine(u: UsageFigures): string {
  if (!u.enabled) {
    return 'This session: usage recording off (phiLsp.usage).';
  }
  if (u.shown === 0) {
    return 'This session: no suggestion shown yet.';
  }
  return (
    `This session: ${u.shown} shown, ${u.accepted} accepted (${pct(u.acceptanceRate)}), ` +
    `${pct(u.retainedShare)} kept; p50 ${ms(u.p50Ms)}, p95 ${ms(u.p95Ms)}.`
  );
}
