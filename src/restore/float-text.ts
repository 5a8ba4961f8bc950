/**
 * float8 in the text PostgreSQL prints for it (extra_float_digits ≥ 1), rendered by DuckDB.
 *
 * Both print short digits that read back to the same double, but lay them out differently:
 * DuckDB writes "1.0", "1000000000000000.0", "nan", "inf"; PostgreSQL writes "1", "1e+15",
 * "NaN", "Infinity", with fixed notation only for decimal exponents from -4 up to 14. Rendering
 * PostgreSQL's layout lets restore prove a float8 column by the hash of the COPY text it sent,
 * instead of reading the rows back (src/restore/verify-rows.ts). Any text that reads back to the
 * same double loads the same value; one that differs from PostgreSQL's only costs that read-back.
 * That happens where the two choose different shortest digits (about 1 value in 20,000 of random
 * magnitudes: DuckDB may print a 16-digit string on the edge of the rounding interval where
 * PostgreSQL prints 17), and for every float4 (real) column: DuckDB prints FLOAT in fixed
 * notation with all its binary digits ("435199.125" where PostgreSQL prints "435199.12").
 */

/** Macros created on the reader's DuckDB connection before rendering. */
export const FLOAT_TEXT_MACROS: readonly string[] = [
  // The shortest digits of DuckDB's text for a finite, unsigned float, without trailing zeros
  // ('' for zero): "1.5e-07" → 15, "1234.5" → 12345, "0.00012" → 12.
  `CREATE MACRO backstop_float_digits(a) AS
     CASE WHEN contains(a, 'e') THEN rtrim(replace(split_part(a, 'e', 1), '.', ''), '0')
          WHEN split_part(a, '.', 1) <> '0' THEN rtrim(split_part(a, '.', 1) || split_part(a, '.', 2), '0')
          ELSE trim(split_part(a, '.', 2), '0') END`,
  // The decimal exponent of the first digit: "1.5e-07" → -7, "1234.5" → 3, "0.00012" → -4.
  `CREATE MACRO backstop_float_exponent(a) AS
     CASE WHEN contains(a, 'e') THEN CAST(split_part(a, 'e', 2) AS INTEGER)
          WHEN split_part(a, '.', 1) <> '0' THEN length(split_part(a, '.', 1)) - 1
          ELSE length(ltrim(split_part(a, '.', 2), '0')) - length(split_part(a, '.', 2)) - 1 END`,
  // PostgreSQL's layout of those digits: fixed for exponents in [-4, fixed_below), else d.ddde±XX
  // (float8out: fixed_below = 15).
  `CREATE MACRO backstop_float_layout(d, e, fixed_below) AS
     CASE WHEN d = '' THEN '0'
          WHEN e >= -4 AND e < fixed_below THEN
            CASE WHEN e < 0 THEN '0.' || repeat('0', -e - 1) || d
                 WHEN length(d) <= e + 1 THEN d || repeat('0', e + 1 - length(d))
                 ELSE substr(d, 1, e + 1) || '.' || substr(d, e + 2) END
          ELSE substr(d, 1, 1) || CASE WHEN length(d) > 1 THEN '.' || substr(d, 2) ELSE '' END
               || CASE WHEN e < 0 THEN 'e-' ELSE 'e+' END
               || CASE WHEN abs(e) < 10 THEN '0' ELSE '' END || CAST(abs(e) AS VARCHAR) END`,
  `CREATE MACRO backstop_pg_float_text(x, fixed_below) AS
     CASE WHEN isnan(x) THEN 'NaN'
          WHEN isinf(x) THEN CASE WHEN x > 0 THEN 'Infinity' ELSE '-Infinity' END
          ELSE CASE WHEN signbit(x) THEN '-' ELSE '' END
               || backstop_float_layout(backstop_float_digits(ltrim(CAST(x AS VARCHAR), '-')),
                                        backstop_float_exponent(ltrim(CAST(x AS VARCHAR), '-')), fixed_below) END`,
];

/** The DuckDB expression printing a DOUBLE column as PostgreSQL prints float8. */
export function pgFloat8Text(ref: string): string {
  return `backstop_pg_float_text(${ref}, 15)`;
}
