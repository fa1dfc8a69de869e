import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { runProcess } from './stack.js';

/**
 * Real PostgreSQL drivers nobody here wrote, run as their users run them: pgjdbc (Debian's libpostgresql-jdbc-java,
 * Java 17, default settings: binary results from the 5th execution of a PreparedStatement) and psycopg 3 (Debian's
 * python3-psycopg, `binary=True`). Each runs one query, parameter 1 bound to 1, ten times on one connection, then
 * shows the connection is still usable.
 */
export const JDBC_JAR = '/usr/share/java/postgresql.jar';
/** Debian's python, where python3-psycopg is installed (a pyenv `python3` on PATH may not have it). */
export const SYSTEM_PYTHON = '/usr/bin/python3';

const JAVA_PROGRAM = `
import java.sql.*;
public class BinaryRows {
  public static void main(String[] args) throws Exception {
    String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/" + args[1] + "?user=laptop-user"
      + (args.length > 3 ? "&password=" + java.net.URLEncoder.encode(args[3], "UTF-8") : "");
    try (Connection c = DriverManager.getConnection(url)) {
      try (PreparedStatement ps = c.prepareStatement(args[2])) {
        for (int run = 0; run < 10; run++) {
          ps.setInt(1, 1);
          try (ResultSet rs = ps.executeQuery()) {
            int n = rs.getMetaData().getColumnCount();
            while (rs.next()) {
              StringBuilder line = new StringBuilder();
              for (int i = 1; i <= n; i++) line.append(i > 1 ? "|" : "").append(rs.getString(i));
              System.out.println(line);
            }
          } catch (SQLException e) {
            System.out.println("ERROR " + e.getSQLState() + " " + e.getMessage());
          }
        }
      }
      try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("select count(*) from customers")) {
        rs.next();
        System.out.println("still open " + rs.getInt(1));
      }
    }
  }
}
`;

const PSYCOPG_PROGRAM = `
import json, sys, psycopg
port, dbname, sql = sys.argv[1], sys.argv[2], sys.argv[3]
with psycopg.connect(host="127.0.0.1", port=port, user="laptop-user", dbname=dbname) as conn:
    for run in range(10):
        try:
            with conn.cursor(binary=True) as cur:
                cur.execute(sql, (1,), prepare=None)
                for row in cur.fetchall():
                    print(json.dumps([v if v is None or isinstance(v, (str, dict, list)) else str(v) for v in row]))
        except psycopg.Error as e:
            print("ERROR", e.sqlstate, str(e).strip())
    print("still open", conn.execute("select count(*) from customers").fetchone()[0])
`;

export interface DriverRun {
  /** Output lines: one per row (JDBC: `a|b|c`; psycopg: a JSON array), `ERROR <sqlstate> …`, then `still open N`. */
  lines: string[];
  /** Everything the program printed, for checks that no raw value reached the client. */
  output: string;
}

/** A JDBC PreparedStatement (`?` is parameter 1) run ten times with the driver's default settings (`password`: a tunnel's). */
export async function runJdbcTenTimes(port: number, database: string, sql: string, password?: string): Promise<DriverRun> {
  const file = join(mkdtempSync(join(tmpdir(), 'hoop-jdbc-')), 'BinaryRows.java');
  writeFileSync(file, JAVA_PROGRAM);
  const r = await runProcess('java', ['-cp', JDBC_JAR, file, String(port), database, sql, ...(password ? [password] : [])], process.env, undefined, 60_000);
  expect(r.stderr).toBe('');
  return { lines: r.stdout.trim().split('\n'), output: r.stdout + r.stderr };
}

/** A query (`%s` is parameter 1) run ten times through psycopg 3 with binary results; psycopg prepares it after 5. */
export async function runPsycopgTenTimes(port: number, database: string, sql: string, password?: string): Promise<DriverRun> {
  const env = password ? { ...process.env, PGPASSWORD: password } : process.env;
  const r = await runProcess(SYSTEM_PYTHON, ['-c', PSYCOPG_PROGRAM, String(port), database, sql], env, undefined, 60_000);
  expect(r.stderr).toBe('');
  return { lines: r.stdout.trim().split('\n'), output: r.stdout + r.stderr };
}
