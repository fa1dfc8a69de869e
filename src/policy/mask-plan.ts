/** What masking applies to one identity on one connection: column matchers, content detectors, one strategy. */
import { globMatch } from './glob.js';

export const DETECTOR_NAMES = [
  'email',
  'credit_card',
  'us_ssn',
  'phone',
  'iban',
  'ipv4',
  'ipv6',
  'jwt',
  'aws_access_key',
  'private_key',
  'secret_token',
] as const;
export type DetectorName = (typeof DETECTOR_NAMES)[number];

export const MASK_STRATEGIES = ['redact', 'partial', 'hash', 'null'] as const;
export type MaskStrategy = (typeof MASK_STRATEGIES)[number];

/** Strictest first: when several mask rules apply, the strictest strategy wins. */
const STRICTNESS: readonly MaskStrategy[] = ['null', 'redact', 'hash', 'partial'];

export function stricterStrategy(a: MaskStrategy, b: MaskStrategy): MaskStrategy {
  return STRICTNESS.indexOf(a) <= STRICTNESS.indexOf(b) ? a : b;
}

export interface MaskPlan {
  /** Names of the mask rules that apply. */
  rules: string[];
  /** Column patterns: `email`, `customers.ssn`, `public.customers.ssn`, globs such as `*.card`. */
  columns: string[];
  detectors: DetectorName[];
  strategy: MaskStrategy;
}

/** Where a result column comes from; `table` may be `schema.table`. Unknown parts are matched conservatively. */
export interface ColumnSource {
  schema?: string;
  table?: string;
  column: string;
}

/**
 * Does a column fall under one of the plan's column patterns? Matching ignores case. A table-qualified pattern
 * matches a column whose table is unknown (the safe answer when masking).
 */
export function columnMatches(plan: Pick<MaskPlan, 'columns'>, source: ColumnSource): boolean {
  let schema = source.schema;
  let table = source.table;
  if (table !== undefined && table.includes('.')) {
    const parts = table.split('.');
    table = parts[parts.length - 1];
    schema ??= parts[parts.length - 2];
  }
  return plan.columns.some((pattern) => {
    const parts = pattern.split('.');
    const column = parts[parts.length - 1];
    if (!globMatch(column, source.column, true)) return false;
    const tablePart = parts.length >= 2 ? parts[parts.length - 2] : undefined;
    const schemaPart = parts.length >= 3 ? parts[parts.length - 3] : undefined;
    if (tablePart !== undefined && table !== undefined && !globMatch(tablePart, table, true)) return false;
    if (schemaPart !== undefined && schema !== undefined && !globMatch(schemaPart, schema, true)) return false;
    return true;
  });
}
